"""The exercise builder: solutions/NN_name.ipynb (the master) -> exercises/NN_name.ipynb.

The solution notebooks are the single source of truth; the exercise notebooks are generated
from them and never edited by hand. The conventions (nbgrader's, extended for answers):

- Code: the lines between `### BEGIN SOLUTION` and `### END SOLUTION` become
      # YOUR CODE HERE
      raise NotImplementedError()
  at the indentation of the markers, so a function keeps its signature and docstring.
- Code: the lines between `### BEGIN ANSWER` and `### END ANSWER` become `# YOUR ANSWER HERE`.
  For answer cells that must still run: put the stub (`answer = ...`) above the region.
- Markdown: text between `<!-- BEGIN SOLUTION -->` and `<!-- END SOLUTION -->` becomes
  "YOUR ANSWER HERE" (a model answer to an interview question, say).
- Cells tagged `solution-only` are left out of the exercise.
- Check cells (code cells that call `check(`) are tagged `raises-exception` in the exercise, so
  that Run All reaches the end of an unsolved notebook.
- Outputs and execution counts are stripped; cell ids are kept, so that the teacher's grader
  can find the master copy of every check cell in a submission.

    python -m sdedu.grading build          # write exercises/
    python -m sdedu.grading check-stale    # exit 1 if exercises/ differs from a fresh build
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import nbformat

REPO_ROOT = Path(__file__).resolve().parents[2]
SOLUTIONS_DIR = REPO_ROOT / "solutions"
EXERCISES_DIR = REPO_ROOT / "exercises"

CODE_MARKERS = {
    "### BEGIN SOLUTION": ("### END SOLUTION", ["# YOUR CODE HERE", "raise NotImplementedError()"]),
    "### BEGIN ANSWER": ("### END ANSWER", ["# YOUR ANSWER HERE"]),
}
MARKDOWN_MARKERS = {"<!-- BEGIN SOLUTION -->": ("<!-- END SOLUTION -->", ["YOUR ANSWER HERE"])}
CHECK_CALL = re.compile(r"(^|[^\w.])check\(|grading\.check\(")
SOLUTION_ONLY_TAG = "solution-only"
RAISES_TAG = "raises-exception"


def strip_regions(source: str, markers: dict, where: str = "a cell") -> tuple[str, list[str]]:
    """Replace every marked region of `source` by its stub.

    Returns (the new source, the list of removed regions' texts). Raises ValueError on a region
    that is not closed, or an end marker without a beginning.
    """
    out, removed = [], []
    lines = source.split("\n")
    i = 0
    ends = {end: begin for begin, (end, _) in markers.items()}
    while i < len(lines):
        stripped = lines[i].strip()
        if stripped in ends:
            raise ValueError(f"{where}: {stripped!r} on line {i + 1} has no matching {ends[stripped]!r} before it")
        if stripped not in markers:
            out.append(lines[i])
            i += 1
            continue
        end, stub = markers[stripped]
        indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
        j = i + 1
        while j < len(lines) and lines[j].strip() != end:
            if lines[j].strip() in markers:
                raise ValueError(f"{where}: {lines[j].strip()!r} on line {j + 1} opens a region inside another")
            j += 1
        if j == len(lines):
            raise ValueError(f"{where}: {stripped!r} on line {i + 1} is never closed by {end!r}")
        removed.append("\n".join(lines[i + 1 : j]))
        out.extend(indent + line for line in stub)
        i = j + 1
    return "\n".join(out), removed


def is_check_cell(cell) -> bool:
    """A code cell that calls sdedu.grading.check."""
    return cell.cell_type == "code" and bool(CHECK_CALL.search(cell.source))


def make_exercise(solution: nbformat.NotebookNode, name: str = "notebook") -> nbformat.NotebookNode:
    """The exercise version of a solution notebook (a new notebook; the input is not changed)."""
    nb = copy.deepcopy(solution)
    cells = []
    for index, cell in enumerate(nb.cells):
        tags = list(cell.get("metadata", {}).get("tags", []))
        if SOLUTION_ONLY_TAG in tags:
            continue
        where = f"{name}, cell {index} (id {cell.get('id', '?')})"
        if cell.cell_type == "code":
            cell.source, _ = strip_regions(cell.source, CODE_MARKERS, where)
            cell.outputs = []
            cell.execution_count = None
            if is_check_cell(cell) and RAISES_TAG not in tags:
                tags.append(RAISES_TAG)
        elif cell.cell_type == "markdown":
            cell.source, _ = strip_regions(cell.source, MARKDOWN_MARKERS, where)
        cell.metadata.pop("execution", None)
        if tags:
            cell.metadata["tags"] = tags
        cells.append(cell)
    nb.cells = cells
    nb.metadata.setdefault("sdedu", {})["exercise"] = name
    return nb


def solution_texts(solution: nbformat.NotebookNode) -> list[str]:
    """Every region a build removes from `solution` (for the leak test)."""
    texts = []
    for cell in solution.cells:
        markers = CODE_MARKERS if cell.cell_type == "code" else MARKDOWN_MARKERS
        texts += strip_regions(cell.source, markers)[1]
        if SOLUTION_ONLY_TAG in cell.get("metadata", {}).get("tags", []):
            texts.append(cell.source)
    return texts


def render(nb: nbformat.NotebookNode) -> str:
    """The exact text a notebook is written as (stable, so that staleness is a string comparison)."""
    return nbformat.writes(nb, version=4).rstrip("\n") + "\n"


def build_all(solutions_dir: Path = SOLUTIONS_DIR) -> dict[str, str]:
    """{file name: exercise text} for every solution notebook, built in memory."""
    built = {}
    for path in sorted(Path(solutions_dir).glob("*.ipynb")):
        solution = nbformat.read(path, as_version=4)
        built[path.name] = render(make_exercise(solution, path.stem))
    return built


def build(solutions_dir: Path = SOLUTIONS_DIR, exercises_dir: Path = EXERCISES_DIR) -> list[Path]:
    """Write exercises_dir/NN_name.ipynb for every solution; remove exercises without a solution."""
    exercises_dir = Path(exercises_dir)
    exercises_dir.mkdir(parents=True, exist_ok=True)
    built = build_all(solutions_dir)
    written = []
    for name, text in built.items():
        path = exercises_dir / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        written.append(path)
    for path in exercises_dir.glob("*.ipynb"):
        if path.name not in built:
            path.unlink()
    return written


def stale(solutions_dir: Path = SOLUTIONS_DIR, exercises_dir: Path = EXERCISES_DIR) -> list[str]:
    """Names of exercise notebooks that are missing, extra or differ from a fresh build."""
    built = build_all(solutions_dir)
    exercises_dir = Path(exercises_dir)
    present = {path.name for path in exercises_dir.glob("*.ipynb")}
    problems = [f"{name} (missing)" for name in sorted(set(built) - present)]
    problems += [f"{name} (no solution notebook)" for name in sorted(present - set(built))]
    problems += [
        f"{name} (out of date)"
        for name in sorted(set(built) & present)
        if (exercises_dir / name).read_text(encoding="utf-8") != built[name]
    ]
    return problems
