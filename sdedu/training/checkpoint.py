"""Training checkpoints in safetensors: resume an interrupted run exactly where it stopped.

A checkpoint is two files in the run's folder:

    checkpoint.safetensors   every tensor: model.*, ema.*, optimizer.<param index>.<name>
    checkpoint.json          everything else: step, EMA update count, optimizer hyper-parameters

No pickle anywhere (a pickled checkpoint can run arbitrary code when loaded; safetensors
holds only tensors). Together with the trainer's per-step random generators (the data and
noise of step n depend only on (seed, n)), restoring these is all it takes for a resumed run
to equal an uninterrupted one bit for bit.

Both files are written under temporary names and renamed, so a crash mid-write leaves the
previous checkpoint intact; the step is stored in both and checked on load.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

TENSORS = "checkpoint.safetensors"
STATE = "checkpoint.json"


def has_checkpoint(directory) -> bool:
    """True when `directory` holds a checkpoint written by `save_checkpoint`."""
    directory = Path(directory)
    return (directory / TENSORS).is_file() and (directory / STATE).is_file()


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


def save_checkpoint(directory, step: int, model, optimizer, ema=None, extra: dict | None = None) -> Path:
    """Write the training state after `step` completed steps; returns the tensor file's path."""
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
    # Temporary names, then atomic renames: a crash never leaves a half-written checkpoint.
    tmp_tensors, tmp_state = directory / (TENSORS + ".tmp"), directory / (STATE + ".tmp")
    save_file(tensors, str(tmp_tensors), metadata={"step": str(int(step))})
    tmp_state.write_text(json.dumps(state, indent=1))
    os.replace(tmp_tensors, directory / TENSORS)
    os.replace(tmp_state, directory / STATE)
    return directory / TENSORS


def load_checkpoint(directory, model, optimizer=None, ema=None, device="cpu") -> dict:
    """Restore model, optimizer and EMA from `directory` in place; returns the JSON state.

    The returned dict has "step" (completed steps, where training resumes) and "extra".
    """
    directory = Path(directory)
    if not has_checkpoint(directory):
        raise FileNotFoundError(f"no checkpoint in {directory}: expected {TENSORS} and {STATE}")
    state = json.loads((directory / STATE).read_text())
    tensors = load_file(str(directory / TENSORS), device=str(device))
    from safetensors import safe_open

    with safe_open(str(directory / TENSORS), framework="pt") as f:
        tensor_step = int(f.metadata().get("step", -1))
    if tensor_step != state["step"]:
        raise ValueError(
            f"checkpoint in {directory} is inconsistent: {TENSORS} is from step {tensor_step}, "
            f"{STATE} from step {state['step']}"
        )
    model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
    if ema is not None:
        ema.load_state_dict(
            {k[len("ema.") :]: v for k, v in tensors.items() if k.startswith("ema.")}, state["ema_updates"]
        )
    if optimizer is not None:
        optim_tensors = {k: v for k, v in tensors.items() if k.startswith("optimizer.")}
        optimizer.load_state_dict(_optimizer_from_flat(optim_tensors, state["optimizer"]))
    return state
