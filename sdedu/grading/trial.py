"""One run of a check: its time limit, which cases (public or hidden) and, when grading, each case's result.

    trial = Trial()                                  # in a notebook: the public cases, stop at the first failure
    trial = Trial(seed=7, partial=True)              # the grader: hidden cases drawn from seed 7, every case scored

A check receives its Trial explicitly (`check_x(answer, trial)`) and uses it three ways:

- `trial.call(item, fn, args, case=...)` calls the learner's code with the trial's time limit;
- `trial.generator(k)` is the generator its k-th batch of case data is drawn from: seed k for the
  public cases the learner sees, a seed derived from (trial.seed, k) for the hidden ones, so that
  answers hard-coded for the public cases fail;
- `with trial.case(name): ...` around one case: in a notebook a failure propagates as before; when
  grading (`partial=True`) it is recorded and the next case runs, so points are given per case.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from sdedu.grading.calling import call_learner
from sdedu.grading.errors import ExerciseFailed

__all__ = ["Trial", "DEFAULT_TIME_LIMIT_S"]

DEFAULT_TIME_LIMIT_S = 20.0  # per call of the learner's function


@dataclass
class Trial:
    """How one check runs (see the module docstring).

    time_limit: seconds each call of the learner's function may take.
    seed: None for the public cases; an int draws hidden cases from it.
    partial: record each case's outcome in `cases` instead of raising at the first failure.
    cases: [(case name, None if it passed else the failure message)], filled when `partial`.
    """

    time_limit: float = DEFAULT_TIME_LIMIT_S
    seed: int | None = None
    partial: bool = False
    cases: list[tuple[str, str | None]] = field(default_factory=list)

    def __post_init__(self):
        if not self.time_limit > 0:
            raise ValueError(f"time_limit must be a positive number of seconds; got {self.time_limit!r}")

    @property
    def hidden(self) -> bool:
        return self.seed is not None

    def call(self, item_id: str, fn, args, *, case: str, **options):
        """`call_learner(item_id, fn, args, case=case, ...)` with this trial's time limit."""
        __tracebackhide__ = True
        return call_learner(item_id, fn, args, case=case, time_limit=self.time_limit, **options)

    def generator(self, public_seed: int) -> torch.Generator:
        """A CPU generator for case data: `public_seed` itself, or a hidden seed derived from it."""
        seed = public_seed if self.seed is None else 1_000_003 * (self.seed + 1) + public_seed
        return torch.Generator().manual_seed(seed)

    @contextmanager
    def case(self, name: str):
        """Score the body as one case (see the module docstring)."""
        try:
            yield
        except ExerciseFailed as err:
            if not self.partial:
                raise
            self.cases.append((name, str(err)))
        else:
            if self.partial:
                self.cases.append((name, None))
