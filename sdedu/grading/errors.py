"""What a check raises, and the two helpers that word its messages.

Both errors are AssertionError subclasses, so a failed check reads like a failed test:

- `ExerciseIncomplete`: the answer is still the stub (nothing to grade yet);
- `ExerciseFailed`: the answer was checked and is wrong; the message names the case, what went
  wrong, and a hint that points at the likely mistake without giving the answer.
"""

from __future__ import annotations

import torch

__all__ = ["ExerciseIncomplete", "ExerciseFailed", "fail", "describe"]


class ExerciseIncomplete(AssertionError):
    """The answer is still the stub: nothing to grade yet."""


class ExerciseFailed(AssertionError):
    """The answer was checked and is wrong; the message says where and hints at why."""


def fail(item_id: str, case: str, what: str, hint: str | None = None, cause: BaseException | None = None):
    """Raise ExerciseFailed: '<item>, case <case>: <what>' plus 'Hint: <hint>'."""
    __tracebackhide__ = True
    message = f"{item_id}, case {case}: {what}"
    if hint:
        message += f"\nHint: {hint}"
    raise ExerciseFailed(message) from cause


def describe(value) -> str:
    """A short description of a value: type, and dtype and shape for tensors."""
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} tensor of shape {tuple(value.shape)}"
    if isinstance(value, (int, float, str, bool)):
        return f"{type(value).__name__} {value!r}"
    return type(value).__name__
