"""The master notebooks, read once into memory before any submission runs, and which one a submission is.

Reading every master at the start (`read_masters`) means a submission that rewrites a file in
`--solutions` changes nothing for the submissions after it; the grader also compares the files
with these bytes after each submission (`changed`) and, without a sandbox, flags the submission
that ran when they changed. It never writes to them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

from sdedu.grading import builder

__all__ = ["Master", "read_masters", "identify", "check_items", "changed"]

CHECK_ITEM = re.compile(r"""check\(\s*["']([A-Za-z0-9_\-]+)["']""")


@dataclass(frozen=True)
class Master:
    """One solution notebook: its stem, its bytes as read, and the parsed notebook."""

    stem: str
    path: Path
    data: bytes
    notebook: nbformat.NotebookNode


def read_masters(solutions_dir: Path) -> dict[str, Master]:
    """{stem: Master} for every solutions_dir/*.ipynb."""
    masters = {}
    for path in sorted(Path(solutions_dir).glob("*.ipynb")):
        data = path.read_bytes()
        masters[path.stem] = Master(path.stem, path, data, nbformat.reads(data.decode("utf-8"), as_version=4))
    if not masters:
        raise ValueError(f"solutions_dir must hold the master notebooks (*.ipynb); none in {solutions_dir}")
    return masters


def changed(masters: dict[str, Master]) -> list[str]:
    """The masters whose file no longer holds the bytes read at the start."""
    out = []
    for master in masters.values():
        try:
            same = master.path.read_bytes() == master.data
        except OSError:
            same = False
        if not same:
            out.append(str(master.path))
    return out


def identify(nb, path: Path, stems) -> str | None:
    """The stem of the solution notebook a submission belongs to, or None.

    The `sdedu.exercise` entry the builder writes into every exercise's metadata, else the
    longest master name inside the file name, else a unique `NN_` prefix.
    """
    stems = sorted(stems)
    declared = nb.get("metadata", {}).get("sdedu", {}).get("exercise")
    if declared in stems:
        return declared
    by_name = [m for m in stems if m in path.stem]
    if by_name:
        return max(by_name, key=len)
    number = re.match(r"(\d\d)_", path.stem)
    by_number = [m for m in stems if number and m.startswith(number.group(1) + "_")]
    return by_number[0] if len(by_number) == 1 else None


def check_items(cell) -> list[str]:
    """The item ids a check cell checks."""
    return CHECK_ITEM.findall(cell.source)


def check_cells(nb) -> list:
    """The code cells of `nb` that call check."""
    return [cell for cell in nb.cells if builder.is_check_cell(cell)]
