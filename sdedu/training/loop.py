"""The training loop every sdedu model shares: seeded, resumable, with EMA, clipping and logging.

One step (Ho et al. 2020, Algorithm 1 for the UNet; any loss for the VAE and text encoder):

    1. generator = step_generator(seed, step)     the step's data and noise depend on (seed, step) only
    2. lr = warm-up then cosine decay             (Loshchilov & Hutter 2017)
    3. loss = loss_fn(model, generator)           optionally under bf16 autocast
    4. backward, clip the gradient norm, AdamW step, EMA update
    5. append (step, loss, lr, seconds) to loss.csv; checkpoint every `checkpoint_every` steps

Because step n's randomness comes from a generator seeded with (seed, n), a run that is
interrupted (Ctrl-C saves a checkpoint before stopping; a crash or SIGKILL keeps the last
checkpoint, see `checkpoint`) and resumed with `resume=True` reproduces the uninterrupted run
exactly: model, EMA, optimizer and loss log. A checkpoint of another run (another seed, step
count or recipe) is refused, and the training time adds up over the segments of a resumed run.
"""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from sdedu._checks import check_int_range, check_number_range, describe
from sdedu.training.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from sdedu.training.distributed import mean_over_ranks, rank_seed, wrap
from sdedu.training.ema import EMA

LOG = "loss.csv"


@dataclass
class TrainConfig:
    """Optimisation settings of one training run.

    steps: total optimizer steps.   lr: peak learning rate (AdamW).
    warmup_steps: linear warm-up from 0 to lr, then cosine decay to min_lr_ratio * lr.
    weight_decay: AdamW's decoupled weight decay.   grad_clip: max gradient norm (0 = off).
    ema_decay: EMA decay (0 = no EMA).   seed: the run's seed.
    bf16: autocast the forward pass to bfloat16 (fast on CPUs with AMX/AVX512-BF16, and GPUs).
    checkpoint_every: steps between checkpoints (the last step always checkpoints).
    """

    steps: int = 1000
    lr: float = 1e-3
    warmup_steps: int = 100
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    seed: int = 0
    bf16: bool = False
    checkpoint_every: int = 200

    def __post_init__(self):
        check_int_range("steps", self.steps, 1, 10**9)
        check_number_range("lr", self.lr, 0.0)
        check_int_range("warmup_steps", self.warmup_steps, 0, 10**9)
        check_number_range("min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)
        check_number_range("weight_decay", self.weight_decay, 0.0)
        check_number_range("grad_clip", self.grad_clip, 0.0)
        check_number_range("ema_decay", self.ema_decay, 0.0, 1.0)
        check_int_range("seed", self.seed, 0, 2**40)  # seed * 1_000_003 + step must fit a generator's 64 bits
        if not isinstance(self.bf16, bool):
            raise TypeError(f"bf16 must be True or False; got {describe(self.bf16)}")
        check_int_range("checkpoint_every", self.checkpoint_every, 1, 10**9)


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warm-up to config.lr, then cosine decay to min_lr_ratio * lr at the last step."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return config.lr * (config.min_lr_ratio + (1.0 - config.min_lr_ratio) * cosine)


def step_generator(seed: int, step: int) -> torch.Generator:
    """A CPU generator whose stream depends only on (seed, step): the key to exact resumption."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step))


def set_threads(threads: int | None = None) -> int:
    """Set torch's CPU threads from `threads`, else $SDEDU_THREADS, else $OMP_NUM_THREADS, else 1.

    On a shared 2-core machine two processes that each use both cores run ~100x slower, so the
    default is one thread; pass more when the machine is yours.
    """
    if threads is None:
        threads = int(os.environ.get("SDEDU_THREADS") or os.environ.get("OMP_NUM_THREADS") or 1)
    threads = check_int_range("threads", int(threads), 1, 1024)
    torch.set_num_threads(threads)
    return threads


@dataclass
class TrainResult:
    """What `train` returns: the trained model, its EMA copy, and how the run went.

    seconds is wall-clock time; cpu_seconds is the CPU time used (all threads), which is what
    the run costs on an otherwise idle machine. Both add up over the segments of a resumed run
    (up to each segment's last checkpoint: steps redone after a crash count once).
    """

    model: nn.Module
    ema_model: nn.Module
    steps: int
    seconds: float
    seconds_per_step: float
    cpu_seconds: float
    final_loss: float
    log_path: Path | None


def _read_log(path: Path, before_step: int) -> list[list[str]]:
    """Rows of an existing loss log up to (not including) `before_step`."""
    if not path.is_file():
        return []
    with path.open() as f:
        rows = list(csv.reader(f))
    return [row for row in rows[1:] if row and int(row[0]) < before_step]


def _start_log(path: Path, rows: list[list[str]]):
    """Write the header and the kept rows under a temporary name, swap it in, open it for appending."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        csv.writer(f).writerows([["step", "loss", "lr", "seconds"], *rows])
    os.replace(tmp, path)
    log_file = path.open("a", newline="")
    return log_file, csv.writer(log_file)


def train(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, torch.Generator], torch.Tensor],
    config: TrainConfig,
    out_dir=None,
    resume: bool = False,
    desc: str = "train",
    progress: bool = True,
    parameters=None,
    distributed=None,
    settings: dict | None = None,
    on_checkpoint: Callable[[int, nn.Module, float, float], None] | None = None,
) -> TrainResult:
    """Train `model` by minimising `loss_fn(model, generator)` (see the module docstring).

    Args:
        model: the network (already on its device).
        loss_fn: builds the step's batch from `generator` and returns a scalar loss.
        config: `TrainConfig`.
        out_dir: folder for loss.csv and the checkpoint (None: no files, no resumption).
        resume: continue from the checkpoint in out_dir if there is one.
        desc: the progress bar's label.
        progress: show a tqdm bar.
        parameters: the parameters to optimise (default: all of model's).
        distributed: a `sdedu.training.distributed.DistributedContext` to train data-parallel
            (DDP): each rank draws its batch from its own seed, only rank 0 writes files.
        settings: JSON-able settings beyond `config` (e.g. the recipe's part) that a resumed run
            must share with the checkpoint; `config` itself is always compared.
        on_checkpoint: called as on_checkpoint(step, model, seconds, cpu_seconds) at every checkpoint
            step (rank 0 only) with the EMA model (else the model) and the training time so far;
            the time it takes (an evaluation, say) is not counted as training time.
    Returns:
        `TrainResult` (seconds and cpu_seconds add up over resumed segments).
    Raises:
        CheckpointError: resume=True and the checkpoint in out_dir belongs to another run.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {describe(model)}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be a function (model, generator) -> scalar loss; got {describe(loss_fn)}")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig; got {describe(config)}")
    out_dir = Path(out_dir) if out_dir is not None else None
    params = list(parameters) if parameters is not None else list(model.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    runner = wrap(model, loss_fn, distributed)  # DDP when distributed: rank 0's weights go to every rank first
    main = distributed is None or distributed.is_main  # only rank 0 writes the log and checkpoints
    ema = EMA(model, config.ema_decay) if config.ema_decay > 0 else None
    run = {"config": {k: v for k, v in asdict(config).items() if k != "checkpoint_every"}, **(settings or {})}
    start, before = 0, {"seconds": 0.0, "cpu_seconds": 0.0, "loss": float("nan")}
    # 1. Resume: check the checkpoint is this run's, restore model, EMA and optimizer, the time
    #    spent so far and the loss log up to the checkpoint.
    if resume and out_dir is not None and has_checkpoint(out_dir):
        device = next(model.parameters()).device
        state = load_checkpoint(out_dir, model, optimizer, ema, device=device, expected=run)
        start = state["step"]
        before.update({k: state["extra"][k] for k in before if k in state["extra"]})
    rows = _read_log(out_dir / LOG, start) if out_dir is not None and start > 0 else []
    log_file = writer = None
    if out_dir is not None and main:
        out_dir.mkdir(parents=True, exist_ok=True)
        log_file, writer = _start_log(out_dir / LOG, rows)

    def spent() -> tuple[float, float]:
        return (
            before["seconds"] + time.perf_counter() - t_start,
            before["cpu_seconds"] + time.process_time() - cpu_start,
        )

    def checkpoint(step):
        if out_dir is not None and main:
            log_file.flush()  # the log's rows up to `step` reach the disk before the checkpoint does
            os.fsync(log_file.fileno())
            seconds, cpu_seconds = spent()
            extra = {"run": run, "desc": desc, "seconds": seconds, "cpu_seconds": cpu_seconds, "loss": loss_value}
            save_checkpoint(out_dir, step, model, optimizer, ema, extra=extra)

    device_type = next(model.parameters()).device.type
    autocast = torch.autocast(device_type, dtype=torch.bfloat16) if config.bf16 else nullcontext()
    model.train()
    loss_value, t_start, cpu_start = before["loss"], time.perf_counter(), time.process_time()
    completed, updating = start, False  # fully finished steps; True while weights are changing
    bar = tqdm(
        range(start, config.steps), desc=desc, initial=start, total=config.steps, disable=not (progress and main)
    )
    try:
        for step in bar:
            t0 = time.perf_counter()
            # 2. This step's randomness and learning rate.
            generator = step_generator(rank_seed(config.seed, distributed.rank) if distributed else config.seed, step)
            lr = learning_rate(step, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            # 3. Forward and backward.
            with autocast:
                loss = runner(generator)  # loss_fn(model, generator), gradients all-reduced under DDP
            loss.backward()
            # 4. Clip the gradient norm, update, average.
            updating = True
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(model)
            # 5. Log and checkpoint.
            loss_value = mean_over_ranks(float(loss.detach()), distributed)
            if writer is not None:
                writer.writerow([step, f"{loss_value:.6g}", f"{lr:.6g}", f"{time.perf_counter() - t0:.4f}"])
            completed, updating = step + 1, False
            if (step + 1) % 20 == 0:
                bar.set_postfix(loss=f"{loss_value:.4f}")
                if log_file is not None:
                    log_file.flush()
            if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
                checkpoint(step + 1)
                if on_checkpoint is not None and main:
                    paused, cpu_paused = time.perf_counter(), time.process_time()
                    on_checkpoint(step + 1, ema.module if ema is not None else model, *spent())
                    t_start += time.perf_counter() - paused  # the callback's time is not training time
                    cpu_start += time.process_time() - cpu_paused
                    model.train()
    except KeyboardInterrupt:
        # Ctrl-C: keep every completed step; a step interrupted before its update is redone on
        # resume. (Interrupted during the update itself, the last periodic checkpoint stands.)
        if log_file is not None:
            log_file.flush()
        if not updating:
            checkpoint(completed)
        raise
    finally:
        bar.close()
        if log_file is not None:
            log_file.close()
    seconds, cpu_seconds = spent()
    model.eval()
    return TrainResult(
        model=model,
        ema_model=ema.module if ema is not None else model,
        steps=config.steps,
        seconds=seconds,
        seconds_per_step=seconds / config.steps,
        cpu_seconds=cpu_seconds,
        final_loss=loss_value,
        log_path=out_dir / LOG if out_dir is not None else None,
    )
