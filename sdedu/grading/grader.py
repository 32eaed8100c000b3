"""The teacher's grader: judge every submission from outside it, and write the class's reports.

    sdedu grade submissions/ --out grades.csv [--jobs 2] [--shard 1/4]
    sdedu grade merge shard1/grades.csv shard2/grades.csv ... --out grades.csv

1. The masters (solutions/) are read once, before any submission runs (`masters.read_masters`).
2. For each submission: which exercise it is (`masters.identify`); what of it runs (`plan`); the
   verdict of every item, public and hidden cases, from a judge outside the submission's sandboxed
   process (`judge`); flags for the teacher (`plan`, and masters changed on disk).
3. After each submission, its report and the class's CSVs are rewritten atomically (`reports`),
   so an interrupted batch loses nothing already graded, and a re-run replaces a submission's rows.

`--jobs N` grades N submissions at a time (each worker, and the sandboxes it starts, with its
share of the CPU's threads); `--shard i/n` grades every n-th submission starting at the i-th, to
split a class across machines; `merge` joins the shards' outputs. All give the same CSVs.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path

import nbformat

from sdedu.grading import builder, masters, reports, sandbox
from sdedu.grading.catalogue import ITEMS

__all__ = ["grade_one", "grade", "merge", "find_submissions", "main"]


def _seed(submission: str, salt: str) -> int:
    """The hidden cases' seed: fixed for a submission (re-grading gives the same result), unknown to it."""
    return int.from_bytes(hashlib.sha256(f"{salt}:{submission}".encode()).digest()[:4], "big")


def _status(report: reports.Report) -> str:
    if report.exercise is None or not report.items:
        return "not graded"
    if report.flags:
        return "flagged"
    statuses = {status for r in report.items for status, _, _ in (r.public, r.hidden)}
    text = " ".join(report.notes)
    if "in time" in text or "timeout" in text:
        return "timeout"
    if "crashed" in statuses or "stopped answering" in text or "printed more than" in text:
        return "crashed"
    return "ok"


def grade_one(path: Path, known: dict, limits: sandbox.Limits, hide: list[Path], salt: str = "") -> reports.Report:
    """Grade one submission against the masters `known`; never raises for a bad submission."""
    from sdedu.grading import judge, plan

    start = time.monotonic()
    report = reports.Report(str(path), None, isolation=sandbox.isolation())
    try:
        nb = nbformat.read(str(path), as_version=4)
        report.exercise = masters.identify(nb, path, known)
        if report.exercise is None:
            report.notes.append("cannot tell which exercise this is (no sdedu metadata, no exercise name in the name)")
    except Exception as err:  # noqa: BLE001 - one broken file must never stop the batch
        report.notes.append(f"the file is not a readable notebook: {type(err).__name__}: {err}")
    if report.exercise is not None:
        master = known[report.exercise].notebook
        the_plan = plan.make_plan(master, nb)
        items = [item for cell in masters.check_cells(master) for item in masters.check_items(cell)]
        verdicts, notes = judge.judge(the_plan, items, limits, hide, _seed(str(path), salt))
        report.notes += the_plan.notes + notes
        report.flags += the_plan.flags
        for v in verdicts:
            points = ITEMS[v.item].points if v.item in ITEMS else 1
            fraction = min(v.public[1], v.hidden[1])
            report.items.append(reports.ItemResult(v.item, points * fraction, points, v.public, v.hidden, v.inside))
            if v.inside:
                report.notes.append(f"{v.item} was judged inside the submission's process (see docs/GRADING.md)")
        moved = masters.changed(known)
        if moved and report.isolation == "namespaces":  # hidden from it: someone else changed them
            report.notes.append(
                f"the masters changed on disk during grading (the copies read at the start were used): {', '.join(moved)}"
            )
        elif moved:
            report.flags.append(f"the master notebooks changed on disk while it ran: {', '.join(moved)}")
    report.status = _status(report)
    report.seconds = time.monotonic() - start
    return report


def find_submissions(paths: list[Path]) -> list[Path]:
    found = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
        else:
            found.append(path)
    return found


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def grade(
    submissions: list[Path],
    out: Path,
    feedback_dir: Path | None = None,
    solutions_dir: Path = builder.SOLUTIONS_DIR,
    limits: sandbox.Limits | None = None,
    jobs: int = 1,
    shard: tuple[int, int] = (1, 1),
    progress=print,
) -> list[reports.Report]:
    """Grade `submissions` (files or folders) into `out` and the feedback folder; returns the reports."""
    out, limits = Path(out), limits or sandbox.Limits()
    feedback_dir = Path(feedback_dir) if feedback_dir is not None else out.with_name(out.stem + "_feedback")
    known = masters.read_masters(solutions_dir)
    paths = find_submissions([Path(p) for p in submissions])
    index, count = shard
    paths = paths[index - 1 :: count]
    out.parent.mkdir(parents=True, exist_ok=True)
    feedback_dir.mkdir(parents=True, exist_ok=True)
    hide = _hidden_folders([Path(solutions_dir), out.parent, feedback_dir, *[Path(p) for p in submissions]])
    threads = max(1, (os.cpu_count() or 1) // jobs)
    limits = replace(limits, threads=threads)
    kept = reports.read_long(out)
    everyone = {report.submission: report for report in reports.read_reports(feedback_dir)}
    done: list[reports.Report] = []

    def record(report: reports.Report) -> None:
        done.append(report)
        everyone[report.submission] = report
        reports.write_report(report, feedback_dir)
        reports.write_tables(out, sorted(everyone.values(), key=lambda r: r.submission), kept)
        progress(
            f"{report.submission}: {reports.number(report.total)}/{reports.number(report.max)} {report.status} "
            f"({report.seconds:.1f} s, isolation: {report.isolation})"
        )

    if jobs == 1:
        _worker_init(threads)
        for path in paths:
            record(grade_one(path, known, limits, hide))
    else:
        with ProcessPoolExecutor(
            jobs, mp_context=get_context("spawn"), initializer=_worker_init, initargs=(threads,)
        ) as pool:
            futures = [pool.submit(grade_one, path, known, limits, hide) for path in paths]
            for future in futures:
                record(future.result())
    if not paths:
        reports.write_tables(out, list(everyone.values()), kept)
    return done


def _hidden_folders(paths: list[Path]) -> list[Path]:
    """Folders to hide from submissions: never one that holds the Python environment or sdedu itself."""
    needed = [Path(sys.prefix).resolve(), Path(builder.__file__).resolve().parents[2]]
    folders = sorted({path.resolve() if path.is_dir() else path.resolve().parent for path in paths})
    folders = [f for f in folders if not any(n == f or f in n.parents for n in needed)]
    return [f for f in folders if not any(other in f.parents for other in folders)]  # the outermost only


def merge(shard_outputs: list[Path], out: Path, feedback_dir: Path | None = None) -> list[Path]:
    """Join the shards' outputs (each a CSV with its feedback folder beside it) into `out`."""
    out = Path(out)
    feedback_dir = Path(feedback_dir) if feedback_dir is not None else out.with_name(out.stem + "_feedback")
    for shard_out in shard_outputs:
        shard_out = Path(shard_out)
        folder = shard_out.with_name(shard_out.stem + "_feedback")
        if not folder.is_dir():
            raise ValueError(f"each shard output needs its feedback folder beside it; {folder} is missing")
        for report in reports.read_reports(folder):
            reports.write_report(report, feedback_dir)
    return reports.write_tables(out, reports.read_reports(feedback_dir))


def _shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard must be i/n with 1 <= i <= n (e.g. 3/8); got {text!r}") from None
    if not 1 <= index <= count:
        raise argparse.ArgumentTypeError(f"--shard must be i/n with 1 <= i <= n (e.g. 3/8); got {text!r}")
    return index, count


def main(argv: list[str] | None = None) -> int:
    """`sdedu grade SUBMISSION... --out grades.csv` or `sdedu grade merge SHARD.csv... --out grades.csv`."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["merge"]:
        parser = argparse.ArgumentParser(prog="sdedu grade merge", description="Join the outputs of --shard runs.")
        parser.add_argument(
            "shards", nargs="+", type=Path, help="each shard's --out CSV (its feedback folder beside it)"
        )
        parser.add_argument("--out", type=Path, default=Path("grades.csv"), help="the merged CSV (default grades.csv)")
        args = parser.parse_args(argv[1:])
        try:
            written = merge(args.shards, args.out)
        except ValueError as err:
            parser.error(str(err))
        print("wrote " + ", ".join(str(p) for p in written))
        return 0
    parser = argparse.ArgumentParser(
        prog="sdedu grade",
        description="Judge submitted exercise notebooks from outside them (sandboxed where the OS allows), "
        "and write the class's CSVs and one feedback page per submission. See docs/GRADING.md.",
    )
    parser.add_argument("submissions", nargs="+", type=Path, help="notebooks, or folders searched for *.ipynb")
    parser.add_argument("--out", type=Path, default=Path("grades.csv"), help="the long CSV (default grades.csv)")
    parser.add_argument("--feedback", type=Path, default=None, help="feedback folder (default <out>_feedback)")
    parser.add_argument("--solutions", type=Path, default=builder.SOLUTIONS_DIR, help="folder of the master notebooks")
    defaults = sandbox.Limits()
    parser.add_argument(
        "--call-timeout", type=float, default=defaults.call_s, help="seconds per call of a learner's function"
    )
    parser.add_argument(
        "--wall-timeout", type=float, default=defaults.wall_s, help="seconds for a submission's cells to run"
    )
    parser.add_argument("--memory-mb", type=int, default=defaults.memory_mb, help="address space per submission (MB)")
    parser.add_argument("--cpu-s", type=int, default=defaults.cpu_s, help="CPU seconds per submission process")
    parser.add_argument("--output-mb", type=int, default=defaults.output_mb, help="printed output per submission (MB)")
    parser.add_argument("--jobs", type=int, default=1, help="submissions graded at a time (default 1)")
    parser.add_argument("--shard", type=_shard, default=(1, 1), help="grade only shard i of n (i/n), then `merge`")
    args = parser.parse_args(argv)
    if not Path(args.solutions).is_dir():
        parser.error(f"--solutions must be a folder of solution notebooks; got {args.solutions}")
    missing = [str(p) for p in args.submissions if not p.exists()]
    if missing:
        parser.error(f"SUBMISSION must be existing notebooks or folders; not found: {', '.join(missing)}")
    if args.jobs < 1:
        parser.error(f"--jobs must be a positive number of workers; got {args.jobs}")
    try:
        limits = sandbox.Limits(args.memory_mb, args.cpu_s, args.output_mb, args.wall_timeout, args.call_timeout)
    except ValueError as err:
        parser.error(str(err))
    grade(args.submissions, args.out, args.feedback, args.solutions, limits, args.jobs, args.shard)
    print(f"wrote {args.out} (isolation: {sandbox.isolation()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
