"""Judging one submission from outside it: the verdict never comes from a process the learner's code ran in.

The judge (this process: the grader, trusted) starts an oracle (`sdedu.grading.oracle`) in the
sandbox, sends it the cells to run, and then runs each item's check *here*, on a stand-in for
the learner's function that forwards every call to the oracle (`RemoteFunction`). The check draws
its inputs here, compares here and scores here; the learner's code only ever sees the inputs of
one call and returns a result. So:

- printed text, patched checkers, patched torch functions, exception hooks, files written later:
  none of them reach this process, which reads only the oracle's replies, as plain data
  (`torch.load(weights_only=True)`: no code runs when a reply is read);
- each item is checked twice: on the public cases (what the learner saw) and on hidden cases drawn
  from a seed per submission (`Trial(seed=...)`), so answers hard-coded for the public cases fail;
- a call that does not return in time, or an oracle that dies, fails that item; the oracle is
  started again for the next one. When the judge is done, the oracle and everything it started
  are killed (`sandbox.stop`).

A few checks need the learner's function itself, not calls to it (they count calls to modules
they hand over, time a function they pass in, or copy the function's source into other
processes): those (`JUDGED_INSIDE`) are checked by the real checker inside the sandbox, imported
before any learner code runs, and reported as such.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from sdedu.grading.checker import run_check
from sdedu.grading.errors import ExerciseFailed, ExerciseIncomplete
from sdedu.grading.plan import Plan
from sdedu.grading.remote import Oracle, OracleGone, RemoteFunction, unpack
from sdedu.grading.trial import Trial

__all__ = ["JUDGED_INSIDE", "Verdict", "judge", "inside_result"]

# The checks that watch the learner's code from inside: they hand it spies (a model and an optimizer
# that record what they see, call counters on a pipeline's modules, a function to time, a stand-in
# model defined by the checker) or copy its source into other processes. A pipe cannot carry those.
JUDGED_INSIDE = frozenset(
    {
        "training_step",
        "embedding_cache",
        "fast_sampling",
        "benchmark_timing",
        "distributed_training",
        "interview_minimal_code",
        "flow_matching_loss",
    }
)


@dataclass
class Verdict:
    """One item's result: `public` and `hidden` are (status, fraction of cases passed, message)."""

    item: str
    public: tuple[str, float, str]
    hidden: tuple[str, float, str]
    inside: bool = False


def _run(item: str, answer, trial: Trial) -> tuple[str, float, str]:
    try:
        summary = run_check(item, answer, trial)
    except ExerciseIncomplete as err:
        return "incomplete", 0.0, str(err)
    except ExerciseFailed as err:
        return "failed", _fraction(trial), str(err)
    except Exception as err:  # noqa: BLE001 - a check that breaks on a strange answer still scores 0
        return "failed", 0.0, f"the check could not run on this answer: {type(err).__name__}: {err}"
    failures = [message for _, message in trial.cases if message]
    if failures:
        return "failed", _fraction(trial), failures[0]
    return "passed", 1.0, summary


def _fraction(trial: Trial) -> float:
    return sum(message is None for _, message in trial.cases) / len(trial.cases) if trial.cases else 0.0


def judge(plan: Plan, items: list[str], limits, hide: list[Path], seed: int) -> tuple[list[Verdict], list[str]]:
    """Judge `items` of one submission (`plan`); returns the verdicts and notes (cells that raised, deaths)."""
    verdicts, notes = [], []
    with tempfile.TemporaryDirectory(prefix="sdedu-judge-") as tmp:
        workdir = Path(tmp)
        apart = [item for item in items if item not in JUDGED_INSIDE]
        inside = [item for item in items if item in JUDGED_INSIDE]
        if inside:
            verdicts += _judge_inside(plan, inside, limits, hide, workdir, seed, notes)
        current = None
        for item in apart:
            try:
                current = current or Oracle(plan, apart, False, limits, hide, workdir, seed)
                if not notes:
                    notes += [f"{label} raised {error}" for label, error in current.hello["errors"]]
                verdicts.append(_judge_apart(current, item, limits, seed))
                if current.dead:
                    notes.append(f"{item}: a call did not return in time; the submission's process was stopped")
                    current = None
            except OracleGone as err:
                notes.append(f"{item}: the submission's process stopped answering ({err}); it was killed")
                notes += _log_tail(workdir)
                verdicts.append(Verdict(item, ("crashed", 0.0, str(err)), ("crashed", 0.0, str(err))))
                if current is not None:
                    current.close()
                current = None
        if current is not None:
            current.close()
        notes += _output_notes(workdir, limits)
    order = {item: i for i, item in enumerate(items)}
    return sorted(verdicts, key=lambda v: order[v.item]), notes


def _judge_apart(current: Oracle, item: str, limits, seed: int) -> Verdict:
    kind, *rest = current.hello["answers"].get(item, ("missing", "its check cell names nothing"))
    if kind == "missing":
        message = f"{item}: the answer is not defined when the cells have run ({rest[0]})"
        return Verdict(item, ("not run", 0.0, message), ("not run", 0.0, message))
    answer = RemoteFunction(current, item, rest[0]) if kind == "function" else unpack(rest[0])
    # The checker's own clock is a little later than the oracle's, so a slow call is always ended by the
    # judge (which then stops the oracle) and never leaves a reply in the pipe for the next call.
    public = _run(item, answer, Trial(limits.call_s + 10, partial=True))
    hidden_trial = Trial(limits.call_s + 10, seed=seed, partial=True)
    hidden = _run(item, answer, hidden_trial) if not current.dead else public
    return Verdict(item, public, hidden)


def _judge_inside(plan, items, limits, hide, workdir, seed, notes) -> list[Verdict]:
    results = {}
    for seed_used in (None, seed):
        try:
            current = Oracle(plan, items, True, limits, hide, workdir, seed_used)
            results[seed_used] = current.hello["answers"]
            current.close()
        except OracleGone as err:
            notes.append(f"{', '.join(items)}: the submission's process stopped answering ({err}); it was killed")
            results[seed_used] = {}
    verdicts = []
    for item in items:
        pair = []
        for seed_used in (None, seed):
            kind, *rest = results[seed_used].get(item, ("verdict", "crashed", "no reply", []))
            pair.append(("not run", 0.0, rest[0]) if kind == "missing" else inside_result(*rest))
        verdicts.append(Verdict(item, pair[0], pair[1], inside=True))
    return verdicts


def inside_result(status: str, message: str, cases: list) -> tuple[str, float, str]:
    """(status, fraction, message) of a check run inside: as `_run`, a case that failed fails the item.

    A check that scores cases (`with trial.case(...)`) returns normally when some of them fail, so
    its status alone says "passed": the failed cases decide, as they do for the items judged apart.
    """
    failures = [m for _, m in cases if m]
    if status == "passed" and failures:
        status, message = "failed", failures[0]
    passed = sum(m is None for _, m in cases) / len(cases) if cases else float(status == "passed")
    return status, 1.0 if status == "passed" else passed, message


def _log_tail(workdir: Path) -> list[str]:
    """The last lines the submission's process printed (why it stopped, often)."""
    tails = []
    for log in sorted(workdir.glob("output-*.txt")):
        with open(log, "rb") as f:
            f.seek(max(0, log.stat().st_size - 600))
            text = f.read().decode("utf-8", "replace").strip()
        if text:
            tails.append(f"its last output: ...{text[-600:]}")
    return tails


def _output_notes(workdir: Path, limits) -> list[str]:
    notes = []
    for log in workdir.glob("output-*.txt"):
        if log.stat().st_size >= limits.output_mb * 2**20:
            notes.append(f"the submission printed more than {limits.output_mb} MB; its process was stopped there")
    return notes
