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

import io
import os
import secrets
import select
import struct
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sdedu.grading import oracle, sandbox
from sdedu.grading.checker import run_check
from sdedu.grading.errors import ExerciseFailed, ExerciseIncomplete
from sdedu.grading.plan import Plan
from sdedu.grading.trial import Trial

__all__ = ["JUDGED_INSIDE", "Verdict", "judge"]

JUDGED_INSIDE = frozenset({"embedding_cache", "fast_sampling", "benchmark_timing", "distributed_training"})
GRADING_DIR = Path(__file__).resolve().parent


@dataclass
class Verdict:
    """One item's result: `public` and `hidden` are (status, fraction of cases passed, message)."""

    item: str
    public: tuple[str, float, str]
    hidden: tuple[str, float, str]
    cases: list[tuple[str, str | None]] = field(default_factory=list)
    inside: bool = False


class OracleGone(Exception):
    """The oracle died, or did not answer in time."""


class Oracle:
    """One sandboxed oracle process and the two pipes to it."""

    def __init__(self, plan: Plan, items: list[str], inside: bool, limits, hide, workdir: Path, seed: int):
        self.limits, self.token, self.dead = limits, secrets.token_hex(16), False
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        self.log = open(workdir / f"output-{'inside' if inside else 'apart'}.txt", "ab")  # noqa: SIM115
        hidden = list(hide) + ([] if inside else [GRADING_DIR])
        argv = [sys.executable, "-c", Path(oracle.__file__).read_text(), str(to_child_r), str(from_child_w)]
        self.process = sandbox.start(argv, limits, hidden, (to_child_r, from_child_w), self.log, self.token, workdir)
        os.close(to_child_r), os.close(from_child_w)
        self.inbox, self.outbox = os.fdopen(from_child_r, "rb"), os.fdopen(to_child_w, "wb")
        job = {
            "cells": plan.cells,
            "answers": {item: plan.answers[item] for item in items if item in plan.answers},
            "judge_inside": sorted(items) if inside else [],
            "time_limit": limits.call_s,
            "seed": seed,
        }
        self._send(job)
        self.hello = self._receive(limits.wall_s)

    def _send(self, message) -> None:
        buffer = io.BytesIO()
        torch.save(message, buffer)
        data = buffer.getvalue()
        try:
            self.outbox.write(struct.pack(">Q", len(data)) + data)
            self.outbox.flush()
        except (BrokenPipeError, OSError) as err:
            raise OracleGone("the submission's process is gone") from err

    def _read_exactly(self, size: int, deadline: float) -> bytes:
        chunks, fd = [], self.inbox.fileno()
        while size:
            left = deadline - _now()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise OracleGone("timeout")
            chunk = os.read(fd, min(size, 1 << 20))
            if not chunk:
                raise OracleGone("the submission's process ended")
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def _receive(self, timeout: float):
        deadline = _now() + timeout
        (size,) = struct.unpack(">Q", self._read_exactly(8, deadline))
        if size > 1 << 30:
            raise OracleGone("a reply larger than 1 GiB")
        try:
            return torch.load(io.BytesIO(self._read_exactly(size, deadline)), weights_only=True)
        except Exception as err:  # noqa: BLE001 - a forged or corrupt reply counts as no reply
            raise OracleGone(f"an unreadable reply ({type(err).__name__})") from err

    def call(self, item: str, args: list, timeout: float):
        if self.dead:
            raise OracleGone("the submission's process was stopped earlier")
        self._send({"op": "call", "item": item, "args": args})
        return self._receive(timeout)

    def close(self) -> None:
        if self.dead:
            return
        self.dead = True
        try:
            self._send({"op": "done"})
        except OracleGone:
            pass
        sandbox.stop(self.process, self.token)
        for stream in (self.inbox, self.outbox, self.log):
            try:
                stream.close()
            except OSError:
                pass


def _now() -> float:
    import time

    return time.monotonic()


def _unpack(value):
    """A reply's data as the check expects it (arrays back to numpy, unsupported types named)."""
    if isinstance(value, dict) and set(value) == {"__ndarray__"}:
        return value["__ndarray__"].numpy()
    if isinstance(value, dict) and set(value) == {"__unsupported__"}:
        return Unsupported(value["__unsupported__"])
    if isinstance(value, list):
        return [_unpack(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_unpack(v) for v in value)
    if isinstance(value, dict):
        return {k: _unpack(v) for k, v in value.items()}
    return value


class Unsupported:
    """A result of a type that does not cross the pipe; the check reports it by its type name."""

    def __init__(self, type_name: str):
        self.type_name = type_name

    def __repr__(self):
        return f"<a {self.type_name}>"


def _copy_back(arg, state) -> None:
    """Make `arg` (here) look as it does in the oracle after the call."""
    if state is None:
        return
    with torch.no_grad():
        if isinstance(arg, torch.Tensor) and isinstance(state, torch.Tensor):
            if arg.shape == state.shape and arg.dtype == state.dtype:
                arg.copy_(state)
            else:
                arg.data = state
        elif isinstance(arg, torch.nn.Module) and "state" in state:
            params = dict(arg.named_parameters())
            for name, tensor in arg.state_dict(keep_vars=True).items():
                if name in state["state"]:
                    tensor.data = state["state"][name].to(tensor.device)
            for name, param in params.items():
                param.grad = state["grads"].get(name)
        elif isinstance(arg, torch.optim.Optimizer) and "optimizer" in state:
            arg.load_state_dict(state["optimizer"])
        elif isinstance(arg, torch.Generator) and "generator" in state:
            arg.set_state(state["generator"])


class RemoteFunction:
    """Stands in for the learner's function: each call is made by the oracle, with its arguments copied there."""

    def __init__(self, oracle_process: Oracle, item: str, name: str):
        self._oracle, self._item, self.__name__ = oracle_process, item, name

    def __call__(self, *args):
        try:
            reply = self._oracle.call(self._item, list(args), self._oracle.limits.call_s)
        except OracleGone as err:
            self._oracle.close()  # a late reply would answer the next call: this oracle is done
            raise TimeoutError(
                f"{self.__name__} did not answer within {self._oracle.limits.call_s:g} s ({err})"
            ) from None
        for arg, state in zip(args, reply.get("after", [])):
            _copy_back(arg, state)
        if "error" in reply:
            if reply["stub"]:
                raise NotImplementedError()
            raise type(str(reply["error"]), (Exception,), {})(reply["message"])
        return _unpack(reply["result"])


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
    answer = RemoteFunction(current, item, rest[0]) if kind == "function" else _unpack(rest[0])
    # The checker's own clock is a little later than the oracle's, so a slow call is always ended by the
    # judge (which then stops the oracle) and never leaves a reply in the pipe for the next call.
    public = _run(item, answer, Trial(limits.call_s + 10, partial=True))
    hidden_trial = Trial(limits.call_s + 10, seed=seed, partial=True)
    hidden = _run(item, answer, hidden_trial) if not current.dead else public
    return Verdict(item, public, hidden, hidden_trial.cases)


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
            if kind == "missing":
                pair.append(("not run", 0.0, rest[0]))
            else:
                status, message, cases = rest
                passed = sum(m is None for _, m in cases) / len(cases) if cases else float(status == "passed")
                pair.append((status, 1.0 if status == "passed" else passed, message))
        verdicts.append(Verdict(item, pair[0], pair[1], inside=True))
    return verdicts


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
