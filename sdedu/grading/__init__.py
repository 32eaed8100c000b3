"""Graded exercises: the checker, the exercise builder and the teacher's grader.

    from sdedu.grading import check
    check("forward_diffusion", q_sample)     # prints one line, or raises with a diagnosis

- `check(item_id, answer)`: checks one item (ids: `item_ids()`, docs/GRADING.md). It raises
  `ExerciseIncomplete` on a stub and `ExerciseFailed` on a wrong answer (both AssertionErrors).
- `python -m sdedu.grading build` writes exercises/ from solutions/ (`sdedu.grading.builder`).
- `sdedu grade SUBMISSION.ipynb... --out grades.csv` runs and scores submissions (`sdedu.grading.grader`).
"""

from sdedu.grading.checker import (
    ExerciseFailed,
    ExerciseIncomplete,
    check,
    item_ids,
    when_implemented,
)

__all__ = ["check", "ExerciseIncomplete", "ExerciseFailed", "item_ids", "when_implemented"]
