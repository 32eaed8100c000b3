"""The judge's end of the pipes: a sandboxed oracle process, and stand-ins for the learner's functions.

`Oracle` starts `sdedu.grading.oracle` in the sandbox (`sandbox.start`), sends it the job and
reads its replies with `torch.load(weights_only=True)` under a deadline; `RemoteFunction` looks
like the learner's function to a check, and makes each call in the oracle, copying the arguments'
state back afterwards (so a check sees in-place changes as if the call had been made here).
A reply that is late, unreadable or missing is `OracleGone`: the oracle is then stopped, never
reused, so a late reply can never answer a later call.
"""

from __future__ import annotations

import io
import os
import secrets
import select
import struct
import sys
import time
from pathlib import Path

import torch

from sdedu.grading import oracle, sandbox
from sdedu.grading.plan import Plan

__all__ = ["Oracle", "OracleGone", "RemoteFunction", "unpack"]

GRADING_DIR = Path(__file__).resolve().parent


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
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise OracleGone("timeout")
            chunk = os.read(fd, min(size, 1 << 20))
            if not chunk:
                raise OracleGone("the submission's process ended")
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def _receive(self, timeout: float):
        deadline = time.monotonic() + timeout
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


def unpack(value):
    """A reply's data as the check expects it (arrays back to numpy, unsupported types named)."""
    if isinstance(value, dict) and set(value) == {"__ndarray__"}:
        return value["__ndarray__"].numpy()
    if isinstance(value, dict) and set(value) == {"__unsupported__"}:
        return Unsupported(value["__unsupported__"])
    if isinstance(value, list):
        return [unpack(v) for v in value]
    if isinstance(value, tuple):
        return tuple(unpack(v) for v in value)
    if isinstance(value, dict):
        return {k: unpack(v) for k, v in value.items()}
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
        return unpack(reply["result"])
