"""torch.compile on the UNet (TorchDynamo + Inductor), falling back to eager mode where it cannot."""

from __future__ import annotations

import os
import shutil
import warnings

import torch
from torch import nn

from sdedu._checks import check_int_range
from sdedu.optimize.wrappers import ModuleWrapper, check_pipe, copy_pipeline


class CompiledModule(ModuleWrapper):
    """A module run through `torch.compile`, falling back to eager mode if compiling fails.

    A failure can appear on any call (torch.compile compiles lazily, and again for new shapes).
    On one, the call is redone eagerly: if eager mode fails too, the input was at fault and its
    error is raised; otherwise a warning is issued once and every later call runs eagerly.
    """

    copyable = False  # apply sdedu.optimize.compile last (see ModuleWrapper.copyable)

    def __init__(self, module: nn.Module, **compile_kwargs):
        super().__init__(module)
        self.compile_kwargs = compile_kwargs
        self.fallback_reason: str | None = None
        try:
            self.compiled = torch.compile(module, **compile_kwargs)
        except Exception as err:  # noqa: BLE001 - e.g. torch.compile unsupported on this Python
            self.compiled = None
            self.fall_back(_reason(err))

    @property
    def is_compiled(self) -> bool:
        return self.fallback_reason is None

    def fall_back(self, reason: str) -> None:
        if self.fallback_reason is None:
            self.fallback_reason = reason
            warnings.warn(
                f"torch.compile failed, running the model eagerly instead: {reason}", RuntimeWarning, stacklevel=3
            )

    def forward(self, *args, **kwargs):
        if self.fallback_reason is not None:
            return self.module(*args, **kwargs)
        try:
            return self.compiled(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - any compiler failure, classified below
            out = self.module(*args, **kwargs)  # raises if the input itself is wrong
            self.fall_back(_reason(err))
            return out


def _reason(err: Exception) -> str:
    """The first line of an exception, for a one-line warning."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()][:2]
    return f"{type(err).__name__}: {' '.join(lines)[:300]}"


def _missing_compiler(backend, device) -> str | None:
    """Why inductor cannot compile for a CPU here (no C++ compiler), or None."""
    if backend != "inductor" or torch.device(device).type != "cpu":
        return None
    candidates = [os.environ.get("CXX"), "g++", "c++", "clang++"]
    if any(c and shutil.which(c) for c in candidates):
        return None
    return "no C++ compiler found (install g++ or clang++, or set CXX); torch.compile's inductor needs one on CPU"


def compile(
    pipe,
    backend="inductor",
    mode: str | None = None,
    warmup: bool = True,  # noqa: A001 - torch's name
    batch_size: int = 2,
    **compile_kwargs,
):
    """The pipeline with its UNet compiled by torch.compile (TorchDynamo + Inductor).

    Buys: fused kernels, so fewer passes over memory for the many small element-wise operations
    of a small UNet; "max-autotune" modes also tune the matrix products. With inductor and no
    `mode`, the weights are also *frozen*: treated as constants, folded into the graph and
    pre-packed once for oneDNN's matrix kernels (inference only; the copy's weights never change).
    On a CPU, inductor's pattern rewrites are also off: one of them turns the written-out attention
    of short sequences back into the fused kernel that is slower at these sizes (sdedu.nn.attention).
    And the compiled graph is driven by C++ rather than Python (`cpp_wrapper`): with ~150 kernels
    of tens of microseconds each, Python's few microseconds per kernel call add up (~5% here).
    The 1x1 convolutions (the ResBlocks' skip projections) become plain matrix products over the
    channels (`conv_1x1_as_mm`): ~60% of the time oneDNN's convolution takes at these sizes (~8% per step).
    Costs: a compilation of tens of seconds on first use (and on new batch sizes), a C++
    compiler on CPU; any failure falls back to the eager model with one warning.

    Args:
        pipe: a TinyStableDiffusion.
        backend: torch.compile backend ("inductor"; "eager" only traces, for testing).
        mode: torch.compile mode (None, "reduce-overhead", "max-autotune", ...).
        warmup: compile now, with one call on a (batch_size, *pipe.latent_shape) input, so that a failure
            shows here (a warning and the eager model) rather than during the first generation.
        batch_size: the warm-up batch (use the batch you will run: 2 x images with guidance).
        compile_kwargs: passed to torch.compile (e.g. dynamic=False, fullgraph=True).
    Returns:
        a new pipeline; `pipe` is unchanged. `new.unet.is_compiled` says whether it compiled.
    """
    check_pipe(pipe)
    check_int_range("batch_size", batch_size, 1, 1_000_000)
    new = copy_pipeline(pipe, ("unet",))
    new.unet = wrapped = compile_module(new.unet, pipe.device, backend, mode, **compile_kwargs)
    if warmup and wrapped.is_compiled:
        _warm_up(new, batch_size)
    return new


def compile_module(module: nn.Module, device="cpu", backend="inductor", mode: str | None = None, **compile_kwargs):
    """`module` in a `CompiledModule` with the options `compile` chooses (see there); compiles on its first call.

    For a network outside a pipeline (the benchmark's MM-DiT); inference only with inductor's default
    mode (frozen weights). Returns the wrapper; `.is_compiled` turns False, with one warning, on a failure.
    """
    if backend == "inductor" and mode is None:
        on_cpu = torch.device(device).type == "cpu"
        cpu_options = {"pattern_matcher": False, "cpp_wrapper": True, "conv_1x1_as_mm": True} if on_cpu else {}
        compile_kwargs.setdefault("options", {"freezing": True, **cpu_options})
    else:
        compile_kwargs["mode"] = mode
    wrapped = CompiledModule(module, backend=backend, **compile_kwargs)
    missing = _missing_compiler(backend, device)
    if missing:
        wrapped.fall_back(missing)
    return wrapped


@torch.no_grad()
def _warm_up(pipe, batch_size: int) -> None:
    """One UNet call on an input of the shape the pipeline feeds it (sizes from the pipeline's configs)."""
    device = torch.device(pipe.device)
    z = torch.zeros(batch_size, *pipe.latent_shape, device=device)  # (B, 4, 8, 8) shipped
    t = torch.tensor(1, device=device).expand(batch_size)  # as the pipeline's loop passes it: guards check strides too
    cond = pipe.encode_prompt([""] * batch_size)[0]  # (B, L, D)
    pipe.unet(z, t, cond)
