"""int8 weights: Linear and Conv2d weights stored as int8 with one float scale per output channel."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sdedu.optimize.wrappers import check_components, check_pipe, copy_pipeline, unwrap


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
        return F.conv2d(
            x, self.dequantized_weight(x.dtype), bias, self.stride, self.padding, self.dilation, self.groups
        )

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
    check_pipe(pipe)
    components = check_components(components)
    new = copy_pipeline(pipe, components)
    for name in components:
        quantize_module_int8(unwrap(getattr(new, name)))
    return new
