"""Magnitude pruning: the smallest |weights| set to zero, permanently (Han et al. 2015)."""

from __future__ import annotations

from torch import nn
from torch.nn.utils import prune as torch_prune

from sdedu._checks import check_number_range
from sdedu.optimize.int8 import Int8Conv2d, Int8Linear
from sdedu.optimize.wrappers import check_components, check_pipe, copy_pipeline, unwrap


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
    check_pipe(pipe)
    amount = check_number_range("amount", amount, 0.0, 0.999)
    components = check_components(components)
    if scope not in ("layer", "global"):
        raise ValueError(f"scope must be 'layer' or 'global'; got {scope!r}")
    new = copy_pipeline(pipe, components)
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


def sparsity(module: nn.Module) -> float:
    """Fraction of exactly-zero entries among the weights of the Linear and Conv2d layers."""
    zeros = total = 0
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d, Int8Linear, Int8Conv2d)):
            weight = layer.qweight if isinstance(layer, (Int8Linear, Int8Conv2d)) else layer.weight
            zeros += int((weight == 0).sum())
            total += weight.numel()
    return zeros / max(total, 1)
