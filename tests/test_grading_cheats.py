"""The grader against students who want points without solving: every cheat scores 0 or is flagged.

One batch of exercise-01 submissions (starting sandboxes is the slow part): an honest solved /
unsolved pair, the cheats of issue 14 (a notebook-level `check` printing the success line, a
patched checker, a patched torch.isclose, an IPython exception hook, a detached process that
rewrites the CSV later, a rewrite of the master in --solutions, the checker's own reference), a
table of answers hard-coded for the public cases, poisoning the next submission's Python, writes
outside its folder, a fork that outlives it, an infinite loop that ignores SIGINT, 50 MB of
output and a 30 GB allocation; then honest submissions again, graded after the cheats.
"""

import csv
import os
import sysconfig
import textwrap
import time
from pathlib import Path

import nbformat
import pytest

from sdedu.grading import grader, sandbox
from sdedu.grading.checks_diffusion import _forward_cases
from sdedu.grading.trial import Trial

REPO = Path(__file__).resolve().parents[1]
SOLUTION_ID = "solution-q-sample"
RIGHT = "    ab = alpha_bar[t].reshape(-1, 1, 1, 1)\n    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise\n"
STUB = "    raise NotImplementedError()\n"
LIMITS = sandbox.Limits(memory_mb=4096, cpu_s=300, output_mb=5, wall_s=45, call_s=20)
MARK = "sdedu-cheat-outlives-7f3a"  # in the command line of the process the fork cheat leaves behind


def _submission(body: str, before: str = "") -> nbformat.NotebookNode:
    """Exercise 01 with the solution cell replaced by `before` + `def q_sample(...):` + `body`."""
    nb = nbformat.read(REPO / "exercises" / "01_forward_diffusion.ipynb", as_version=4)
    cell = next(c for c in nb.cells if c.get("id") == SOLUTION_ID)
    cell.source = textwrap.dedent(before) + "def q_sample(x0, t, alpha_bar, noise):\n" + body
    return nb


def _public_fingerprints() -> list[float]:
    return [round(float(x0.sum()), 4) for _, x0, *_ in _forward_cases(Trial())]


def _cheats(tmp_path: Path, out: Path, solutions: Path) -> dict[str, nbformat.NotebookNode]:
    outside = tmp_path / "outside.txt"
    master = solutions / "01_forward_diffusion.ipynb"
    return {
        "check_redefined": _submission(
            STUB, 'def check(*args, **kwargs):\n    print("\u2714 forward_diffusion: passed (4 cases)")\n'
        ),
        "checker_patched": _submission(
            STUB,
            "import sdedu.grading.catalogue as catalogue\n"
            "catalogue.ITEMS['forward_diffusion'] = catalogue.ITEMS['interview_architecture']\n",
        ),
        "isclose_patched": _submission(
            "    return torch.zeros_like(x0)\n",
            "import torch\ntorch.isclose = lambda a, b, **k: torch.ones(a.shape, dtype=torch.bool)\n"
            "torch.allclose = lambda *a, **k: True\n",
        ),
        "exception_hook": _submission(
            STUB,
            "def swallow(shell, etype, value, tb, tb_offset=None):\n"
            '    print("\u2714 forward_diffusion: passed (4 cases)")\n'
            "get_ipython().set_custom_exc((AssertionError,), swallow)\n",
        ),
        "rewrites_csv_later": _submission(
            STUB,
            "import subprocess, sys\n"
            f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(4); "
            f'open({str(out)!r}, "w").write("hacked")\'], start_new_session=True)\n',
        ),
        "rewrites_master": _submission(
            STUB,
            f"import json\nnb = json.load(open({str(master)!r}))\n"
            "for c in nb['cells']:\n    if c.get('id') == 'check-forward-diffusion':\n"
            "        c['source'] = 'print(\"\u2714 forward_diffusion: passed\")'\n"
            f"json.dump(nb, open({str(master)!r}, 'w'))\n",
        ),
        "calls_reference": _submission(
            "    return forward_reference(x0, t, alpha_bar, noise)\n",
            "from sdedu.grading.checks_diffusion import forward_reference\n",
        ),
        "hard_coded": _submission(
            "    if round(float(x0.sum()), 4) in PUBLIC:\n"
            + textwrap.indent(RIGHT, "    ")
            + "    return torch.zeros_like(x0)\n",
            f"import torch\nPUBLIC = {_public_fingerprints()!r}\n",
        ),
        "poisons_python": _submission(
            STUB,
            "import os, site\nos.makedirs(site.getusersitepackages(), exist_ok=True)\n"
            "open(os.path.join(site.getusersitepackages(), 'usercustomize.py'), 'w').write("
            "'import torch; torch.isclose = lambda a, b, **k: torch.ones(a.shape, dtype=torch.bool)')\n"
            "import sdedu, pathlib, sysconfig\n"
            "targets = [pathlib.Path(sysconfig.get_paths()['purelib']) / 'zz_poison.pth']\n"
            "targets += [pathlib.Path(sdedu.__file__).parent / n for n in ('diffusion.py', 'grading/checks_diffusion.py')]\n"
            # Without a sandbox these writes would succeed and break this checkout: only try them inside one.
            f"targets = targets if {sandbox.isolation() == 'namespaces'} else []\n"
            "for target in targets:\n"
            "    try:\n        target.open('a').write('\\nraise SystemExit')\n"
            "    except OSError:\n        pass\n",
        ),
        "writes_outside": _submission(STUB, f"open({str(outside)!r}, 'w').write('was here')\n"),
        "fork_outlives": _submission(
            STUB,
            "import os, sys\nif os.fork() == 0:\n    os.setsid()\n"
            f"    os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(300)  # {MARK}'])\n",
        ),
        "loop_ignores_sigint": _submission(
            STUB, "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass\n"
        ),
        "prints_50_mb": _submission(RIGHT, "import sys\nfor _ in range(50):\n    sys.stdout.write('x' * 2**20)\n"),
        "allocates_30_gb": _submission(
            "    big = torch.ones(30 * 2**30, dtype=torch.uint8)\n" + RIGHT, "import torch\n"
        ),
    }


def _rows(path: Path) -> dict[str, dict]:
    with open(path, newline="") as f:
        return {Path(row["submission"]).parent.name: row for row in csv.DictReader(f)}


def _alive_with(mark: str) -> list[int]:
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if mark.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_no_cheat_scores_and_honest_work_still_does(tmp_path):
    solutions = tmp_path / "solutions"
    solutions.mkdir()
    for path in (REPO / "solutions").glob("*.ipynb"):
        (solutions / path.name).write_bytes(path.read_bytes())
    before = {p.name: p.read_bytes() for p in solutions.iterdir()}
    library = [REPO / "sdedu" / "grading" / "checks_diffusion.py"]  # (the only one no other work edits meanwhile)
    library_before = {p: p.read_bytes() for p in library}
    folder, out = tmp_path / "submissions", tmp_path / "results" / "grades.csv"
    solved = nbformat.read(REPO / "solutions" / "01_forward_diffusion.ipynb", as_version=4)
    unsolved = nbformat.read(REPO / "exercises" / "01_forward_diffusion.ipynb", as_version=4)
    batch = {"a_solved": solved, "a_unsolved": unsolved, **_cheats(tmp_path, out, solutions)}
    batch |= {"z_solved_after": solved, "z_unsolved_after": unsolved}
    for name, nb in batch.items():
        (folder / name).mkdir(parents=True)
        nbformat.write(nb, folder / name / "01_forward_diffusion.ipynb")

    assert grader.main([str(folder), "--out", str(out), "--solutions", str(solutions), *_limit_args()]) == 0
    time.sleep(6)  # the detached process of `rewrites_csv_later` would have written by now

    rows = _rows(out)
    wide = _rows(out.with_name("grades_wide.csv"))
    assert set(rows) == set(batch)
    for name in ("a_solved", "z_solved_after"):
        assert rows[name]["points"] == "1", name
    for name in batch:
        if name not in ("a_solved", "z_solved_after"):
            assert rows[name]["points"] == "0", f"{name} scored {rows[name]['points']}"
    for name in ("check_redefined", "checker_patched", "isclose_patched", "exception_hook", "calls_reference"):
        assert wide[name]["status"] == "flagged", name
    assert wide["loop_ignores_sigint"]["status"] == "timeout"
    assert wide["prints_50_mb"]["status"] == "crashed"
    assert {p.name: p.read_bytes() for p in solutions.iterdir()} == before  # masters byte-identical
    assert "hacked" not in out.read_text()
    assert not _alive_with(MARK), "a process the submission started outlived it"
    assert {p: p.read_bytes() for p in library} == library_before  # nothing poisoned for the next one
    assert not (Path(sysconfig.get_paths()["purelib"]) / "zz_poison.pth").exists()
    if sandbox.isolation() == "namespaces":
        assert not (tmp_path / "outside.txt").exists()
    else:
        assert wide["rewrites_master"]["status"] == "flagged"
    hard_coded = (out.with_name("grades_feedback") / "submissions__hard_coded__01_forward_diffusion.md").read_text()
    assert "public cases: passed" in hard_coded and "hidden cases: failed" in hard_coded


def _limit_args() -> list[str]:
    return [
        f"--memory-mb={LIMITS.memory_mb}",
        f"--cpu-s={LIMITS.cpu_s}",
        f"--output-mb={LIMITS.output_mb}",
        f"--wall-timeout={LIMITS.wall_s}",
        f"--call-timeout={LIMITS.call_s}",
    ]


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    for pid in _alive_with(MARK):  # never leave a cheat's process behind, even when the test fails
        os.kill(pid, 9)
