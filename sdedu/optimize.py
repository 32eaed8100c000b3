"""Making a trained pipeline cheaper to run: what each optimisation buys, and what it costs.

Every function takes a `TinyStableDiffusion` and returns a *new*, working pipeline; the input is
left as it was (the networks are copied, a few MB), so variants can be compared side by side
and combined: `optimize.compile(optimize.quantize_int8(pipe))` (apply `compile` last).

    autocast(pipe, dtype=None)        the UNet runs in bfloat16 (CPU) / float16 (CUDA)
    quantize_int8(pipe)               Linear and Conv2d weights stored as int8 + one scale per channel
    prune(pipe, amount=0.3)           the smallest |weights| set to zero, permanently
    compile(pipe)                     torch.compile on the UNet, falling back to eager if it cannot
    cache_text_embeddings(pipe)       each distinct prompt goes through the text encoder once

Only the UNet is changed by the first four: it runs 2 x N times per image (N steps, two branches
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

from __future__ import annotations

import copy
import os
import shutil
import warnings
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune as torch_prune

from sdedu._checks import check_int_range, check_number_range, describe

COMPONENTS = ("unet", "text_encoder", "vae")


# ---- helpers shared by the optimisations -----------------------------------------------------


class ModuleWrapper(nn.Module):
    """A module around another one that still answers to the inner module's attributes.

    `wrapper.config`, `wrapper.set_store_attention(...)` and the like reach the wrapped UNet, so
    the pipeline and the notebooks need not know that it is wrapped.
    """

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            inner = self.__dict__.get("_modules", {}).get("module")
            if inner is None:
                raise
            return getattr(inner, name)


def unwrap(module: nn.Module) -> nn.Module:
    """The innermost module under any number of sdedu.optimize wrappers."""
    while isinstance(module, ModuleWrapper):
        module = module.module
    return module


def model_size_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers (each tensor counted once)."""
    seen, total = set(), 0
    for tensor in list(module.parameters()) + list(module.buffers()):
        if id(tensor) not in seen:
            seen.add(id(tensor))
            total += tensor.numel() * tensor.element_size()
    return total


def sparsity(module: nn.Module) -> float:
    """Fraction of exactly-zero entries among the weights of the Linear and Conv2d layers."""
    zeros = total = 0
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d, Int8Linear, Int8Conv2d)):
            weight = layer.qweight if isinstance(layer, (Int8Linear, Int8Conv2d)) else layer.weight
            zeros += int((weight == 0).sum())
            total += weight.numel()
    return zeros / max(total, 1)


def _copy_pipeline(pipe, components=COMPONENTS):
    """A shallow copy of the pipeline whose named networks are deep copies."""
    for name in components:
        if isinstance(getattr(pipe, name), CompiledModule):
            raise ValueError(f"pipe.{name} is already compiled: apply sdedu.optimize.compile last")
    new = copy.copy(pipe)
    for name in components:
        setattr(new, name, copy.deepcopy(getattr(pipe, name)))
    return new


def _check_pipe(pipe):
    missing = [name for name in ("unet", "text_encoder", "vae", "device") if not hasattr(pipe, name)]
    if missing:
        raise TypeError(f"pipe must be a TinyStableDiffusion (with unet, text_encoder, vae, device); got {describe(pipe)}")
    return pipe


def _check_components(components) -> tuple:
    if isinstance(components, str):
        components = (components,)
    components = tuple(components)
    unknown = [c for c in components if c not in COMPONENTS]
    if not components or unknown:
        raise ValueError(f"components must be a non-empty subset of {COMPONENTS}; got {components!r}")
    return components


# ---- 1. autocast -------------------------------------------------------------------------------


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
    """The pipeline with its UNet under mixed precision (Micikevicius et al. 2018).

    Buys: on hardware with fast bf16/fp16 arithmetic (GPU tensor cores; CPUs with AMX or
    AVX512-BF16), about 2x the matrix throughput and half the activation memory.
    Costs: rounding. bfloat16 keeps float32's range with an 8-bit mantissa (~3 significant
    digits); float16 has more mantissa but overflows above 65504. On a CPU without bf16
    instructions the casts are emulated and the UNet gets slower: the benchmark shows which.

    Args:
        pipe: a TinyStableDiffusion.
        dtype: torch.bfloat16 or torch.float16; None picks bfloat16 on CPU and float16 on CUDA.
    Returns:
        a new pipeline; `pipe` is unchanged.
    Raises:
        ValueError for a dtype the pipeline's device cannot autocast to.
    """
    _check_pipe(pipe)
    device = torch.device(pipe.device)
    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    if dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be torch.bfloat16 or torch.float16 (or None); got {dtype!r}")
    if not torch.amp.is_autocast_available(device.type):
        raise ValueError(f"pipe.device must support torch.autocast (cpu, cuda, ...); got {device}")
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise ValueError(f"dtype torch.bfloat16 is not supported by this GPU ({device}); use torch.float16")
    new = _copy_pipeline(pipe, ("unet",))
    new.unet = AutocastModule(new.unet, dtype)
    return new


# ---- 2. int8 weights -----------------------------------------------------------------------------


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8 quantisation (zero point 0).

        scale_o = max_i |W[o, i]| / 127,   q = clamp(round(W / scale_o), -127, 127)
        W ~= q * scale, with |W - q * scale| <= scale / 2

    Args:
        weight: (out, ...) float weight (Linear (out, in) or Conv2d (out, in, kh, kw)).
    Returns:
        q (same shape, int8) and scale (out, 1, ...) float32, broadcastable against q.
    """
    out = weight.shape[0]
    flat = weight.detach().float().reshape(out, -1)  # (out, fan_in)
    # An all-zero row (a pruned neuron) would give scale 0 and 0/0: keep the scale positive.
    scale = (flat.abs().amax(dim=1, keepdim=True) / 127).clamp(min=1e-12)  # (out, 1)
    q = torch.round(flat / scale).clamp(-127, 127).to(torch.int8)  # (out, fan_in)
    shape = (out,) + (1,) * (weight.ndim - 1)
    return q.reshape(weight.shape), scale.reshape(shape)


class Int8Linear(nn.Module):
    """A Linear layer whose weight is stored as int8 and dequantised on every call.

    y = x (q * scale)^T + b        q (out, in) int8, scale (out, 1) float32
    """

    def __init__(self, linear: nn.Linear):
        super().__init__()
        q, scale = quantize_weight(linear.weight)
        self.register_buffer("qweight", q)
        self.register_buffer("scale", scale)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def dequantized_weight(self, dtype=torch.float32) -> torch.Tensor:
        return self.qweight.to(dtype) * self.scale.to(dtype)  # (out, in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dequantized_weight(x.dtype), bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per-channel"


class Int8Conv2d(nn.Module):
    """A Conv2d layer whose weight is stored as int8 and dequantised on every call.

    y = conv2d(x, q * scale) + b   q (out, in/groups, kh, kw) int8, scale (out, 1, 1, 1) float32
    """

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        if conv.padding_mode != "zeros":
            raise ValueError(f"conv must use padding_mode='zeros'; got {conv.padding_mode!r}")
        q, scale = quantize_weight(conv.weight)
        self.register_buffer("qweight", q)
        self.register_buffer("scale", scale)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone(), requires_grad=False)
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups

    def dequantized_weight(self, dtype=torch.float32) -> torch.Tensor:
        return self.qweight.to(dtype) * self.scale.to(dtype)  # (out, in/groups, kh, kw)

    @property
    def weight(self) -> torch.Tensor:
        """The float32 kernel, for code that reads conv.weight (e.g. a 1x1 conv applied as F.linear)."""
        return self.dequantized_weight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.conv2d(x, self.dequantized_weight(x.dtype), bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return f"{tuple(self.qweight.shape)}, stride={self.stride}, padding={self.padding}, int8 per-channel"


def quantize_module_int8(module: nn.Module) -> nn.Module:
    """Replace every nn.Linear and nn.Conv2d inside `module` (in place) by its int8 version."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear):
            setattr(module, name, Int8Linear(child))
        elif isinstance(child, nn.Conv2d):
            setattr(module, name, Int8Conv2d(child))
        else:
            quantize_module_int8(child)
    return module


def quantize_int8(pipe, components=("unet",)):
    """The pipeline with int8 weights in its Linear and Conv2d layers (weight-only quantisation).

    Buys: those weights take 1 byte instead of 4 (the UNet ~4x smaller; biases, norms and
    scales stay float32), which matters for download size and for memory-bound GPUs.
    Costs: each weight moves by at most half a step (scale / 2, about 0.4% of the row's largest
    weight); and since the weights are dequantised to float32 on every call, a CPU computes as
    much as before plus the dequantisation (a few % slower). A fast int8 kernel (torchao,
    or a GPU's int8 tensor cores) would turn the size gain into a speed gain.

    Args:
        pipe: a TinyStableDiffusion.
        components: which networks to quantise, from ("unet", "text_encoder", "vae").
    Returns:
        a new pipeline; `pipe` is unchanged.
    """
    _check_pipe(pipe)
    components = _check_components(components)
    new = _copy_pipeline(pipe, components)
    for name in components:
        quantize_module_int8(unwrap(getattr(new, name)))
    return new


# ---- 3. magnitude pruning ------------------------------------------------------------------------


def _prunable(module: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def prune(pipe, amount: float = 0.3, components=("unet",), scope: str = "layer"):
    """The pipeline with the fraction `amount` of smallest-magnitude weights set to zero (Han et al. 2015).

    Uses torch.nn.utils.prune (L1 unstructured), then `prune.remove` so the zeros are baked into
    plain weights: no masks, no hooks, nothing to re-apply.

    Buys: sparsity, i.e. a smaller model *if* stored in a sparse format, and faster only with
    sparse kernels; with PyTorch's dense kernels the time is unchanged.
    Costs: accuracy, growing with `amount` (the benchmark measures prompt adherence).

    Args:
        pipe: a TinyStableDiffusion.
        amount: fraction of each layer's weights (scope="layer") or of all of them together
            (scope="global", which prunes layers with small weights harder) to zero, in [0, 1).
        components: networks to prune, from ("unet", "text_encoder", "vae").
        scope: "layer" or "global".
    Returns:
        a new pipeline; `pipe` is unchanged.
    """
    _check_pipe(pipe)
    amount = check_number_range("amount", amount, 0.0, 0.999)
    components = _check_components(components)
    if scope not in ("layer", "global"):
        raise ValueError(f"scope must be 'layer' or 'global'; got {scope!r}")
    new = _copy_pipeline(pipe, components)
    for name in components:
        targets = _prunable(unwrap(getattr(new, name)))
        if any(isinstance(m, (Int8Linear, Int8Conv2d)) for m in unwrap(getattr(new, name)).modules()):
            raise ValueError(f"pipe.{name} is int8-quantised: prune first, then quantize_int8")
        for module, param in targets:  # torch's pruning flattens weights with view(): NCHW for now
            setattr(module, param, nn.Parameter(getattr(module, param).detach().contiguous()))
        if scope == "global":
            torch_prune.global_unstructured(targets, pruning_method=torch_prune.L1Unstructured, amount=amount)
        else:
            for module, param in targets:
                torch_prune.l1_unstructured(module, param, amount=amount)
        for module, param in targets:
            torch_prune.remove(module, param)  # weight = weight_orig * mask, permanently
    return new.to(new.device)  # back to the pipeline's layouts (a channels-last UNet)


# ---- 4. torch.compile ----------------------------------------------------------------------------


class CompiledModule(ModuleWrapper):
    """A module run through `torch.compile`, falling back to eager mode if compiling fails.

    A failure can appear on any call (torch.compile compiles lazily, and again for new shapes).
    On one, the call is redone eagerly: if eager mode fails too, the input was at fault and its
    error is raised; otherwise a warning is issued once and every later call runs eagerly.
    """

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
            warnings.warn(f"torch.compile failed, running the model eagerly instead: {reason}", RuntimeWarning, stacklevel=3)

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


def compile(pipe, backend="inductor", mode: str | None = None, warmup: bool = True,  # noqa: A001 - torch's name
            batch_size: int = 2, **compile_kwargs):
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
        warmup: compile now, with one call on a (batch_size, 4, 8, 8) input, so that a failure
            shows here (a warning and the eager model) rather than during the first generation.
        batch_size: the warm-up batch (use the batch you will run: 2 x images with guidance).
        compile_kwargs: passed to torch.compile (e.g. dynamic=False, fullgraph=True).
    Returns:
        a new pipeline; `pipe` is unchanged. `new.unet.is_compiled` says whether it compiled.
    """
    _check_pipe(pipe)
    check_int_range("batch_size", batch_size, 1, 1_000_000)
    new = _copy_pipeline(pipe, ("unet",))
    unet = new.unet
    if backend == "inductor" and mode is None:
        on_cpu = torch.device(pipe.device).type == "cpu"
        cpu_options = {"pattern_matcher": False, "cpp_wrapper": True, "conv_1x1_as_mm": True} if on_cpu else {}
        compile_kwargs.setdefault("options", {"freezing": True, **cpu_options})
    else:
        compile_kwargs["mode"] = mode
    wrapped = CompiledModule(unet, backend=backend, **compile_kwargs)
    missing = _missing_compiler(backend, pipe.device)
    if missing:
        wrapped.fall_back(missing)
    new.unet = wrapped
    if warmup and wrapped.is_compiled:
        _warm_up(new, batch_size)
    return new


@torch.no_grad()
def _warm_up(pipe, batch_size: int) -> None:
    """One UNet call on a random input of the shape the pipeline feeds it."""
    inner = unwrap(pipe.unet)
    config = getattr(inner, "config", None)
    channels = getattr(config, "in_channels", 4)
    context_dim = getattr(config, "context_dim", None)
    length = getattr(getattr(unwrap(pipe.text_encoder), "config", None), "max_length", 12)
    if context_dim is None:
        return
    device = torch.device(pipe.device)
    z = torch.zeros(batch_size, channels, 8, 8, device=device)
    t = torch.tensor(1, device=device).expand(batch_size)  # as the pipeline passes it: guards check strides too
    cond = torch.zeros(batch_size, length, context_dim, device=device)
    pipe.unet(z, t, cond)


# ---- 5. cached text embeddings ---------------------------------------------------------------------


class CachedTextEncoder(ModuleWrapper):
    """Remembers the embedding of every token sequence it has encoded (least recently used first out).

    ids (B, L) -> cond (B, L, D): rows seen before come from the cache, the others are encoded
    together in one call and stored. Bypassed in training mode or when gradients are on.
    """

    def __init__(self, text_encoder: nn.Module, max_entries: int = 4096):
        super().__init__(text_encoder)
        self.max_entries = check_int_range("max_entries", max_entries, 1, 10**9)
        self.cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self.hits = self.misses = 0

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.module.training or torch.is_grad_enabled():
            return self.module(ids)
        keys = [tuple(row) for row in ids.tolist()]
        # 1. Encode the distinct rows not in the cache, in one batch.
        missing = list(dict.fromkeys(k for k in keys if k not in self.cache))
        if missing:
            fresh = self.module(torch.tensor(missing, dtype=ids.dtype, device=ids.device))  # (M, L, D)
            for key, row in zip(missing, fresh):
                self.cache[key] = row
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        # 2. Assemble the batch from the cache, marking the rows as recently used.
        rows = []
        for key in keys:
            self.cache.move_to_end(key)
            rows.append(self.cache[key].to(ids.device))
        while len(self.cache) > self.max_entries:
            self.cache.popitem(last=False)
        return torch.stack(rows)  # (B, L, D)

    def clear(self) -> None:
        self.cache.clear()
        self.hits = self.misses = 0


def cache_text_embeddings(pipe, prompts=None, max_entries: int = 4096):
    """The pipeline with a cache in front of its text encoder.

    Buys: a repeated prompt, and the empty prompt "" that every guided call encodes for the
    unconditional branch, skip the text encoder. Small here (the text encoder is a sliver of the
    cost of 25 UNet steps), large for Stable Diffusion served with popular prompts.
    Costs: memory, L x D x 4 bytes per cached prompt (3 KB here; 236 KB for SD's 77 x 768), and
    correctness only as long as the text encoder does not change (it is frozen).

    Args:
        pipe: a TinyStableDiffusion.
        prompts: optional prompts to encode now (e.g. every caption a notebook will use).
        max_entries: the most prompts kept; the least recently used go first.
    Returns:
        a new pipeline; `pipe` is unchanged. `new.text_encoder.hits / .misses` count lookups.
    """
    _check_pipe(pipe)
    new = _copy_pipeline(pipe, ("text_encoder",))
    new.text_encoder = CachedTextEncoder(new.text_encoder, max_entries)
    if prompts is not None:
        new.encode_prompt(prompts)
    return new
