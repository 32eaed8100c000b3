"""The learner's workspace: a private copy of the exercises that no build, update or `git pull` touches.

`exercises/` is generated from `solutions/` (`make exercises`) and tracked by git, so answers typed
there can be overwritten. `make course` therefore copies every exercise notebook into `workspace/`
(git-ignored, never written by any build) the first time it sees it, and never again: a file that
is already in the workspace is left exactly as it is, edited or not. An exercise added to the course
later (after a `git pull`) is copied on the next `make course`; a learner who wants a fresh copy of
an exercise deletes theirs and runs `make course` again.

    python -m sdedu.workspace [--exercises exercises] [--workspace workspace]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXERCISES_DIR = ROOT / "exercises"
WORKSPACE_DIR = ROOT / "workspace"


def copy_new_exercises(exercises_dir: Path = EXERCISES_DIR, workspace_dir: Path = WORKSPACE_DIR) -> list[Path]:
    """Copy each exercises_dir/*.ipynb that workspace_dir lacks; never overwrite. Returns the new copies."""
    exercises_dir, workspace_dir = Path(exercises_dir), Path(workspace_dir)
    if not exercises_dir.is_dir():
        raise FileNotFoundError(f"exercises_dir must be a folder of exercise notebooks; got {exercises_dir}")
    workspace_dir.mkdir(parents=True, exist_ok=True)
    targets = [workspace_dir / source.name for source in sorted(exercises_dir.glob("*.ipynb"))]
    return [target for target in targets if copy_once(exercises_dir / target.name, target)]


def copy_once(source: Path, target: Path) -> bool:
    """Copy the file source to target unless target exists (then it is left exactly as it is). True if copied."""
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(target, "xb") as out, open(source, "rb") as src:  # "x": fails if the file exists
            shutil.copyfileobj(src, out)
    except FileExistsError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sdedu.workspace", description=__doc__.splitlines()[0])
    parser.add_argument("--exercises", type=Path, default=EXERCISES_DIR, help="where the exercises are generated")
    parser.add_argument("--workspace", type=Path, default=WORKSPACE_DIR, help="your copies (never overwritten)")
    args = parser.parse_args(argv)
    try:
        copied = copy_new_exercises(args.exercises, args.workspace)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    kept = len(list(args.workspace.glob("*.ipynb"))) - len(copied)
    print(f"your exercises are in {args.workspace}: {len(copied)} new, {kept} kept as you left them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
