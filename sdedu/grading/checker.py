"""The checker a learner calls: `check(item_id, answer)` prints one line or raises with a diagnosis.

`check(item_id, answer)` looks the item up (`sdedu.grading.catalogue`), runs its cases and either
prints one short line ("✔ forward_diffusion: passed (4 cases)") or raises:

- `ExerciseIncomplete` when the answer is still the stub (it raises NotImplementedError, or the
  answer is `...`);
- `ExerciseFailed` when it is wrong: which case failed, expected vs got (shape, dtype, the first
  mismatching values) and a hint that points at the likely mistake without giving the answer.

This is feedback for the learner, in the learner's own kernel: anything printed here can be
forged by code in the same kernel, so the teacher's grader never reads it (it judges in a process
of its own: `sdedu.grading.judge`).
"""

from __future__ import annotations

import torch

from sdedu.grading.catalogue import get_item
from sdedu.grading.errors import ExerciseIncomplete
from sdedu.grading.trial import DEFAULT_TIME_LIMIT_S, Trial

__all__ = ["check", "run_check", "when_implemented"]


def run_check(item_id: str, answer, trial: Trial) -> str:
    """Run the check of `item_id` on `answer` under `trial`; returns the summary line (or raises)."""
    __tracebackhide__ = True
    item = get_item(item_id)
    if answer is ... or answer is None:
        raise ExerciseIncomplete(
            f"{item_id}: no answer yet: replace the `...` with your answer, then run this cell again."
        )
    # The checks seed their own models and data: keep the learner's random state as it was.
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        return item.run(answer, trial)


def check(item_id: str, answer, *, time_limit: float | None = None) -> None:
    """Check a learner's answer to `item_id` and print one line on success.

    Args:
        item_id: e.g. "forward_diffusion" (see docs/GRADING.md or `item_ids()`).
        answer: the learner's function, or the value an interview question asks for.
        time_limit: seconds each call of the learner's function may take (default 20).
    Raises:
        ExerciseIncomplete: the answer is still the stub.
        ExerciseFailed: the answer is wrong (the message says which case, what and a hint).
        ValueError: unknown item_id (the message lists the valid ones).
    """
    __tracebackhide__ = True
    trial = Trial(DEFAULT_TIME_LIMIT_S if time_limit is None else float(time_limit))
    summary = run_check(item_id, answer, trial)
    print(f"\u2714 {item_id}: passed ({summary})")


# ---- in notebooks: cells that use an unfinished function -----------------------------------


class when_implemented:
    """`with when_implemented(): ...` runs the body, but turns a stub's NotImplementedError into a note.

    The cells that *use* a learner's function (to draw a picture, say) are wrapped in it so that
    an exercise notebook runs from top to bottom before it is solved.
    """

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and issubclass(exc_type, NotImplementedError):
            print("(This cell uses a function you have not written yet: finish it above, then run this cell again.)")
            return True
        return False
