"""The registry of graded items: `@register` adds a check; `sdedu.grading.catalogue` holds them all.

A check module (`checks_diffusion`, ...) decorates each check with `@register(item_id, title,
notebook)`. The registry only collects: `catalogue` imports every check module and is the one
place that answers "which items exist" (so the list is complete whoever imports it first).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Item", "register", "REGISTERED"]


@dataclass(frozen=True)
class Item:
    """One graded item: an exercise function or an interview question.

    id: what `check` is called with.  title: one line for the docs and the grader's feedback.
    notebook: the stem of the solution notebook that holds it.  run: fn(answer, trial) -> summary
    line (raises ExerciseFailed / ExerciseIncomplete; `trial` is a `sdedu.grading.trial.Trial`).
    points: its weight in the teacher's CSV, shared equally between its cases.
    """

    id: str
    title: str
    notebook: str
    run: Callable[[Any, Any], str]
    points: float = 1


REGISTERED: dict[str, Item] = {}


def register(item_id: str, title: str, notebook: str, points: float = 1):
    """Decorator: register `fn(answer, trial) -> summary` as the check of `item_id`."""

    def wrap(fn):
        if item_id in REGISTERED:
            raise ValueError(f"item id {item_id!r} is registered twice")
        REGISTERED[item_id] = Item(item_id, title, notebook, fn, points)
        return fn

    return wrap
