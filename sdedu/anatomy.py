"""A model's anatomy: the shapes through a forward pass, where its parameters live, what a step costs.

- `trace_shapes(model, *inputs)`: every submodule's input and output shapes, in the order the
  forward pass calls them (recorded with forward hooks, which are removed afterwards);
  `format_shape_table` prints them.
- `parameter_counts(model)` / `parameter_counts_by_kind(model, kinds)`: where the parameters
  live, by part name or by block type.
- `training_step_seconds(model, x0, schedule)`: the measured cost of one training step.

Nothing here changes a model: the hooks are removed on exit, and `training_step_seconds` trains a copy.
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from sdedu._checks import check_int_range, check_tensor, describe
from sdedu.diffusion import noise_prediction_loss

__all__ = [
    "ShapeRecord",
    "trace_shapes",
    "format_shape_table",
    "parameter_counts",
    "parameter_counts_by_kind",
    "training_step_seconds",
]


# ---- shapes through a forward pass ---------------------------------------------------------


@dataclass
class ShapeRecord:
    """One submodule call: its name, class, input shapes (tensor arguments only), output shape."""

    name: str
    kind: str
    inputs: list
    output: tuple
    parameters: int


def _shapes(value):
    """Shape of a tensor, or shapes of the tensors in a tuple/list (other values are skipped)."""
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    if isinstance(value, (tuple, list)):
        return [tuple(v.shape) for v in value if isinstance(v, torch.Tensor)]
    return None


def trace_shapes(model: nn.Module, *inputs, depth: int = 1, **kwargs) -> list[ShapeRecord]:
    """Run model(*inputs, **kwargs) once and record every submodule call at `depth`, in call order.

    Args:
        model: any nn.Module.
        inputs, kwargs: what model.forward takes.
        depth: 1 for the model's direct children (`down0_res`), 2 for their children, ...
    Returns:
        one `ShapeRecord` per call (a module called twice appears twice).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {describe(model)}")
    depth = check_int_range("depth", depth, 1, 100)
    records: list[ShapeRecord] = []

    def hook_for(name):
        def hook(module, args, output):
            records.append(
                ShapeRecord(
                    name=name,
                    kind=type(module).__name__,
                    inputs=[tuple(a.shape) for a in args if isinstance(a, torch.Tensor)],
                    output=_shapes(output),
                    parameters=sum(p.numel() for p in module.parameters()),
                )
            )

        return hook

    # 1. A hook on every module `depth` levels down (names with depth - 1 dots).
    handles = [
        module.register_forward_hook(hook_for(name))
        for name, module in model.named_modules()
        if name and name.count(".") == depth - 1
    ]
    # 2. One forward pass without gradients; 3. always remove the hooks.
    try:
        with torch.no_grad():
            model(*inputs, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    return records


def format_shape_table(records: list[ShapeRecord]) -> str:
    """The records as an aligned text table: step, name, class, input shape(s), output shape, parameters."""

    def show(shapes):
        if isinstance(shapes, tuple):
            return str(shapes)
        return ", ".join(str(s) for s in shapes) if shapes else "-"

    rows = [("#", "module", "class", "input shape(s)", "output shape", "parameters")]
    rows += [
        (str(i), r.name, r.kind, show(r.inputs), show(r.output), f"{r.parameters:,}") for i, r in enumerate(records)
    ]
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    lines = [
        "  ".join(cell.rjust(w) if c in (0, 5) else cell.ljust(w) for c, (cell, w) in enumerate(zip(row, widths)))
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


# ---- parameter counts ------------------------------------------------------------------------


def parameter_counts(model: nn.Module, depth: int = 1) -> dict[str, int]:
    """Parameters per part: names cut to their first `depth` components, in definition order.

    parameter_counts(unet) -> {"time_embedding": ..., "conv_in": ..., "down0_res": ..., ...}
    The values add up to the model's total.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {describe(model)}")
    depth = check_int_range("depth", depth, 1, 100)
    counts: dict[str, int] = {}
    for name, p in model.named_parameters():
        part = ".".join(name.split(".")[:depth])
        counts[part] = counts.get(part, 0) + p.numel()
    return counts


def parameter_counts_by_kind(model: nn.Module, kinds) -> dict[str, int]:
    """Parameters per block type: each parameter counts for the outermost module of one of `kinds`
    that holds it, else for "other". The values add up to the model's total.

    parameter_counts_by_kind(unet, (ResBlock, SpatialTransformer)) -> {"ResBlock": ..., "SpatialTransformer": ..., "other": ...}
    """
    kinds = tuple(kinds)
    if not kinds or not all(isinstance(k, type) for k in kinds):
        raise TypeError(f"kinds must be a non-empty sequence of nn.Module classes; got {describe(kinds)}")
    owner: dict[int, str] = {}
    for _, module in model.named_modules():  # parents come before their children
        if isinstance(module, kinds):
            for p in module.parameters():
                owner.setdefault(id(p), type(module).__name__)
    counts = {k.__name__: 0 for k in kinds}
    counts["other"] = 0
    for p in model.parameters():
        counts[owner.get(id(p), "other")] += p.numel()
    return counts


# ---- training cost ---------------------------------------------------------------------------


def training_step_seconds(
    model: nn.Module, x0: torch.Tensor, schedule, repeats: int = 3, warmup: int = 1, **model_kwargs
) -> float:
    """Median seconds of one training step (loss, backward, AdamW update) on a copy of `model`.

    The step is Ho et al. 2020's Algorithm 1: loss = || eps - model(x_t, t, **model_kwargs) ||^2.

    Args:
        model: an eps-predictor (it is copied, never changed).
        x0: (B, ...) a training batch (pixels or latents), on the model's device.
        schedule: the NoiseSchedule.
        repeats: timed steps (the median is returned); warmup: untimed steps first.
        model_kwargs: passed to the model, e.g. cond=...
    """
    check_tensor("x0", x0, floating=True)
    repeats = check_int_range("repeats", repeats, 1, 1000)
    warmup = check_int_range("warmup", warmup, 0, 1000)
    model = copy.deepcopy(model).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        loss = noise_prediction_loss(model, x0, schedule, generator=generator, **model_kwargs)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if x0.device.type == "cuda":
            torch.cuda.synchronize(x0.device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)
