"""The teacher's grader on real submissions: solved, unsolved, edited, hanging and crashing.

One batch, one test: starting kernels is the slow part. The hanging submission ignores SIGINT
(so the interrupt cannot stop it) and the crashing one calls os._exit: neither may stop the
batch, and both score zero for what did not run.
"""

import copy
import csv
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell

from sdedu.grading import grader

REPO = Path(__file__).resolve().parents[1]


# Generous enough for a busy 2-core machine to start a kernel and import torch.
CELL_TIMEOUT_S = 60


def _insert_before_check(nb, source):
    nb = copy.deepcopy(nb)
    index = next(i for i, c in enumerate(nb.cells) if c.get("id") == "check-forward-diffusion")
    nb.cells.insert(index, new_code_cell(source))
    return nb


def test_grader_batch(tmp_path):
    solved = nbformat.read(REPO / "solutions" / "01_forward_diffusion.ipynb", as_version=4)
    unsolved = nbformat.read(REPO / "exercises" / "01_forward_diffusion.ipynb", as_version=4)
    edited = copy.deepcopy(unsolved)
    check_cell = next(c for c in edited.cells if c.get("id") == "check-forward-diffusion")
    check_cell.source = 'print("\u2714 forward_diffusion: passed")'
    submissions = {
        "alice/01_forward_diffusion.ipynb": solved,
        "bob/01_forward_diffusion.ipynb": unsolved,
        "carol/01_forward_diffusion.ipynb": edited,
        "dave/01_forward_diffusion.ipynb": _insert_before_check(
            solved, "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass"
        ),
        "erin/01_forward_diffusion.ipynb": _insert_before_check(solved, "import os\nos._exit(1)"),
    }
    folder = tmp_path / "submissions"
    for name, nb in submissions.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, folder / name)
    (folder / "notes.ipynb").write_text("this is not a notebook")
    out = tmp_path / "grades.csv"
    grader.write_csv(out, [{"submission": "earlier.ipynb", "item": "forward_diffusion", "points": 1, "max": 1}])

    status = grader.main([str(folder), "--out", str(out), "--cell-timeout", str(CELL_TIMEOUT_S)])

    assert status == 0
    with open(out, newline="") as f:
        rows = {
            (Path(r["submission"]).parent.name or r["submission"], r["item"]): (r["points"], r["max"])
            for r in csv.DictReader(f)
        }
    assert rows[("earlier.ipynb", "forward_diffusion")] == ("1", "1")  # kept from before
    assert rows[("alice", "forward_diffusion")] == ("1", "1")
    assert rows[("bob", "forward_diffusion")] == ("0", "1")
    assert rows[("carol", "forward_diffusion")] == ("0", "1")  # the edited check cell was restored
    assert rows[("dave", "forward_diffusion")] == ("0", "1")
    assert rows[("erin", "forward_diffusion")] == ("0", "1")
    assert rows[("submissions", "(not graded)")] == ("0", "0")
    feedback = {p.name: p.read_text() for p in (tmp_path / "grades_feedback").iterdir()}
    assert len(feedback) == 6

    def text(suffix):
        return next(v for k, v in feedback.items() if k.endswith(suffix))

    assert "Score: 1 / 1" in text("alice__01_forward_diffusion.md")
    assert "incomplete" in text("bob__01_forward_diffusion.md")
    assert "was edited" in text("carol__01_forward_diffusion.md")
    assert f"did not finish within {CELL_TIMEOUT_S} s" in text("dave__01_forward_diffusion.md")
    assert "kernel died" in text("erin__01_forward_diffusion.md")
    assert "not a readable notebook" in text("submissions__notes.md")
