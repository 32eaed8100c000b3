"""Autocast: the UNet runs in bfloat16 (CPU) or float16 (CUDA); the weights stay float32."""

from __future__ import annotations

import torch
from torch import nn

from sdedu.optimize.wrappers import ModuleWrapper, check_pipe, copy_pipeline


class AutocastModule(ModuleWrapper):
    """Runs the wrapped module under `torch.autocast(device, dtype)`; returns float32 outputs.

    Autocast keeps the weights in float32 and casts on the fly, per operation: matrix products
    and convolutions in the low precision, reductions that need range (softmax, norms) in float32.
    """

    def __init__(self, module: nn.Module, dtype: torch.dtype):
        super().__init__(module)
        self.dtype = dtype

    def forward(self, x, *args, **kwargs):
        with torch.autocast(x.device.type, dtype=self.dtype):
            out = self.module(x, *args, **kwargs)
        return out.float()


def autocast(pipe, dtype: torch.dtype | None = None):
    """The pipeline with its UNet under mixed precision (torch.autocast's op lists; float32 islands
    as in float16 mixed-precision training, Micikevicius et al. 2018, which also needs loss scaling).

    Buys: on hardware with fast bf16/fp16 arithmetic (GPU tensor cores; CPUs with AMX or
    AVX512-BF16), about 2x the matrix throughput and half the activation memory.
    Costs: rounding. bfloat16 keeps float32's range with 8 significant bits (7 stored, ~2.4
    decimal digits); float16 has more mantissa but overflows above 65504. On a CPU without bf16
    instructions the casts are emulated and the UNet gets slower: the benchmark shows which.

    Args:
        pipe: a TinyStableDiffusion.
        dtype: torch.bfloat16 or torch.float16; None picks bfloat16 on CPU and float16 on CUDA.
    Returns:
        a new pipeline; `pipe` is unchanged.
    Raises:
        ValueError for a dtype the pipeline's device cannot autocast to.
    """
    check_pipe(pipe)
    device = torch.device(pipe.device)
    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    if dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be torch.bfloat16 or torch.float16 (or None); got {dtype!r}")
    if not torch.amp.is_autocast_available(device.type):
        raise ValueError(f"pipe.device must support torch.autocast (cpu, cuda, ...); got {device}")
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise ValueError(f"dtype torch.bfloat16 is not supported by this GPU ({device}); use torch.float16")
    new = copy_pipeline(pipe, ("unet",))
    new.unet = AutocastModule(new.unet, dtype)
    return new
