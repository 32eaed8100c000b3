"""Data-parallel training on PyTorch's own engine: torch.distributed + DistributedDataParallel.

    torchrun --nproc_per_node=2 -m sdedu.train unet --out runs/tiny-sd      (2 processes, 1 machine)

Data parallelism (Li et al. 2020, "PyTorch Distributed"): every process (a *rank*) holds a full
copy of the model and computes the loss on its share of the global batch, B / world_size
examples. After `loss.backward()` DDP all-reduces the gradients, so every rank holds

    grad = (1 / world_size) * sum over ranks r of grad_r

the gradient of the global batch's mean loss, takes the same optimizer step, and the copies
stay identical. One step of N ranks on batches of B / N equals one single-process step on the
global batch of B (up to floating-point summation order). What sdedu adds around DDP:

- `init_from_env`: reads what `torchrun` sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, ...),
  joins the process group (gloo on CPU, nccl on CUDA, one GPU per local rank), divides the CPU
  threads between the ranks on a machine, and gives every wait a timeout, so a rank that dies
  makes the others fail instead of hanging. Without torchrun it returns a single-process context.
- `rank_seed`: one seed per rank, so ranks draw different examples and noise. The shapes world is
  an endless stream, so the split of the data *is* the split of the random streams: rank r
  draws its B / N examples of step n from a generator seeded with (rank_seed(seed, r), n).
  Rank 0's seed is the run's seed, so one process reproduces a plain single-process run.
- `local_batch_size`: B / N, and a clear error when N does not divide B.
- `LossModule` + `wrap`: DDP synchronises gradients for whatever its `forward` computed; wrapping
  the *loss function* (not just the model) lets any loss (the VAE's, the contrastive one) be
  synchronised. DDP also broadcasts rank 0's initial weights to every rank.
- Only rank 0 writes checkpoints, logs and weights (`DistributedContext.is_main`).
- `exit_rank`: the last line of every rank's script. It leaves the process group (`cleanup`) and
  ends the process with `os._exit`, so no C++ destructor of the communication library runs at
  interpreter exit (the cause of an occasional SIGABRT after all the work was done).

The multi-machine launch (torchrun's rendezvous) is in docs/DISTRIBUTED.md.
"""

from __future__ import annotations

import datetime
import os
import sys
import traceback
import warnings
from dataclasses import dataclass, field
from typing import NoReturn

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from sdedu._checks import check_int_range, check_number_range

RANK_SEED_STRIDE = 1_000_003  # rank r's seed is seed + r * stride: far from any other run's seed
DEFAULT_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in a data-parallel run (the defaults: a single process).

    rank: this process's index among all processes, 0 .. world_size - 1.
    world_size: number of processes (N).
    local_rank, local_world_size: the same on this machine (the GPU index on CUDA).
    backend: "gloo", "nccl", or None when no process group was started.
    device: where this rank's model lives.
    threads: torch CPU threads of this rank.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    threads: int = 1

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the one that writes checkpoints, logs and weights."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer; got {value!r}") from None


def threads_per_rank(local_world_size: int, threads: int | None = None) -> int:
    """CPU threads for each rank: `threads`, else $SDEDU_THREADS, else this machine's cores / ranks on it.

    Ranks on one machine that each use every core fight over them (~100x slower on 2 cores).
    torchrun sets OMP_NUM_THREADS=1 by default; this division replaces it with a fair share.
    """
    check_int_range("local_world_size", local_world_size, 1, 1_000_000)
    if threads is None and os.environ.get("SDEDU_THREADS"):
        threads = _env_int("SDEDU_THREADS", 1)
    if threads is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        threads = max(1, cores // local_world_size)
    return check_int_range("threads", int(threads), 1, 1024)


def init_from_env(
    device=None, backend: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S, threads: int | None = None
) -> DistributedContext:
    """Join the process group that torchrun describes in the environment (or stay single-process).

    Args:
        device: "cpu", "cuda" (then cuda:LOCAL_RANK), or None: CUDA when available, else CPU.
        backend: "gloo" or "nccl"; None picks nccl for CUDA and gloo for CPU.
        timeout_s: the longest any collective (or the rendezvous) may wait for the other ranks.
        threads: CPU threads per rank (default: `threads_per_rank`).
    Returns:
        the `DistributedContext`; torch's thread count and CUDA device are set accordingly.
    Raises:
        ValueError for a backend that cannot drive the device (nccl needs CUDA), a world size
        or rank out of range, or a device index that does not exist.
    """
    check_number_range("timeout_s", timeout_s, 1.0)
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    local_world_size = _env_int("LOCAL_WORLD_SIZE", world_size)
    check_int_range("WORLD_SIZE", world_size, 1, 1_000_000)
    check_int_range("RANK", rank, 0, world_size - 1)
    check_int_range("LOCAL_RANK", local_rank, 0, max(local_world_size - 1, 0))
    # 1. The device: one GPU per local rank, or the CPU.
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {device} was asked for but no GPU is visible (torch.cuda.is_available() is False)"
            )
        index = local_rank if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK {local_rank} needs GPU {index}; this machine has {torch.cuda.device_count()}: "
                "use --nproc_per_node <= the number of GPUs"
            )
        device = torch.device("cuda", index)
        torch.cuda.set_device(device)
    # 2. The backend: nccl talks GPU to GPU, gloo works on CPU tensors (and CUDA, slower).
    if backend is None:
        backend = "nccl" if device.type == "cuda" else "gloo"
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend must be 'gloo' or 'nccl' (or None); got {backend!r}")
    if backend == "nccl" and device.type != "cuda":
        raise ValueError(f"backend 'nccl' needs CUDA tensors; device is {device}: use backend='gloo' on CPU")
    # 3. Threads: a fair share of this machine's cores.
    threads = threads_per_rank(local_world_size, threads)
    torch.set_num_threads(threads)
    if world_size == 1:
        return DistributedContext(device=device, threads=threads)
    # 4. Rendezvous (MASTER_ADDR/MASTER_PORT from torchrun), with a timeout on every wait.
    if not dist.is_initialized():
        dist.init_process_group(
            backend,
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout_s),
            device_id=device if device.type == "cuda" else None,
        )
    return DistributedContext(
        rank=rank,
        world_size=world_size,
        local_rank=local_rank,
        local_world_size=local_world_size,
        backend=backend,
        device=device,
        threads=threads,
    )


def rank_seed(seed: int, rank: int) -> int:
    """Rank r's seed: seed + r * RANK_SEED_STRIDE (rank 0 keeps the run's seed)."""
    return int(seed) + int(rank) * RANK_SEED_STRIDE


def local_batch_size(global_batch_size: int, world_size: int, name: str = "batch_size") -> int:
    """Each rank's share B / N of the global batch; a ValueError when N does not divide B."""
    check_int_range(name, global_batch_size, 1, 10**9)
    check_int_range("world_size", world_size, 1, 10**6)
    if global_batch_size % world_size:
        raise ValueError(
            f"{name} {global_batch_size} (the global batch) must be divisible by the world size {world_size} "
            f"so that every rank gets the same share; use a multiple of {world_size} (e.g. "
            f"{(global_batch_size // world_size + 1) * world_size}) or another --nproc_per_node"
        )
    return global_batch_size // world_size


class LossModule(nn.Module):
    """`forward(generator) = loss_fn(model, generator)`: lets DDP synchronise any loss.

    DDP prepares its gradient all-reduce inside its own forward; a loss computed by calling
    `model.loss(...)` (the VAE) or helper functions would bypass it if only the model were wrapped.
    """

    def __init__(self, model: nn.Module, loss_fn):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, generator: torch.Generator) -> torch.Tensor:
        return self.loss_fn(self.model, generator)


def wrap(model: nn.Module, loss_fn, context: DistributedContext | None = None):
    """A callable `generator -> loss` for the training loop: plain, or through DDP when distributed.

    Wrapping broadcasts rank 0's parameters and buffers to every rank, so build the EMA copy
    and the optimizer's view of the weights after calling this.
    """
    module = LossModule(model, loss_fn)
    if context is None or not context.is_distributed:
        return module
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids)


def mean_over_ranks(value: float, context: DistributedContext | None = None) -> float:
    """The average of a number over all ranks (e.g. the loss, for the log); itself when single-process."""
    if context is None or not context.is_distributed:
        return float(value)
    tensor = torch.tensor(
        [float(value)], dtype=torch.float64, device=context.device if context.backend == "nccl" else "cpu"
    )
    dist.all_reduce(tensor)
    return float(tensor.item()) / context.world_size


def barrier(context: DistributedContext | None = None) -> None:
    """Wait for every rank (no-op when single-process)."""
    if context is not None and context.is_distributed and dist.is_initialized():
        dist.barrier()


def cleanup(timeout_s: float = 30.0) -> None:
    """Leave the process group, if one was joined; with gloo, first wait for every rank to get here.

    The wait matters: a gloo rank that tears down its connections while another is still using
    them can abort that other rank ("terminate called without an active exception"). It is a
    monitored barrier, so a rank that never arrives (it crashed) costs at most `timeout_s` and a
    warning, never a hang. A script's last line is `exit_rank()`, which calls this and then ends
    the process before any C++ destructor can abort it at interpreter exit.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    if dist.get_backend() == "gloo" and dist.get_world_size() > 1:
        try:
            dist.monitored_barrier(timeout=datetime.timedelta(seconds=timeout_s))
        except RuntimeError as err:
            warnings.warn(f"not every rank reached cleanup(): {str(err).splitlines()[0]}", RuntimeWarning, stacklevel=2)
    dist.destroy_process_group()


def exit_rank(status: int = 0, timeout_s: float = 30.0) -> NoReturn:
    """End this rank's process: leave the process group (`cleanup`), flush stdout/stderr, `os._exit(status)`.

    Call it as the last line of every script that torchrun (or any launcher of ranks) starts.
    Why not a plain return: at interpreter exit Python finalises its objects and then the C++
    runtime runs static destructors. A gloo process group and its transport own worker threads
    (`std::thread`); one whose object is still alive at that point (kept by a DDP reducer, a
    reference cycle, a pending work item) is destroyed while its thread is still joinable, and
    the C++ runtime then calls `std::terminate`: "terminate called without an active exception",
    SIGABRT, exit status -6, although every result was already written. Whether such an object
    is still alive depends on garbage-collection and thread timing, so it happens rarely, more
    often on a loaded machine. `os._exit` ends the process without finalisation or destructors;
    the kernel closes the sockets and files. Everything a rank must do is done before: `cleanup`
    waits for every rank (so none is still talking to this one) and destroys the group, and the
    Python-level output buffers are flushed here (files written with `with open(...)` are closed).
    Not a clean-up for an exception: a script that raises ends with its traceback, as usual; if
    leaving the group itself fails, its traceback is printed and the status is 1.
    """
    check_int_range("status", status, 0, 255)
    try:
        cleanup(timeout_s)
    except BaseException:  # reported, then the process ends: nothing may escape os._exit
        traceback.print_exc()
        status = 1
    finally:
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            try:
                if stream is not None:
                    stream.flush()
            except (OSError, ValueError):  # closed or broken: nothing left to save
                pass
        os._exit(status)
