"""The teacher's grader: run submitted notebooks, score every check, write a CSV and feedback.

    sdedu grade SUBMISSION.ipynb... --out grades.csv        (a folder of notebooks works too)
    python -m sdedu.grading grade submissions/ --out grades.csv

For each submission:

1. Find its master in solutions/ (the `sdedu.exercise` entry the builder writes into every
   exercise notebook's metadata, else the file name).
2. Restore the master's check cells (matched by cell id, else by the item they check; a deleted
   check cell is put back after the cell that preceded it), so that an edited check cannot pass.
3. Run the notebook from a clean state in its own kernel (nbclient), in a fresh temporary folder,
   with OMP_NUM_THREADS=1 and a time limit per cell. A cell that times out is interrupted; if the
   kernel no longer answers, or dies (os._exit, a segfault, out of memory), the run stops there.
4. Score each item: its points if its check cell printed "✔ <item>: passed", else 0.
5. Rewrite the CSV (submission, item, points, max) atomically (a temporary file, then a rename)
   and write a feedback file, before moving to the next submission, so a crash of the grader
   loses nothing already graded. Rows of submissions not in this batch are kept.

**Security.** Submissions are programs, and they run with the grader's rights: they can read and
write your files and use the network. Restoring the check cells stops accidental edits, not a
determined cheat (code in an earlier cell can replace the checker). Grade untrusted submissions
inside a container or a throw-away virtual machine.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from sdedu.grading import builder

CHECK_ITEM = re.compile(r"""check\(\s*["']([A-Za-z0-9_\-]+)["']""")
CSV_FIELDS = ["submission", "item", "points", "max"]
DEFAULT_CELL_TIMEOUT_S = 600


@dataclass
class ItemResult:
    item: str
    points: int
    max: int
    status: str  # passed / failed / incomplete / not run
    message: str = ""


@dataclass
class Report:
    submission: str
    exercise: str | None
    items: list[ItemResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ---- finding the master ---------------------------------------------------------------------


def identify(nb, path: Path, solutions_dir: Path) -> str | None:
    """The stem of the solution notebook a submission belongs to, or None."""
    masters = sorted(p.stem for p in Path(solutions_dir).glob("*.ipynb"))
    declared = nb.get("metadata", {}).get("sdedu", {}).get("exercise")
    if declared in masters:
        return declared
    by_name = [m for m in masters if m in path.stem]
    if by_name:
        return max(by_name, key=len)
    number = re.match(r"(\d\d)_", path.stem)
    by_number = [m for m in masters if number and m.startswith(number.group(1) + "_")]
    return by_number[0] if len(by_number) == 1 else None


def check_items(cell) -> list[str]:
    """The item ids a check cell checks."""
    return CHECK_ITEM.findall(cell.source)


def restore_check_cells(submission, master) -> list[str]:
    """Put the master's check cells into `submission` (in place); returns notes on what was changed."""
    notes = []
    by_id = {cell.get("id"): i for i, cell in enumerate(submission.cells)}
    previous_id = None
    for master_cell in master.cells:
        if builder.is_check_cell(master_cell):
            restored = nbformat.from_dict(master_cell)
            restored.outputs, restored.execution_count = [], None
            index = by_id.get(master_cell.get("id"))
            if index is None:
                items = set(check_items(master_cell))
                index = next(
                    (
                        i
                        for i, c in enumerate(submission.cells)
                        if c.cell_type == "code" and items & set(check_items(c))
                    ),
                    None,
                )
            if index is not None:
                if submission.cells[index].source != master_cell.source:
                    notes.append(
                        f"the check cell for {', '.join(check_items(master_cell))} was edited; "
                        "the original was restored"
                    )
                submission.cells[index] = restored
            else:
                after = by_id.get(previous_id)
                position = len(submission.cells) if after is None else after + 1
                submission.cells.insert(position, restored)
                notes.append(
                    f"the check cell for {', '.join(check_items(master_cell))} was missing; the original was put back"
                )
            by_id = {cell.get("id"): i for i, cell in enumerate(submission.cells)}
        previous_id = master_cell.get("id")
    return notes


# ---- running ------------------------------------------------------------------------------


def _error_line(output) -> str:
    return f"{output.get('ename', 'Error')}: {str(output.get('evalue', '')).strip()}"


def run_notebook(nb, cell_timeout: float, kernel_name: str = "python3") -> list[str]:
    """Execute `nb` in place in a fresh kernel; returns notes (timeouts, a dead kernel)."""
    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError

    notes = []
    index = -1
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    env.pop("SDEDU_GRADING_LOG", None)
    timeout_error = {
        "ename": "CellTimeout",
        "evalue": f"the cell did not finish within {cell_timeout:g} s",
        "traceback": [f"CellTimeout: the cell did not finish within {cell_timeout:g} s"],
    }
    with tempfile.TemporaryDirectory(prefix="sdedu-grade-") as workdir:
        client = NotebookClient(
            nb,
            timeout=int(cell_timeout),
            kernel_name=kernel_name,
            allow_errors=True,
            interrupt_on_timeout=True,
            error_on_timeout=timeout_error,
            shutdown_kernel="immediate",
            resources={"metadata": {"path": workdir}},
        )
        try:
            with client.setup_kernel(env=env, cwd=workdir):
                for index, cell in enumerate(nb.cells):
                    if cell.cell_type != "code":
                        continue
                    start = time.monotonic()
                    client.execute_cell(cell, index)
                    if time.monotonic() - start >= cell_timeout:
                        cell.metadata["sdedu_timed_out"] = True
                        notes.append(f"cell {index} did not finish within {cell_timeout:g} s and was interrupted")
                        if not _responsive(client):
                            notes.append(
                                "the kernel stopped answering after the interrupt; the cells after it did not run"
                            )
                            break
        except DeadKernelError:
            notes.append(
                f"the kernel died while running cell {index} (os._exit, a crash or out of memory?); "
                "the cells after it did not run"
            )
        except Exception as err:  # noqa: BLE001 - one broken submission must never stop the batch
            notes.append(f"the grader could not run the notebook: {type(err).__name__}: {err}")
    return notes


def _responsive(client, timeout: float = 15.0) -> bool:
    from nbclient.util import run_sync

    try:
        reply = run_sync(client.kc.execute_interactive)("pass", timeout=timeout, store_history=False)
        return reply["content"]["status"] in ("ok", "error")
    except Exception:  # noqa: BLE001 - a TimeoutError or a dead channel both mean "no"
        return False


def score(nb, master, notes: list[str]) -> list[ItemResult]:
    """One ItemResult per item checked by the master, from the executed check cells' outputs."""
    from sdedu.grading.checker import ITEMS, _load_all

    _load_all()
    check_cells = {cell.get("id"): cell for cell in nb.cells if builder.is_check_cell(cell)}
    results = []
    for master_cell in master.cells:
        if not builder.is_check_cell(master_cell):
            continue
        cell = check_cells.get(master_cell.get("id"))
        for item in check_items(master_cell):
            points = ITEMS[item].points if item in ITEMS else 1
            outputs = cell.get("outputs", []) if cell is not None else []
            text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
            errors = [o for o in outputs if o.get("output_type") == "error"]
            if cell is None or (not outputs and cell.get("execution_count") is None):
                results.append(ItemResult(item, 0, points, "not run", "its check cell did not run"))
            elif cell.metadata.get("sdedu_timed_out"):
                results.append(ItemResult(item, 0, points, "failed", "its check cell did not finish in time"))
            elif errors:
                status = "incomplete" if errors[0].get("ename") == "ExerciseIncomplete" else "failed"
                results.append(ItemResult(item, 0, points, status, _error_line(errors[0])))
            elif f"\u2714 {item}: passed" in text:
                results.append(ItemResult(item, points, points, "passed", text.strip()))
            else:
                results.append(ItemResult(item, 0, points, "failed", "the check printed no success line"))
    return results


def grade_one(path: Path, solutions_dir: Path, cell_timeout: float, kernel_name: str = "python3") -> Report:
    """Grade one submission; never raises for a bad submission."""
    report = Report(str(path), None)
    try:
        nb = nbformat.read(str(path), as_version=4)
    except Exception as err:  # noqa: BLE001
        report.notes.append(f"the file is not a readable notebook: {type(err).__name__}: {err}")
        return report
    report.exercise = identify(nb, path, solutions_dir)
    if report.exercise is None:
        report.notes.append("cannot tell which exercise this is (no sdedu metadata, no exercise name in the file name)")
        return report
    master = nbformat.read(str(Path(solutions_dir) / f"{report.exercise}.ipynb"), as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    report.notes += restore_check_cells(nb, master)
    report.notes += run_notebook(nb, cell_timeout, kernel_name)
    report.items = score(nb, master, report.notes)
    check_ids = {cell.get("id") for cell in master.cells if builder.is_check_cell(cell)}
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and cell.get("id") not in check_ids and not cell.metadata.get("sdedu_timed_out"):
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error" and output.get("ename") != "CellTimeout":
                    report.notes.append(f"cell {index} raised {_error_line(output).splitlines()[0][:200]}")
    return report


# ---- writing ------------------------------------------------------------------------------


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    os.replace(tmp, path)


def write_csv(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    _atomic_write(path, buffer.getvalue())


def read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return [row for row in csv.DictReader(f) if set(CSV_FIELDS) <= set(row)]


def feedback_text(report: Report) -> str:
    got = sum(r.points for r in report.items)
    total = sum(r.max for r in report.items)
    lines = [f"# Feedback: {report.submission}", ""]
    lines.append(f"Exercise: {report.exercise or 'unknown'}. Score: {got} / {total}.")
    for result in report.items:
        lines += ["", f"## {result.item}: {result.status} ({result.points}/{result.max})", "", result.message.strip()]
    if report.notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in report.notes]
    return "\n".join(lines) + "\n"


def feedback_name(submission: Path) -> str:
    """A file name for a submission's feedback, unique per path (alice/01.ipynb -> alice__01.md)."""
    parts = [p for p in submission.with_suffix("").parts if p not in ("/", "..", ".")]
    return re.sub(r"[^A-Za-z0-9_.-]", "_", "__".join(parts[-3:])) + ".md"


def find_submissions(paths: list[Path]) -> list[Path]:
    found = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
        else:
            found.append(path)
    return found


def grade(
    submissions: list[Path],
    out: Path,
    feedback_dir: Path | None = None,
    solutions_dir: Path = builder.SOLUTIONS_DIR,
    cell_timeout: float = DEFAULT_CELL_TIMEOUT_S,
    kernel_name: str = "python3",
    progress=print,
) -> list[Report]:
    """Grade `submissions` into the CSV `out` and one feedback file each; returns the reports."""
    out = Path(out)
    feedback_dir = Path(feedback_dir) if feedback_dir is not None else out.with_name(out.stem + "_feedback")
    rows = read_csv(out)
    reports = []
    for path in find_submissions([Path(p) for p in submissions]):
        report = grade_one(path, Path(solutions_dir), cell_timeout, kernel_name)
        reports.append(report)
        rows = [row for row in rows if row["submission"] != report.submission]
        rows += [
            {"submission": report.submission, "item": r.item, "points": r.points, "max": r.max} for r in report.items
        ]
        if not report.items:
            rows.append({"submission": report.submission, "item": "(not graded)", "points": 0, "max": 0})
        write_csv(out, rows)
        _atomic_write(feedback_dir / feedback_name(path), feedback_text(report))
        got, total = sum(r.points for r in report.items), sum(r.max for r in report.items)
        progress(f"{report.submission}: {got}/{total}" + (f" ({len(report.notes)} notes)" if report.notes else ""))
    return reports


def main(argv: list[str] | None = None) -> int:
    """`sdedu grade SUBMISSION.ipynb... --out grades.csv` (returns the exit status)."""
    parser = argparse.ArgumentParser(
        prog="sdedu grade",
        description="Run submitted exercise notebooks, score every check, write a CSV and feedback files. "
        "Submissions run with your rights: grade untrusted work inside a container.",
    )
    parser.add_argument("submissions", nargs="+", type=Path, help="notebooks, or folders searched for *.ipynb")
    parser.add_argument("--out", type=Path, default=Path("grades.csv"), help="the CSV to write (default grades.csv)")
    parser.add_argument(
        "--feedback",
        type=Path,
        default=None,
        help="folder for one feedback file per submission (default: <out>_feedback next to the CSV)",
    )
    parser.add_argument("--solutions", type=Path, default=builder.SOLUTIONS_DIR, help="folder of the master notebooks")
    parser.add_argument(
        "--cell-timeout",
        type=float,
        default=DEFAULT_CELL_TIMEOUT_S,
        help=f"seconds a cell may run before it is interrupted (default {DEFAULT_CELL_TIMEOUT_S})",
    )
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel name (default python3)")
    args = parser.parse_args(argv)
    if not Path(args.solutions).is_dir():
        parser.error(f"--solutions must be a folder of solution notebooks; got {args.solutions}")
    missing = [str(p) for p in args.submissions if not p.exists()]
    if missing:
        parser.error(f"SUBMISSION must be existing notebooks or folders; not found: {', '.join(missing)}")
    if args.cell_timeout <= 0:
        parser.error(f"--cell-timeout must be a positive number of seconds; got {args.cell_timeout}")
    grade(args.submissions, args.out, args.feedback, args.solutions, args.cell_timeout, args.kernel)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
