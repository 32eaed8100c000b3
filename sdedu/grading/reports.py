"""What the grader writes: a report per submission, and the class's CSVs built from all of them.

Per submission, in the feedback folder (`<out>_feedback/` by default): `NAME.json` (the report,
the source of every table), `NAME.md` and `NAME.html` (what passed, what failed, the hint: send
either to the learner).

For the class, next to `--out grades.csv`, all rebuilt from the reports after each submission:

- `grades.csv` (long): submission, item, points, max: one row per submission and item (as before);
- `grades_wide.csv`: one row per submission: exercise, status (ok / timeout / crashed / not
  graded / flagged), one column per item, total, max, flags;
- `grades_gradebook.csv`: one row per student (the submission's folder), one column per exercise,
  with Canvas's first columns (Student, ID, SIS User ID, Section); Moodle imports it too (map
  "SIS User ID" to the user's ID number).

Every file is written atomically (a temporary file, then a rename), and rows are sorted, so a
batch graded in any order, with any --jobs, or in shards then merged, gives the same bytes.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["ItemResult", "Report", "write_report", "read_reports", "write_tables", "feedback_name"]

LONG_FIELDS = ["submission", "item", "points", "max"]
STATUSES = ("ok", "timeout", "crashed", "not graded", "flagged")


@dataclass
class ItemResult:
    """One item of one submission: points of max; public and hidden (status, fraction of cases, message)."""

    item: str
    points: float
    max: float
    public: tuple[str, float, str]
    hidden: tuple[str, float, str]
    inside: bool = False


@dataclass
class Report:
    submission: str
    exercise: str | None
    status: str = "ok"
    items: list[ItemResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    isolation: str = "none"
    seconds: float = 0.0

    @property
    def total(self) -> float:
        return sum(r.points for r in self.items)

    @property
    def max(self) -> float:
        return sum(r.max for r in self.items)

    @staticmethod
    def from_dict(data: dict) -> Report:
        items = [ItemResult(**{**r, "public": tuple(r["public"]), "hidden": tuple(r["hidden"])}) for r in data["items"]]
        return Report(**{**data, "items": items})


def number(value: float) -> str:
    """Points as the CSVs write them: 1, 0, 0.5, 0.33."""
    return f"{round(value, 2):g}"


def feedback_name(submission: Path) -> str:
    """A file stem for a submission's feedback, unique per path (alice/01.ipynb -> alice__01)."""
    parts = [p for p in Path(submission).with_suffix("").parts if p not in ("/", "..", ".")]
    return re.sub(r"[^A-Za-z0-9_.-]", "_", "__".join(parts[-3:]))


def atomic_write(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    os.replace(tmp, path)


def write_report(report: Report, feedback_dir: Path) -> None:
    """NAME.json, NAME.md and NAME.html for one submission."""
    stem = Path(feedback_dir) / feedback_name(Path(report.submission))
    data = asdict(report)
    data.pop("seconds")  # timings vary from run to run; the files must not
    atomic_write(stem.with_suffix(".json"), json.dumps(data, indent=1, sort_keys=True) + "\n")
    atomic_write(stem.with_suffix(".md"), feedback_markdown(report))
    atomic_write(stem.with_suffix(".html"), feedback_html(report))


def read_reports(feedback_dir: Path) -> list[Report]:
    reports = []
    for path in sorted(Path(feedback_dir).glob("*.json")):
        try:
            reports.append(Report.from_dict(json.loads(path.read_text(encoding="utf-8"))))
        except (ValueError, KeyError, TypeError):
            continue
    return sorted(reports, key=lambda r: r.submission)


def _explain(result: ItemResult) -> list[str]:
    lines = []
    for label, (status, fraction, message) in (("public cases", result.public), ("hidden cases", result.hidden)):
        lines.append(f"{label}: {status} ({round(100 * fraction)}% of cases)")
        if status != "passed" and message:
            lines.append(message.strip())
    return lines


def feedback_markdown(report: Report) -> str:
    lines = [f"# Feedback: {report.submission}", ""]
    lines.append(f"Exercise: {report.exercise or 'unknown'}. Score: {number(report.total)} / {number(report.max)}.")
    lines.append(f"Status: {report.status}.")
    for result in report.items:
        lines += ["", f"## {result.item}: {number(result.points)}/{number(result.max)}", ""]
        lines += _explain(result)
    if report.notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in report.notes]
    if report.flags:
        lines += ["", "## For the teacher to look at", ""] + [f"- {flag}" for flag in report.flags]
    return "\n".join(lines) + "\n"


def feedback_html(report: Report) -> str:
    e = html.escape
    parts = [
        "<!doctype html><meta charset='utf-8'>",
        f"<title>Feedback: {e(report.submission)}</title>",
        "<style>body{font:15px sans-serif;max-width:50em;margin:2em auto}pre{background:#f4f4f4;padding:.6em;"
        "white-space:pre-wrap}.passed{color:#161}.failed,.incomplete,.crashed{color:#a11}</style>",
        f"<h1>Feedback: {e(report.submission)}</h1>",
        f"<p>Exercise: {e(report.exercise or 'unknown')}. Score: <b>{number(report.total)} / {number(report.max)}</b>."
        f" Status: {e(report.status)}.</p>",
    ]
    for result in report.items:
        parts.append(f"<h2>{e(result.item)}: {number(result.points)}/{number(result.max)}</h2>")
        for label, (status, fraction, message) in (("Public cases", result.public), ("Hidden cases", result.hidden)):
            parts.append(f"<p>{label}: <span class='{e(status)}'>{e(status)}</span> ({round(100 * fraction)}%)</p>")
            if status != "passed" and message:
                parts.append(f"<pre>{e(message.strip())}</pre>")
    if report.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in report.notes) + "</ul>")
    return "\n".join(parts) + "\n"


def _csv(fields: list[str], rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def read_long(path: Path) -> list[dict]:
    if not Path(path).exists():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return [row for row in csv.DictReader(f) if set(LONG_FIELDS) <= set(row)]


def long_rows(report: Report) -> list[dict]:
    rows = [
        {"submission": report.submission, "item": r.item, "points": number(r.points), "max": number(r.max)}
        for r in report.items
    ]
    return rows or [{"submission": report.submission, "item": "(not graded)", "points": "0", "max": "0"}]


def student(submission: str) -> str:
    """Who a submission belongs to: its folder's name (alice/01_x.ipynb -> alice), else the file's stem."""
    path = Path(submission)
    return path.parent.name or path.stem


def write_tables(out: Path, reports: list[Report], kept_rows: list[dict] = ()) -> list[Path]:
    """The long, wide and gradebook CSVs for `reports` (plus long rows of other submissions to keep)."""
    out, reports = Path(out), sorted(reports, key=lambda r: r.submission)
    graded = {r.submission for r in reports}
    rows = [row for row in kept_rows if row["submission"] not in graded]
    rows += [row for report in reports for row in long_rows(report)]
    rows.sort(key=lambda row: row["submission"])
    atomic_write(out, _csv(LONG_FIELDS, rows))
    items = list(dict.fromkeys(r.item for report in reports for r in report.items))
    wide_fields = ["submission", "exercise", "status", *items, "total", "max", "flags"]
    wide = []
    for report in reports:
        row = {"submission": report.submission, "exercise": report.exercise or "", "status": report.status}
        row.update({r.item: number(r.points) for r in report.items})
        row.update({"total": number(report.total), "max": number(report.max), "flags": "; ".join(report.flags)})
        wide.append(row)
    wide_path = out.with_name(out.stem + "_wide.csv")
    atomic_write(wide_path, _csv(wide_fields, wide))
    exercises = sorted({r.exercise for r in reports if r.exercise})
    book: dict[str, dict] = {}
    for report in reports:
        row = book.setdefault(
            student(report.submission), {"Student": student(report.submission), "ID": "", "Section": ""}
        )
        row["SIS User ID"] = row["Student"]
        if report.exercise:
            row[report.exercise] = number(report.total)
    book_path = out.with_name(out.stem + "_gradebook.csv")
    atomic_write(
        book_path,
        _csv(
            ["Student", "ID", "SIS User ID", "Section", *exercises], sorted(book.values(), key=lambda r: r["Student"])
        ),
    )
    return [out, wide_path, book_path]
