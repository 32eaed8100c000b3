"""The teacher's grader on a small class: the same CSVs from --jobs 2 as from shards merged.

One test, three real submissions (starting sandboxes is the slow part) plus a file that is not a
notebook: solved, unsolved, and an edited check cell (the grader checks with the master's, so
printing the success line earns nothing). Graded once with --jobs 2, and again as two shards
merged: the long, wide and gradebook CSVs must be byte-identical, and rows of earlier
submissions kept.
"""

import copy
from pathlib import Path

import nbformat

from sdedu.grading import grader, reports

REPO = Path(__file__).resolve().parents[1]
LIMITS = ["--wall-timeout=120", "--call-timeout=30"]


def _class(folder: Path) -> None:
    solved = nbformat.read(REPO / "solutions" / "01_forward_diffusion.ipynb", as_version=4)
    unsolved = nbformat.read(REPO / "exercises" / "01_forward_diffusion.ipynb", as_version=4)
    edited = copy.deepcopy(unsolved)
    next(
        c for c in edited.cells if c.get("id") == "check-forward-diffusion"
    ).source = 'print("\u2714 forward_diffusion: passed")'
    for name, nb in {"alice": solved, "bob": unsolved, "carol": edited}.items():
        (folder / name).mkdir(parents=True)
        nbformat.write(nb, folder / name / "01_forward_diffusion.ipynb")
    (folder / "notes.ipynb").write_text("this is not a notebook")


def _outputs(out: Path) -> dict[str, bytes]:
    names = [out.name, out.stem + "_wide.csv", out.stem + "_gradebook.csv"]
    return {name: (out.parent / name).read_bytes() for name in names}


def test_jobs_and_shards_give_the_same_grades(tmp_path):
    folder = tmp_path / "submissions"
    _class(folder)
    together = tmp_path / "together" / "grades.csv"
    together.parent.mkdir()
    earlier = {"submission": "earlier.ipynb", "item": "forward_diffusion", "points": "1", "max": "1"}
    reports.atomic_write(together, "submission,item,points,max\nearlier.ipynb,forward_diffusion,1,1\n")

    assert grader.main([str(folder), "--out", str(together), "--jobs", "2", *LIMITS]) == 0
    shard_outs = [tmp_path / f"shard{i}" / "grades.csv" for i in (1, 2)]
    for i, shard_out in enumerate(shard_outs, start=1):
        assert grader.main([str(folder), "--out", str(shard_out), "--shard", f"{i}/2", *LIMITS]) == 0
    merged = tmp_path / "merged" / "grades.csv"
    assert grader.main(["merge", *map(str, shard_outs), "--out", str(merged)]) == 0

    rows = {(Path(r["submission"]).parent.name, r["item"]): r["points"] for r in reports.read_long(together)}
    assert rows[("alice", "forward_diffusion")] == "1"
    assert rows[("bob", "forward_diffusion")] == "0"
    assert rows[("carol", "forward_diffusion")] == "0"  # printing the success line earns nothing
    assert rows[("submissions", "(not graded)")] == "0"
    assert earlier in reports.read_long(together)  # kept from before
    merged_out, together_out = _outputs(merged), _outputs(together)
    assert merged_out["grades_wide.csv"] == together_out["grades_wide.csv"]
    assert merged_out["grades_gradebook.csv"] == together_out["grades_gradebook.csv"]
    assert merged_out["grades.csv"] + b"earlier.ipynb,forward_diffusion,1,1\r\n" == together_out["grades.csv"]
    wide = together_out["grades_wide.csv"].decode()
    assert "not graded" in wide and ",ok," in wide
    feedback = together.with_name("grades_feedback")
    carol = (feedback / "submissions__carol__01_forward_diffusion.md").read_text()
    assert "incomplete" in carol and "was edited" in carol
    assert "passed" in (feedback / "submissions__alice__01_forward_diffusion.html").read_text()
    assert "not a readable notebook" in next(feedback.glob("*submissions__notes.md")).read_text()
