"""Stress: launch every 2-rank script of the course many times under a CPU hog and count failures.

Not a pytest module (pytest collects test_*.py only): a tool to prove that the ranks' exit is not
flaky (issue 13, item 7). Each round launches, one after the other, the same 2-rank scripts that
the course runs, through the same code that launches them there:

- tests/test_distributed.py's worker (DDP training through sdedu.training.loop), via its `launch`;
- notebook 14's three scripts (hello: the collectives; train_ddp: DDP on the 2-D denoiser;
  bench_ddp: a UNet step and all-reduce timings), by executing the notebook's own code cells;
- exercise 07's check (sdedu.grading.checks_distributed.run_data_parallel) on the solution's
  `average_gradients`, read from solutions/07_distributed_training.ipynb.

A launch fails when a rank exits with a non-zero status (SIGABRT is -6), prints
"terminate called", or a result is missing. One busy process ("the hog") competes for the CPU
the whole time. Every rank runs one thread.

    OMP_NUM_THREADS=1 SDEDU_QUICK=1 .venv/bin/python tests/stress_torchrun.py --rounds 11 --log build/stress.log
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "14_distributed_training.ipynb"
SOLUTION = ROOT / "solutions" / "07_distributed_training.ipynb"
ABORT_MARK = "terminate called"


def code_cells(path: Path) -> list[str]:
    cells = json.loads(path.read_text())["cells"]
    return ["".join(cell["source"]) for cell in cells if cell["cell_type"] == "code"]


def cell_with(cells: list[str], marker: str) -> str:
    found = [cell for cell in cells if marker in cell]
    if len(found) != 1:
        raise RuntimeError(f"expected one code cell containing {marker!r}; found {len(found)}")
    return found[0]


class Notebook14:
    """Notebook 14's cells, executed in one namespace; its `torchrun` is wrapped to record every launch."""

    def __init__(self, record):
        cells = code_cells(NOTEBOOK)
        self.namespace: dict = {"__name__": "notebook14"}
        with contextlib.redirect_stdout(open(os.devnull, "w")):
            exec(cell_with(cells, "quick_mode()"), self.namespace)  # imports, threads, pick
            exec(cell_with(cells, "def torchrun("), self.namespace)  # the launcher and its work folder
        self.cells = {
            "nb14-hello": cell_with(cells, 'hello = work / "hello.py"'),
            "nb14-train": cell_with(cells, 'train_script = work / "train_ddp.py"'),
            "nb14-bench": cell_with(cells, 'bench_script = work / "bench_ddp.py"'),
        }
        launch = self.namespace["torchrun"]

        def recorded(script, *args, nproc=2, **kwargs):
            start = time.monotonic()
            try:
                out = launch(script, *args, nproc=nproc, **kwargs)
            except RuntimeError as err:  # a non-zero exit status, with the ranks' output
                record(f"{self.current} (nproc={nproc})", False, time.monotonic() - start, str(err)[-1500:])
                raise
            ok = ABORT_MARK not in out
            record(f"{self.current} (nproc={nproc})", ok, time.monotonic() - start, "" if ok else out[-1500:])
            return out

        self.namespace["torchrun"] = recorded
        self.current = ""

    def run(self, name: str) -> None:
        self.current = name
        with contextlib.redirect_stdout(open(os.devnull, "w")):
            exec(self.cells[name], self.namespace)

    def close(self) -> None:
        import shutil

        shutil.rmtree(self.namespace["work"], ignore_errors=True)


def solution_average_gradients(folder: Path):
    """The solution's `average_gradients`, imported from a file (the grader reads its source)."""
    cells = code_cells(SOLUTION)
    module = folder / "solution07.py"
    module.write_text(
        cell_with(cells, "import torch.distributed as dist") + "\n\n" + cell_with(cells, "def average_gradients")
    )
    spec = importlib.util.spec_from_file_location("solution07", module)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded.average_gradients


@contextlib.contextmanager
def recording_popen(processes: list):
    """Record every subprocess.Popen made inside (the grader ignores its ranks' exit status)."""
    original = subprocess.Popen

    class Recording(original):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            processes.append(self)

    subprocess.Popen = Recording
    try:
        yield
    finally:
        subprocess.Popen = original


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11, help="rounds of 5 two-rank launches (default 11: 55)")
    parser.add_argument("--log", type=Path, default=ROOT / "build" / "stress_torchrun.log")
    parser.add_argument("--no-hog", action="store_true", help="without the busy process")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1; got {args.rounds}")
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", SDEDU_THREADS="1", SDEDU_QUICK="1")
    sys.path.insert(0, str(ROOT / "tests"))
    import test_distributed

    from sdedu.grading.checks_distributed import run_data_parallel

    args.log.parent.mkdir(parents=True, exist_ok=True)
    log = open(args.log, "w", buffering=1)
    results: list[tuple[str, bool]] = []

    def record(kind: str, ok: bool, seconds: float, detail: str = "") -> None:
        results.append((kind, ok))
        log.write(f"{len(results):>3} {'ok  ' if ok else 'FAIL'} {kind:<28} {seconds:6.1f} s\n")
        if detail:
            log.write("    " + detail.replace("\n", "\n    ") + "\n")

    hog = None if args.no_hog else subprocess.Popen([sys.executable, "-c", "while True: pass"])
    log.write(
        f"{time.strftime('%Y-%m-%d %H:%M:%S')} rounds={args.rounds} hog={hog is not None} "
        f"cores={len(os.sched_getaffinity(0))} torch threads per rank=1\n"
    )
    notebook = Notebook14(record)
    start = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="sdedu-stress-") as tmp:
            average_gradients = solution_average_gradients(Path(tmp))
            for round_ in range(args.rounds):
                folder = Path(tmp) / f"round{round_}"
                folder.mkdir()
                t0 = time.monotonic()
                try:
                    proc, ranks = test_distributed.launch(folder)
                    ok = proc.returncode == 0 and sorted(ranks) == [0, 1] and ABORT_MARK not in proc.stderr
                    record("test_distributed worker", ok, time.monotonic() - t0, "" if ok else proc.stderr[-1500:])
                except BaseException as err:  # pytest.fail on a time-out raises an OutcomeException
                    if isinstance(err, KeyboardInterrupt):
                        raise
                    record("test_distributed worker", False, time.monotonic() - t0, traceback.format_exc()[-1500:])
                for name in ("nb14-hello", "nb14-train", "nb14-bench"):
                    try:
                        notebook.run(name)
                    except Exception:  # recorded by the wrapped torchrun (or a failed cell: recorded here)
                        if not results or results[-1][1] or not results[-1][0].startswith(name):
                            record(name, False, 0.0, traceback.format_exc()[-1500:])
                t0, processes = time.monotonic(), []
                try:
                    with recording_popen(processes):
                        run = run_data_parallel(average_gradients, steps=3)
                    codes = [p.returncode for p in processes]
                    ok = codes == [0, 0] and len(run["params"]) == 2
                    record("grader exercise 07", ok, time.monotonic() - t0, "" if ok else f"exit statuses {codes}")
                except Exception:
                    record("grader exercise 07", False, time.monotonic() - t0, traceback.format_exc()[-1500:])
    finally:
        notebook.close()
        if hog is not None:
            hog.kill()
            hog.wait()
    two_rank = [(kind, ok) for kind, ok in results if "nproc=1" not in kind]
    failures = Counter(kind for kind, ok in two_rank if not ok)
    summary = (
        f"{len(two_rank)} two-rank launches ({len(results) - len(two_rank)} single-process besides), "
        f"{sum(failures.values())} failed {dict(failures)}; {time.monotonic() - start:.0f} s"
    )
    log.write(summary + "\n")
    log.close()
    print(summary)
    return 1 if failures or any(not ok for _, ok in results) else 0


if __name__ == "__main__":
    sys.exit(main())
