"""What every recipe run shares: its folders, the summary of its training, the manifest fields it records.

A recipe that trains on the frozen parts of a base model (the shipped one by default) writes
<out_dir>/<part>/ (loss.csv, checkpoint, from `loop.train`) and <out_dir>/weights/ (safetensors +
manifest.json). Its manifest records the recipe, seed, threads and torch version, and names the
base's parts it was trained on by their sha256, so that a loader can refuse another base.

    recipe.train = run_config(recipe.train, steps, seed, bf16)        (in the recipe's `with_steps`)
    out_dir, weights, base, threads = run_folders(out_dir, base, threads)
    run = train(...)
    save_component(model, name, weights, {"training": training_info(run, *bank_time)})
    record_run(weights, recipe, base, ("vae", "text_encoder"), threads, info, **more_fields)
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import torch

from sdedu.training.loop import TrainConfig, TrainResult, set_threads
from sdedu.weights import SHIPPED, read_manifest, update_manifest


def run_config(config: TrainConfig, steps: int | None, seed: int, bf16: bool) -> TrainConfig:
    """`config` with `seed` and `bf16` set and, for smoke runs, `steps` steps (None: its own), the warm-up
    cut to at most a tenth of them (at least 1): what a recipe's `with_steps` does to each of its parts."""
    config = replace(config, seed=seed, bf16=bf16)
    if steps is None:
        return config
    return replace(config, steps=steps, warmup_steps=min(config.warmup_steps, max(steps // 10, 1)))


def run_folders(out_dir, base=None, threads: int | None = None) -> tuple[Path, Path, Path, int]:
    """(out_dir, its weights folder, the base weights folder (None: the shipped one), the threads set).

    threads: torch CPU threads, set now (None: $SDEDU_THREADS, else $OMP_NUM_THREADS, else 1; `set_threads`).
    """
    threads = set_threads(threads)
    out_dir = Path(out_dir)
    return out_dir, out_dir / "weights", Path(base) if base is not None else SHIPPED, threads


def training_info(run: TrainResult, bank_seconds: float = 0.0, bank_cpu_seconds: float = 0.0) -> dict:
    """A component's "training" summary: wall and CPU seconds (plus the time spent before the loop,
    e.g. encoding a latent bank), seconds per step, steps and the final loss."""
    return {
        "train_seconds": run.seconds + bank_seconds,
        "cpu_seconds": run.cpu_seconds + bank_cpu_seconds,
        "seconds_per_step": run.seconds_per_step,
        "steps": run.steps,
        "final_loss": run.final_loss,
    }


def record_run(
    weights, recipe, base, base_parts: tuple[str, ...], threads: int, info: dict | None = None, **fields
) -> dict:
    """Merge into the manifest in `weights` the recipe (a dataclass with a `seed`), seed, threads, torch
    version, the sha256 of `base_parts` of the base folder (as "base"), the times of `info` (a
    `training_info`) as training_seconds and training_cpu_seconds, and `fields`; returns the manifest."""
    components = read_manifest(base)["components"]
    if info is not None:
        fields.update(training_seconds=info["train_seconds"], training_cpu_seconds=info["cpu_seconds"])
    return update_manifest(
        weights,
        recipe=asdict(recipe),
        seed=recipe.seed,
        threads=threads,
        torch_version=torch.__version__,
        base={name: {"sha256": components[name]["sha256"]} for name in base_parts},
        **fields,
    )
