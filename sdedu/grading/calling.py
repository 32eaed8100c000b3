"""Calling the learner's code safely: a time limit, inputs that must not change, errors as messages.

Whatever the learner's code does (raises, returns the wrong type, changes its inputs in place,
never returns) becomes a failed check, never a crash: every call goes through `call_learner`,
which applies a time limit (SIGALRM on the main thread, which is where a Jupyter kernel runs
cells; a watchdog thread elsewhere), compares the inputs before and after, and turns exceptions
into messages. The time limit is an argument: `Trial.call` passes the one its check runs with.
"""

from __future__ import annotations

import ast
import inspect
import signal
import textwrap
import threading
from typing import Any

import torch

from sdedu.grading.errors import ExerciseIncomplete, describe, fail

__all__ = ["is_stub", "call_learner"]


class _TimeLimitExceeded(BaseException):
    # A BaseException (like KeyboardInterrupt) so that a learner's `except Exception:` cannot swallow it.
    pass


def is_stub(fn) -> bool:
    """True if `fn`'s body (after its docstring) is only `raise NotImplementedError(...)`."""
    try:
        source = textwrap.dedent(inspect.getsource(fn))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):
        return False
    funcs = [node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    if not funcs:
        return False
    body = [
        stmt
        for stmt in funcs[0].body
        if not (
            isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)
        )
    ]
    if len(body) != 1 or not isinstance(body[0], ast.Raise) or body[0].exc is None:
        return False
    exc = body[0].exc
    name = exc.func if isinstance(exc, ast.Call) else exc
    return isinstance(name, ast.Name) and name.id == "NotImplementedError"


def _snapshot(value):
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, torch.nn.Module):
        return {k: v.detach().clone() for k, v in value.state_dict().items()}
    if isinstance(value, (list, tuple)):
        return [_snapshot(v) for v in value]
    return None


def _same_tensor(before: torch.Tensor, now: torch.Tensor) -> bool:
    now = now.detach()
    if before.dtype != now.dtype or before.shape != now.shape or before.device != now.device:
        return False
    return bool(torch.equal(before, now)) or bool(
        before.is_floating_point()
        and torch.equal(before.isnan(), now.isnan())
        and torch.equal(before.nan_to_num(), now.nan_to_num())
    )


def _unchanged(before, value) -> bool:
    if isinstance(value, torch.Tensor):
        return _same_tensor(before, value)
    if isinstance(value, torch.nn.Module):
        now = value.state_dict()
        return before.keys() == now.keys() and all(_same_tensor(before[k], now[k]) for k in before)
    if isinstance(value, (list, tuple)):
        return len(before) == len(value) and all(_unchanged(b, v) for b, v in zip(before, value))
    return True


def _run_with_time_limit(fn, args, kwargs, seconds: float):
    """fn(*args, **kwargs), interrupted after `seconds` (raises _TimeLimitExceeded)."""
    on_main = threading.current_thread() is threading.main_thread()
    if on_main and hasattr(signal, "setitimer"):

        def on_alarm(signum, frame):
            raise _TimeLimitExceeded()

        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            return fn(*args, **kwargs)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    # Not on the main thread (signals cannot be used): run in a watchdog thread. A call that never
    # returns is abandoned (it keeps running in the background) but the check still reports it.
    result: dict[str, Any] = {}

    def target():
        try:
            result["value"] = fn(*args, **kwargs)
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
            result["error"] = err

    worker = threading.Thread(target=target, daemon=True, name="sdedu-check")
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise _TimeLimitExceeded()
    if "error" in result:
        raise result["error"]
    return result["value"]


def _raised_by_stub(err: NotImplementedError) -> bool:
    # The stub (in this function or in another stub it calls) raises NotImplementedError() with no
    # message; a NotImplementedError from inside torch (an op missing for a dtype) carries one.
    return not str(err)


def call_learner(
    item_id: str,
    fn,
    args: list[tuple[str, Any]],
    *,
    case: str,
    name: str | None = None,
    time_limit: float,
    frozen: tuple[str, ...] | None = None,
    error_hints: dict[str, str] | None = None,
):
    """Call the learner's `fn(*values)` and turn everything that can go wrong into a clear failure.

    Args:
        item_id, case: for the messages.
        fn: the learner's function.  args: [(name, value), ...] passed positionally.
        name: how to call the function in messages (default fn.__name__).
        time_limit: seconds before the call counts as hanging (a `Trial` passes its own).
        frozen: names of arguments that must not change (default: every tensor and module argument).
        error_hints: {substring of an exception message: hint} for exceptions with a known cause.
    Returns:
        whatever fn returned.
    """
    __tracebackhide__ = True
    name = name or getattr(fn, "__name__", "your function")
    if not callable(fn):
        fail(
            item_id,
            case,
            f"expected a function, got {describe(fn)}.",
            "pass the function itself, without calling it: check(..., my_function), not my_function(...).",
        )
    frozen = (
        frozen if frozen is not None else tuple(n for n, v in args if isinstance(v, (torch.Tensor, torch.nn.Module)))
    )
    before = {n: _snapshot(v) for n, v in args if n in frozen}
    try:
        result = _run_with_time_limit(fn, [v for _, v in args], {}, time_limit)
    except _TimeLimitExceeded:
        fail(
            item_id,
            case,
            f"{name} did not return within {time_limit:g} s.",
            "look for a loop that never ends (a `while` whose condition never changes), or a loop over "
            "every element where one tensor operation would do.",
        )
    except NotImplementedError as err:
        if _raised_by_stub(err):
            raise ExerciseIncomplete(
                f"{item_id}: {name} is not implemented yet: replace `raise NotImplementedError()` "
                "with your code, then run this cell again."
            ) from None
        _fail_raised(item_id, case, name, err, error_hints)
    except Exception as err:  # noqa: BLE001 - the learner's code may raise anything
        _fail_raised(item_id, case, name, err, error_hints)
    except SystemExit as err:  # sys.exit() / exit() in the learner's code: a failure, not the end of the kernel
        fail(
            item_id,
            case,
            f"{name} called sys.exit({err.code!r}) (or exit()).",
            "return the result instead: a function that the check calls must not end the program.",
        )
    for n, v in args:
        if n in before and not _unchanged(before[n], v):
            if isinstance(v, torch.nn.Module):
                fail(
                    item_id,
                    case,
                    f"{name} changed the weights of `{n}` (their values or dtype).",
                    f"leave `{n}` as it is: .to(dtype), .half() and .bfloat16() convert a module in place, and so "
                    "does assigning to its parameters.",
                )
            fail(
                item_id,
                case,
                f"{name} changed its input `{n}` in place.",
                f"compute new tensors instead of modifying `{n}`: avoid `{n} += ...`, `{n}[...] = ...` and "
                "methods ending in `_` such as `.mul_()`.",
            )
    return result


def _fail_raised(item_id, case, name, err, error_hints):
    __tracebackhide__ = True
    message = str(err).strip().splitlines()[0] if str(err).strip() else ""
    hint = None
    for needle, text in (error_hints or {}).items():
        if needle.lower() in str(err).lower() or needle == type(err).__name__:
            hint = text
            break
    hint = (
        hint
        or "read the traceback above (the last frames are in your code) and try your function on the case described."
    )
    fail(item_id, case, f"{name} raised {type(err).__name__}: {message}", hint, cause=err)
