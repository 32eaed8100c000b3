"""LoRA: low-rank adaptation of a frozen linear layer (Hu et al. 2022, "LoRA", section 4.1).

    h = W x + (alpha / r) B A x         W (out, in) frozen; A (r, in), B (out, r) trained; r << min(in, out)

B starts at zero, so an injected model computes exactly what it computed before, and training
moves only the r (in + out) numbers of A and B per layer instead of the in * out of W. After
training the update folds into the weight, W' = W + (alpha / r) B A (`merge_lora`): the merged
model is as fast as the original. Names and initialisation follow peft's `lora.Linear` (what
diffusers' `load_lora_weights` uses): `lora_A`, `lora_B`, A drawn by kaiming_uniform(a=sqrt(5))
(nn.Linear's default), B zeros, scaling = lora_alpha / r.

    inject_lora(unet, rank=4, alpha=4.0)     wrap the attention and feed-forward projections
    merge_lora(unet)                          fold B A into W, the wrappers gone
    remove_lora(unet)                         drop B A, the original layers back exactly
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sdedu._checks import check_int_range, check_number_range, describe

#: The UNet's attention projections (diffusers' names) and its feed-forward linears.
DEFAULT_TARGET = ("to_q", "to_k", "to_v", "to_out", "ff.proj_in", "ff.proj_out")


class LoRALinear(nn.Module):
    """A frozen nn.Linear plus a trainable low-rank update: base(x) + (alpha / rank) lora_B(lora_A(x)).

    Args:
        base: the nn.Linear (in -> out) adapted; kept as `.base`, its parameters frozen.
        rank: r >= 1, the rank of the update B A.
        alpha: > 0; the update is scaled by alpha / r (so changing r does not rescale it).
    Shapes: x (..., in) -> (..., out).
    """

    def __init__(self, base: nn.Linear, rank: int = 4, alpha: float = 4.0):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"base must be a torch.nn.Linear; got {describe(base)}")
        self.rank = check_int_range("rank", rank, 1, min(base.in_features, base.out_features))
        self.alpha = check_number_range("alpha", alpha, 0.0)
        if self.alpha == 0.0:
            raise ValueError("alpha must be > 0 (the update is scaled by alpha / rank); got 0")
        self.scaling = self.alpha / self.rank
        self.base = base.requires_grad_(False)
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Linear(base.in_features, self.rank, bias=False, **factory)  # A (r, in)
        self.lora_B = nn.Linear(self.rank, base.out_features, bias=False, **factory)  # B (out, r)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))  # as peft: U(-1/sqrt(in), 1/sqrt(in))
        nn.init.zeros_(self.lora_B.weight)  # B = 0: the wrapped layer starts as the base layer

    def delta_weight(self) -> torch.Tensor:
        """(alpha / r) B A, (out, in): what `merge` adds to the base weight."""
        return self.scaling * (self.lora_B.weight @ self.lora_A.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scaling * self.lora_B(self.lora_A(x))

    @torch.no_grad()
    def merge(self) -> nn.Linear:
        """The base layer with W += (alpha / r) B A, in place: one nn.Linear computing what self does."""
        self.base.weight += self.delta_weight()
        return self.base

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha:g}"


def inject_lora(module: nn.Module, rank: int = 4, alpha: float = 4.0, target=DEFAULT_TARGET) -> list[str]:
    """Wrap every nn.Linear of `module` named by `target` in a LoRALinear, in place.

    Every parameter of `module` is frozen; the LoRA A and B alone are trainable.

    Args:
        module: the model to adapt (the UNet); it must not hold LoRA layers already.
        rank, alpha: as LoRALinear.
        target: names of layers: a layer is wrapped when its qualified name is a target or ends
            with "." + a target (peft's `target_modules` rule); each target must match one at least.
    Returns:
        the qualified names of the wrapped layers.
    """
    check_int_range("rank", rank, 1, 2**31)
    if check_number_range("alpha", alpha, 0.0) == 0.0:
        raise ValueError("alpha must be > 0 (the update is scaled by alpha / rank); got 0")
    if isinstance(target, str) or not (isinstance(target, (list, tuple)) and target):
        raise TypeError(f"target must be a non-empty list of layer names; got {describe(target)}")
    if _lora_layers(module):
        raise ValueError("module already holds LoRA layers: merge_lora or remove_lora them first")
    linears = [name for name, layer in module.named_modules() if isinstance(layer, nn.Linear)]
    chosen = {name for name in linears for t in target if name == t or name.endswith("." + t)}
    unmatched = [t for t in target if not any(name == t or name.endswith("." + t) for name in linears)]
    if unmatched:
        raise ValueError(
            f"target names {unmatched} match no nn.Linear in the module; its linears are e.g. {linears[:4]}"
        )
    module.requires_grad_(False)
    wrapped = sorted(chosen)
    for name in wrapped:
        _replace(module, name, LoRALinear(module.get_submodule(name), rank, alpha))
    return wrapped


def lora_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The A and B weights of every LoRA layer in `module` (what an optimizer trains)."""
    return [p for _, layer in _lora_layers(module) for p in (layer.lora_A.weight, layer.lora_B.weight)]


def merge_lora(module: nn.Module) -> nn.Module:
    """Fold every LoRA update into its base weight and remove the wrappers (in place); returns module."""
    for name, layer in _lora_layers(module):
        _replace(module, name, layer.merge())
    return module


def remove_lora(module: nn.Module) -> nn.Module:
    """Put the original layers back, the LoRA updates dropped (in place; still frozen); returns module."""
    for name, layer in _lora_layers(module):
        _replace(module, name, layer.base)
    return module


def _lora_layers(module: nn.Module) -> list[tuple[str, LoRALinear]]:
    return [(name, layer) for name, layer in module.named_modules() if isinstance(layer, LoRALinear)]


def _replace(module: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(module.get_submodule(parent) if parent else module, child, new)
