"""Training checkpoints in safetensors: resume an interrupted run exactly where it stopped.

A checkpoint is one file in the run's folder, `checkpoint.safetensors`: every tensor (model.*,
ema.*, optimizer.<param index>.<name>) and, in its metadata, the JSON state (step, EMA update
count, optimizer hyper-parameters, accumulated training time, the run's settings).

No pickle anywhere (a pickled checkpoint can run arbitrary code when loaded; safetensors
holds only tensors). Together with the trainer's per-step random generators (the data and
noise of step n depend only on (seed, n)), restoring these is all it takes for a resumed run
to equal an uninterrupted one bit for bit.

Crash safety: the new checkpoint is written under a temporary name, flushed to disk (fsync),
and only then swapped in with one atomic rename (and the folder fsynced). Until that rename
the previous checkpoint is untouched, so a crash at any instant (power cut, SIGKILL) leaves
either the previous complete checkpoint or the new complete one, never a mixture.

Resuming checks first that the checkpoint belongs to the same run: `load_checkpoint(...,
expected=settings)` refuses one whose recorded settings (seed, steps, learning rate, the
recipe's part...) differ, naming the first field that does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

CHECKPOINT = "checkpoint.safetensors"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that belongs to another run."""


def has_checkpoint(directory) -> bool:
    """True when `directory` holds a checkpoint written by `save_checkpoint`."""
    return (Path(directory) / CHECKPOINT).is_file()


def _optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Split optimizer.state_dict() into tensors (for safetensors) and the rest (for JSON)."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, per_param in state["state"].items():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_from_flat(tensors: dict, meta: dict) -> dict:
    state: dict = {}
    for name, value in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = value
    for name, value in meta["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def _fsync(path: Path) -> None:
    """Flush a file (or a folder's entries) from the OS cache to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(directory, step: int, model, optimizer, ema=None, extra: dict | None = None) -> Path:
    """Write the training state after `step` completed steps, crash-safely; returns the file's path.

    extra: JSON-able facts kept with the state (the run's settings, the time spent so far).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    optim_tensors, optim_meta = _optimizer_to_flat(optimizer)
    tensors.update(optim_tensors)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    state = {
        "step": int(step),
        "ema_updates": ema.num_updates if ema is not None else None,
        "optimizer": optim_meta,
        "extra": extra or {},
    }
    # 1. Write the new checkpoint beside the old one and flush it to disk.
    tmp = directory / (CHECKPOINT + ".tmp")
    save_file(tensors, str(tmp), metadata={"state": json.dumps(state)})
    _fsync(tmp)
    # 2. Swap it in with one atomic rename; then make the rename itself durable.
    os.replace(tmp, directory / CHECKPOINT)
    _fsync(directory)
    return directory / CHECKPOINT


def read_state(directory) -> dict:
    """The JSON state of the checkpoint in `directory`, without loading its tensors."""
    path = Path(directory) / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint in {directory}: expected {CHECKPOINT}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        return json.loads(metadata["state"])
    except (SafetensorError, KeyError, json.JSONDecodeError) as error:
        raise CheckpointError(
            f"{path} is not a checkpoint this version of sdedu can read ({type(error).__name__}: {error}); "
            "train again without --resume, or into another folder"
        ) from None


def check_same_run(directory, recorded: dict, expected: dict) -> None:
    """Raise CheckpointError naming the first setting whose value differs between the two runs."""
    expected = json.loads(json.dumps(expected))  # tuples -> lists, as the checkpoint stores them

    def first_difference(a, b, where):
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                found = first_difference(a.get(key), b.get(key), f"{where}.{key}" if where else key)
                if found:
                    return found
            return None
        return None if a == b else (where, a, b)

    found = first_difference(recorded, expected, "")
    if found:
        where, old, new = found
        raise CheckpointError(
            f"cannot resume from the checkpoint in {directory}: it was written with {where} = {old!r}, "
            f"this run has {where} = {new!r}; resume with the same settings, or train into another folder"
        )


def load_checkpoint(directory, model, optimizer=None, ema=None, device="cpu", expected: dict | None = None) -> dict:
    """Restore model, optimizer and EMA from `directory` in place; returns the JSON state.

    expected: the settings this run has; when given, a checkpoint whose recorded settings
        (its state's extra["run"]) differ is refused before anything is loaded.
    The returned dict has "step" (completed steps, where training resumes) and "extra".
    """
    directory = Path(directory)
    state = read_state(directory)
    if expected is not None:
        check_same_run(directory, state["extra"].get("run", {}), expected)
    tensors = load_file(str(directory / CHECKPOINT), device=str(device))
    model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
    if ema is not None:
        ema.load_state_dict(
            {k[len("ema.") :]: v for k, v in tensors.items() if k.startswith("ema.")}, state["ema_updates"]
        )
    if optimizer is not None:
        optim_tensors = {k: v for k, v in tensors.items() if k.startswith("optimizer.")}
        optimizer.load_state_dict(_optimizer_from_flat(optim_tensors, state["optimizer"]))
    return state
