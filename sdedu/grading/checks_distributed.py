"""Check for exercise 07: data-parallel training with gradient averaging (torch.distributed, gloo).

In data-parallel training every rank holds a copy of the model and a shard of the batch. After
`loss.backward()` each rank has the gradient of *its* shard's loss; averaging the gradients over
the ranks (an all-reduce) gives every rank the gradient of the whole batch's mean loss, so the
copies take identical steps and stay identical:

    grad = (1 / world_size) * sum over ranks r of grad_r            (Li et al. 2020, PyTorch DDP)

How the check runs. A process group is per-process state and gloo needs one process per rank,
so the check cannot run two ranks inside the notebook's kernel (threads would share one default
group). It writes a small script holding the learner's function (its source, from
`inspect.getsource`, plus the modules, functions and constants it refers to), starts two Python
processes with one thread each (`OMP_NUM_THREADS=1`), and has them train the same tiny model on
their halves of one batch for a few SGD steps, rendezvousing through a file (`file://` init
method). A time limit kills ranks that hang (e.g. when only one rank calls all_reduce). Then:

1. both ranks must end with equal weights;
2. the weights must equal those of single-process training on the whole batch.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import types
from pathlib import Path

import torch
from torch import nn

from sdedu.grading.calling import is_stub
from sdedu.grading.errors import ExerciseIncomplete, fail
from sdedu.grading.registry import register

WORLD_SIZE = 2
LR = 0.1
TIME_LIMIT_S = 240.0

_WORKER = """\
# Written by sdedu.grading (the data-parallel check): one rank of a {world_size}-process gloo run.
import datetime
import json
import sys
import traceback

import torch
import torch.distributed as dist
from torch import nn

torch.set_num_threads(1)

# ---- the learner's code ----
{learner_code}
# ---- end of the learner's code ----


def train(average_gradients, rank, world_size, steps):
    from sdedu.grading.checks_distributed import LR, make_problem, shard

    model, x, y = make_problem()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    x_rank, y_rank = shard(x, y, rank, world_size)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x_rank), y_rank)
        loss.backward()
        average_gradients(model)
        optimizer.step()
        losses.append(loss.item())
    return {{"params": [p.detach().flatten().tolist() for p in model.parameters()], "losses": losses}}


def main():
    rank, world_size, init_file, out_file, steps = sys.argv[1:6]
    rank, world_size, steps = int(rank), int(world_size), int(steps)
    dist.init_process_group("gloo", init_method="file://" + init_file, rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=30))
    results = []
    for fn in [{fn_names}]:
        try:
            results.append(train(fn, rank, world_size, steps))
        except BaseException as err:
            results.append({{"error": type(err).__name__, "message": str(err), "traceback": traceback.format_exc()}})
            break  # after a failed collective the ranks are out of step
    with open(out_file, "w") as f:
        json.dump(results, f)
    if "error" not in results[-1]:
        from sdedu.training.distributed import exit_rank

        exit_rank()  # leave the group and end the process before any C++ destructor can abort it


main()
"""


def make_problem(batch_size: int = 16):
    """The tiny regression problem every rank trains: (model, x (16, 4), y (16, 1)), all seeded."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch_size, 4, generator=g)
    y = torch.sin(x.sum(dim=1, keepdim=True))  # (16, 1)
    return model, x, y


def shard(x, y, rank: int, world_size: int):
    """Rank r's share of the batch: rows r, r + world_size, ... (every rank gets the same count)."""
    return x[rank::world_size], y[rank::world_size]


def train_single_process(steps: int, grad_scale: float = 1.0, only_shard: int | None = None) -> list[torch.Tensor]:
    """Reference: SGD on the whole batch (or on one rank's shard), optionally scaling the gradients."""
    model, x, y = make_problem()
    if only_shard is not None:
        x, y = shard(x, y, only_shard, WORLD_SIZE)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        for p in model.parameters():
            p.grad *= grad_scale
        optimizer.step()
    return [p.detach().flatten() for p in model.parameters()]


def learner_source(fns) -> str:
    """The source of the functions `fns`, with the modules, functions and constants they refer to."""
    lines, functions = [], []
    for fn in fns:
        try:
            functions.append(textwrap.dedent(inspect.getsource(fn)))
        except (OSError, TypeError) as err:
            raise ValueError(f"cannot read the source of {getattr(fn, '__name__', fn)!r}: {err}") from err
        for name in fn.__code__.co_names:
            if name not in fn.__globals__:
                continue
            value = fn.__globals__[name]
            if isinstance(value, types.ModuleType):
                lines.append(f"import {value.__name__} as {name}")
            elif isinstance(value, (int, float, str, bool)):
                lines.append(f"{name} = {value!r}")
            elif isinstance(value, types.FunctionType) and value not in fns:
                try:
                    lines.append(textwrap.dedent(inspect.getsource(value)))
                except (OSError, TypeError):
                    pass
    return "\n".join(dict.fromkeys(lines)) + "\n\n" + "\n\n".join(functions)


def run_data_parallel(average_gradients, steps: int = 3, time_limit: float = TIME_LIMIT_S):
    """Train the tiny problem on 2 gloo ranks (separate processes) with `average_gradients`.

    `average_gradients` may also be a list of functions, run one after the other in the same two
    processes (this is how the tests try many wrong versions without paying for many starts).

    Returns {"params": [rank0, rank1] (lists of flat tensors), "losses": [rank0, rank1]}, or a list
    of those for a list of functions. Raises NotImplementedError for a stub (as calling it would),
    RuntimeError with the rank's traceback when a rank fails, TimeoutError when the ranks hang.
    """
    fns = list(average_gradients) if isinstance(average_gradients, (list, tuple)) else [average_gradients]
    if any(is_stub(fn) for fn in fns):
        raise NotImplementedError()
    code = _WORKER.format(
        world_size=WORLD_SIZE, learner_code=learner_source(fns), fn_names=", ".join(fn.__name__ for fn in fns)
    )
    package_root = str(Path(__file__).resolve().parents[2])
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("SDEDU_GRADING_LOG", None)
    with tempfile.TemporaryDirectory(prefix="sdedu-ddp-") as tmp:
        script = Path(tmp) / "rank.py"
        script.write_text(code)
        init_file = Path(tmp) / "rendezvous"
        outs = [Path(tmp) / f"rank{r}.json" for r in range(WORLD_SIZE)]
        procs = [
            subprocess.Popen(
                [sys.executable, str(script), str(r), str(WORLD_SIZE), str(init_file), str(outs[r]), str(steps)],
                env=env,
                cwd=tmp,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for r in range(WORLD_SIZE)
        ]
        logs, timed_out = [], False
        for proc in procs:
            try:
                logs.append(proc.communicate(timeout=time_limit)[0])
            except subprocess.TimeoutExpired:
                timed_out = True
                for p in procs:
                    p.kill()
                logs.append(proc.communicate()[0])
        results = [json.loads(out.read_text()) if out.exists() else None for out in outs]
    for r, result in enumerate(results):
        failed = next((x for x in result or [] if "error" in x), None)
        if failed is not None and failed["error"] == "NotImplementedError" and not failed["message"]:
            raise NotImplementedError()
        if failed is not None:
            tail = "\n".join(failed["traceback"].rstrip().splitlines()[-8:])
            raise RuntimeError(f"rank {r} raised {failed['error']}: {failed['message'][:300]}\n{tail}")
    if timed_out:
        raise TimeoutError(f"the ranks did not finish within {time_limit:g} s")
    for r, result in enumerate(results):
        if result is None:
            raise RuntimeError(f"rank {r} died without a result:\n{logs[r][-2000:]}")
    runs = [
        {
            "params": [[torch.tensor(p) for p in results[r][i]["params"]] for r in range(WORLD_SIZE)],
            "losses": [results[r][i]["losses"] for r in range(WORLD_SIZE)],
        }
        for i in range(len(fns))
    ]
    return runs if isinstance(average_gradients, (list, tuple)) else runs[0]


def _same(a, b, tol=1e-5) -> bool:
    return all(torch.allclose(x, y, atol=tol, rtol=1e-4) for x, y in zip(a, b))


def judge(run: dict, steps: int) -> tuple[str, str] | None:
    """None if a data-parallel run is right, else (what went wrong, hint)."""
    rank0, rank1 = run["params"]
    if not _same(rank0, rank1):
        hint = "after averaging, every rank must hold the same gradient: all-reduce each parameter's .grad (in place)."
        if any(_same(rank0, train_single_process(steps, scale, only_shard=0)) for scale in (1.0, 1 / WORLD_SIZE)):
            hint = (
                "each rank trained on its own shard alone: the gradients were never exchanged. dist.all_reduce "
                "works in place on the tensor you give it: give it p.grad itself, not a copy."
            )
        return "the two ranks ended with different weights.", hint
    reference = train_single_process(steps)
    if _same(rank0, reference):
        return None
    hint = "average the gradients: the all-reduce sums over ranks, then divide by the world size."
    if _same(rank0, train_single_process(steps, grad_scale=WORLD_SIZE)):
        hint = "the gradients were summed over the ranks but not averaged: divide by dist.get_world_size()."
    elif _same(rank0, train_single_process(steps, grad_scale=1 / WORLD_SIZE)):
        hint = "the gradients were divided by the world size twice (or averaged, then divided again)."
    elif _same(rank0, train_single_process(steps, only_shard=0)):
        hint = "every rank used rank 0's gradient (a broadcast): average all ranks' gradients instead."
    gap = max((a - b).abs().max().item() for a, b in zip(rank0, reference))
    return (
        "both ranks agree, but not with single-process training on the whole batch "
        f"(largest weight difference {gap:.3g}).",
        hint,
    )


@register(
    "distributed_training",
    "average_gradients(model): data-parallel gradient averaging on 2 gloo ranks",
    "07_distributed_training",
)
def check_distributed_training(average_gradients, trial) -> str:  # its ranks have their own time limit
    item = "distributed_training"
    steps = 3
    case = f"1 ({WORLD_SIZE} ranks in separate processes, {steps} SGD steps on halves of a batch of 16)"
    if not callable(average_gradients):
        fail(
            item,
            case,
            f"expected a function, got {type(average_gradients).__name__}.",
            "pass the function itself: check(..., average_gradients).",
        )
    if is_stub(average_gradients):
        raise ExerciseIncomplete(
            f"{item}: average_gradients is not implemented yet: replace `raise NotImplementedError()` "
            "with your code, then run this cell again."
        )
    try:
        run = run_data_parallel(average_gradients, steps=steps)
    except NotImplementedError:
        raise ExerciseIncomplete(
            f"{item}: average_gradients (or a function it calls) is not implemented yet."
        ) from None
    except ValueError as err:
        fail(item, case, str(err), "define average_gradients in a notebook cell or a file, with `def`.")
    except TimeoutError as err:
        fail(
            item,
            case,
            str(err) + ".",
            "every rank must make the same collective calls in the same order; a call made by one rank "
            "only (inside `if rank == 0:`) waits for ever.",
        )
    except RuntimeError as err:
        text = str(err)
        hint = "read the rank's traceback above."
        if "closed by peer" in text or "Timed out" in text or "timeout" in text.lower():
            hint = (
                "every rank must make the same collective calls in the same order; a call made by one rank "
                "only (inside `if rank == 0:`) waits for a partner that never comes."
            )
        fail(item, case, text, hint)
    verdict = judge(run, steps)
    if verdict is not None:
        fail(item, case, *verdict)
    return f"{WORLD_SIZE} ranks agree with each other and with single-process training"
