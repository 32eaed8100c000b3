"""Making a trained pipeline cheaper to run: what each optimisation buys, and what it costs.

Every function takes a `TinyStableDiffusion` and returns a *new*, working pipeline; the input is
left as it was (the networks are copied, a few MB), so variants can be compared side by side
and combined: `optimize.compile(optimize.quantize_int8(pipe))` (apply `compile` last).

    autocast(pipe, dtype=None)        the UNet runs in bfloat16 (CPU) / float16 (CUDA)
    quantize_int8(pipe)               Linear and Conv2d weights stored as int8 + one scale per channel
    prune(pipe, amount=0.3)           the smallest |weights| set to zero, permanently
    compile(pipe)                     torch.compile on the UNet, falling back to eager if it cannot
    compile_module(module, device)    the same for a network outside a pipeline (the benchmark's MM-DiT)
    cache_text_embeddings(pipe)       each distinct prompt goes through the text encoder once

Each has a module of its own (precision.py, int8.py, pruning.py, compiling.py, text_cache.py);
wrappers.py holds what they share (the wrapper a changed network sits in, copying a pipeline).

Only the UNet is changed by the first four: it runs 2 x n times per image (n steps, two branches
for guidance), the text encoder and the VAE once. `python -m sdedu.bench` measures time, size
and prompt adherence of each on your machine; the notes below say where the gain comes from.

- Lower precision pays only where the hardware has fast low-precision arithmetic (GPUs; CPUs
  with AVX512-BF16 or AMX). A CPU without it emulates bfloat16 and gets *slower*.
- int8 weights make the model 4x smaller on disk and in memory. Here they are dequantised on
  the fly (W = q * scale, Jacob et al. 2018 with the zero point at 0), so the arithmetic is
  still float32: the gain is size, not speed. (PyTorch's eager `torch.ao.quantization` is
  deprecated; its successor, torchao, is a separate package. This is the same idea in 30 lines.)
- Pruning (Han et al. 2015) makes weights sparse, but dense kernels multiply zeros as fast as
  anything else: no speed-up, and a size gain only with a sparse storage format.
- torch.compile (Ansel et al. 2024) traces the UNet and fuses the small element-wise kernels
  (GroupNorm, SiLU, additions) into fewer passes over memory; it compiles for tens of seconds
  on first use and on CPU needs a C++ compiler.
- Cached embeddings skip the text encoder for prompts already seen (and for "", which every
  guided call needs); the text encoder is frozen, as in Stable Diffusion, so this is exact.
"""

from sdedu.optimize.compiling import CompiledModule, compile, compile_module  # noqa: A004 - torch's name, as optimize.compile
from sdedu.optimize.int8 import Int8Conv2d, Int8Linear, quantize_int8, quantize_module_int8, quantize_weight
from sdedu.optimize.precision import AutocastModule, autocast
from sdedu.optimize.pruning import prune, sparsity
from sdedu.optimize.text_cache import CachedTextEncoder, cache_text_embeddings
from sdedu.optimize.wrappers import COMPONENTS, ModuleWrapper, model_size_bytes, unwrap

__all__ = [
    "COMPONENTS",
    "AutocastModule",
    "CachedTextEncoder",
    "CompiledModule",
    "Int8Conv2d",
    "Int8Linear",
    "ModuleWrapper",
    "autocast",
    "cache_text_embeddings",
    "compile",
    "compile_module",
    "model_size_bytes",
    "prune",
    "quantize_int8",
    "quantize_module_int8",
    "quantize_weight",
    "sparsity",
    "unwrap",
]
