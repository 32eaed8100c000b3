"""Graded exercises: the checker, the exercise builder and the teacher's grader.

    from sdedu.grading import check
    check("forward_diffusion", q_sample)     # prints one line, or raises with a diagnosis

- `check(item_id, answer)`: checks one item (ids: `item_ids()`, docs/GRADING.md). It raises
  `ExerciseIncomplete` on a stub and `ExerciseFailed` on a wrong answer (both AssertionErrors).
- `python -m sdedu.grading build` writes exercises/ from solutions/ (`sdedu.grading.builder`).
- `sdedu grade SUBMISSION.ipynb... --out grades.csv` scores submissions (`sdedu.grading.grader`):
  each one runs in a sandboxed process and is judged from outside it (`sdedu.grading.judge`).

Module map: errors, registry, calling, expect, trial (what a check is made of); checks_* (the
checks, one module per notebook group); catalogue (all items); checker (`check`); builder;
masters, plan, oracle, sandbox, judge (grading one submission); reports, grader (a class).
"""

from sdedu.grading.catalogue import item_ids
from sdedu.grading.checker import check, when_implemented
from sdedu.grading.errors import ExerciseFailed, ExerciseIncomplete

__all__ = ["check", "ExerciseIncomplete", "ExerciseFailed", "item_ids", "when_implemented"]
