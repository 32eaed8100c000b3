"""python -m sdedu.grading build | check-stale | grade SUBMISSION... --out grades.csv"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "grade":
        from sdedu.grading.grader import main as grade_main

        return grade_main(argv[1:])
    from sdedu.grading import builder

    parser = argparse.ArgumentParser(
        prog="python -m sdedu.grading", description="Build exercises/ from solutions/, or check that it is up to date."
    )
    parser.add_argument("command", choices=["build", "check-stale", "grade"])
    parser.add_argument("--solutions", type=Path, default=builder.SOLUTIONS_DIR, help="folder of solution notebooks")
    parser.add_argument(
        "--exercises", type=Path, default=builder.EXERCISES_DIR, help="folder to write the exercises to"
    )
    args = parser.parse_args(argv)
    if args.command == "build":
        for path in builder.build(args.solutions, args.exercises):
            print(f"wrote {path}")
        return 0
    problems = builder.stale(args.solutions, args.exercises)
    for problem in problems:
        print(f"stale: {problem}")
    if problems:
        print("run `python -m sdedu.grading build` to regenerate exercises/")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
