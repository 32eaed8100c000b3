"""The oracle: runs a submission's code inside the sandbox and answers calls; it judges nothing.

The grader (`sdedu.grading.judge`) starts this file as `python -c <its source>` in a fresh,
sandboxed process, so it imports nothing from sdedu.grading (that folder is hidden there). Over
two pipes that only this process and the judge hold, it

1. reads the job: the cells to run (setup cells from the master, the learner's solution cells)
   and, per item, the expression its check cell passes to `check` (`q_sample`, `answer_q2`);
2. runs the cells, each in turn, in one namespace (an error is recorded and the next cell runs);
3. replies with each item's answer: a value (tensors, numbers, strings, lists, sets, dicts), or
   the name of a function;
4. then serves calls: the judge sends a function's arguments, the oracle calls it and replies with
   the result and the arguments' state after the call (so in-place changes are seen).

Everything it sends is plain data, read by the judge with `torch.load(weights_only=True)`: the
learner's code can make the oracle reply anything, but a reply is only ever *an answer*, never a
verdict, and the judge draws the hidden inputs after the code has run.

When the job names items to judge inside (checks that need the learner's function itself), the
real checker is imported before any learner code runs and its verdict is sent instead; the judge
reports such items as judged inside the submission's process (docs/GRADING.md).
"""

import io
import linecache
import os
import struct
import sys
import types


def _read(stream):
    import torch

    header = stream.read(8)
    if len(header) < 8:
        raise EOFError("the judge closed the pipe")
    (size,) = struct.unpack(">Q", header)
    return torch.load(io.BytesIO(stream.read(size)), weights_only=False)


def _send(stream, message) -> None:
    import torch

    buffer = io.BytesIO()
    torch.save(message, buffer)
    data = buffer.getvalue()
    stream.write(struct.pack(">Q", len(data)) + data)
    stream.flush()


def _safe(value, depth: int = 0):
    """The value as data torch.load(weights_only=True) accepts; anything else becomes a tagged name."""
    import numpy as np
    import torch

    if depth > 20:
        return {"__unsupported__": "a structure nested too deeply"}
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes, torch.dtype)):
        return value
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, np.ndarray) and value.dtype != object:
        return {"__ndarray__": torch.from_numpy(np.ascontiguousarray(value).copy())}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        items = [_safe(v, depth + 1) for v in value]
        return tuple(items) if isinstance(value, tuple) else items
    if isinstance(value, (set, frozenset)):
        return {_safe(v, depth + 1) for v in value if isinstance(v, (str, int, float, bool))}
    if isinstance(value, dict):
        return {_safe(k, depth + 1): _safe(v, depth + 1) for k, v in value.items() if isinstance(k, (str, int))}
    return {"__unsupported__": type(value).__name__}


def _state(value):
    """What an argument looks like after a call, for the judge to copy back (None: nothing to copy)."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, torch.nn.Module):
        params = dict(value.named_parameters())
        return {
            "state": {k: v.detach().cpu().clone() for k, v in value.state_dict().items()},
            "grads": {k: p.grad.detach().cpu().clone() for k, p in params.items() if p.grad is not None},
        }
    if isinstance(value, torch.optim.Optimizer):
        return {"optimizer": _safe(value.state_dict())}
    if isinstance(value, torch.Generator):
        return {"generator": value.get_state()}
    return None


def _grading_stand_in():
    """`sdedu.grading` as the cells see it here: `check` does nothing (the judge checks), the rest works."""
    module = types.ModuleType("sdedu.grading")

    class ExerciseIncomplete(AssertionError):
        pass

    class ExerciseFailed(AssertionError):
        pass

    class when_implemented:
        def __enter__(self):
            return self

        def __exit__(self, exc_type, exc, tb):
            return exc_type is not None and issubclass(exc_type, NotImplementedError)

    def check(item_id, answer, **options):
        return None

    module.check, module.when_implemented = check, when_implemented
    module.ExerciseIncomplete, module.ExerciseFailed = ExerciseIncomplete, ExerciseFailed
    module.item_ids = list
    return module


def _without_magics(source: str) -> str:
    # IPython's `%magic` and `!shell` lines mean nothing to plain Python.
    return "\n".join("pass" if line.lstrip().startswith(("%", "!")) else line for line in source.split("\n"))


def _runnable_interpreter() -> None:
    """Point sys.executable at an interpreter this user may start (for checks that start processes).

    As `nobody`, the path Python was started by can be out of reach (a venv linking into a private
    home folder) although the interpreter runs; the same version on PATH, given this process's
    sys.path, runs the same code.
    """
    import shutil

    if os.access(sys.executable, os.X_OK):
        return
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    found = next((p for p in (shutil.which(version), f"/usr/bin/{version}") if p and os.access(p, os.X_OK)), None)
    if found:
        sys.executable = found
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)


def main(read_fd: int, write_fd: int) -> None:
    _runnable_interpreter()
    inbox, outbox = os.fdopen(read_fd, "rb"), os.fdopen(write_fd, "wb")
    job = _read(inbox)
    run_check = None
    if job["judge_inside"]:
        import torch

        from sdedu.grading.checker import run_check
        from sdedu.grading.trial import Trial
    else:
        import sdedu

        sys.modules["sdedu.grading"] = sdedu.grading = _grading_stand_in()
    namespace = {"__name__": "__main__"}
    errors = []
    for label, source in job["cells"]:
        source, filename = _without_magics(source), f"<{label}>"
        # As IPython does: keep each cell's source, so tracebacks and inspect.getsource can show it.
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        try:
            exec(compile(source, filename, "exec"), namespace)
        except BaseException as err:  # noqa: BLE001 - a learner's cell may raise anything, even SystemExit
            errors.append((label, f"{type(err).__name__}: {str(err)[:300]}"))
    answers, functions = {}, {}
    for item, expression in job["answers"].items():
        try:
            value = eval(expression, namespace)
        except BaseException as err:  # noqa: BLE001
            answers[item] = ("missing", f"{type(err).__name__}: {str(err)[:300]}")
            continue
        if item in job["judge_inside"]:
            trial = Trial(job["time_limit"], seed=job["seed"], partial=True)
            try:
                with torch.random.fork_rng():
                    summary = run_check(item, value, trial)
                answers[item] = ("verdict", "passed", summary, _safe(trial.cases))
            except AssertionError as err:
                status = "incomplete" if type(err).__name__ == "ExerciseIncomplete" else "failed"
                answers[item] = ("verdict", status, str(err)[:2000], _safe(trial.cases))
            except BaseException as err:  # noqa: BLE001
                answers[item] = ("verdict", "failed", f"{type(err).__name__}: {str(err)[:500]}", [])
        elif callable(value):
            functions[item] = value
            answers[item] = ("function", getattr(value, "__name__", "your function"))
        else:
            answers[item] = ("value", _safe(value))
    _send(outbox, {"errors": errors, "answers": answers})
    while True:
        message = _read(inbox)
        if message["op"] == "done":
            return
        args = message["args"]
        try:
            reply = {"result": _safe(functions[message["item"]](*args))}
        except BaseException as err:  # noqa: BLE001
            stub = isinstance(err, NotImplementedError) and not str(err)
            reply = {"error": type(err).__name__, "message": str(err)[:1000], "stub": stub}
        reply["after"] = [_state(arg) for arg in args]
        _send(outbox, reply)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
