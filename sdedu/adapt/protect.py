"""Keep the old prompts: a cross-attention LoRA that cannot see the old captions' text.

Cross-attention reads the text only through its keys and values, k = W_k c and v = W_v c, c (D,) one
token's context vector from the text encoder. A LoRA of W_k and W_v changes an old prompt's image only
through (alpha / r) B A c_old. The shapes world has few captions (every full and partial caption: 505,
the empty one included, so about 6000 context vectors), and their contexts fill only part of the D
dimensions: most of their energy lies in a k-dimensional subspace span(V), V (D, k) the top right
singular vectors of the stacked contexts C_old (N, D). Training A as

    A' = A (I - V V^T)                          (r, D): A projected off the old contexts' subspace

leaves A' c_old ~ 0 for every old caption, so old prompts keep their keys and values, while the new
word's context, which has a part outside span(V) (and "both" can move there by its new embedding row),
still reaches the update: the edit lives in the null space of the old contexts. AlphaEdit projects a language
model's weight update onto the null space of the preserved inputs of the edited layer in the same way (Fang et
al. 2025, "AlphaEdit: Null-Space Constrained Knowledge Editing for Language Models"); UCE's closed-form edit of
the cross-attention projections keeps preserved concepts by a least-squares preservation term instead (Gandikota
et al. 2024, "Unified Concept Editing in Diffusion Models"); Custom Diffusion trains only the k/v projections
(Kumari et al. 2023, section 3.1).
The projection acts on A's input while training and is folded into A after, so merging keeps it exactly.

    old_context_basis(tokenizer, text_encoder, energy)   V (D, k): the old captions' context subspace
    project_lora_inputs(unet, basis) -> fold             A -> A (I - V V^T) on every LoRA of a
                                                          cross-attention key or value projection
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from torch import nn

from sdedu.data import shapes
from sdedu.nn.lora import LoRALinear

__all__ = ["CROSS_ATTENTION_KV", "old_captions", "old_context_basis", "project_lora_inputs"]

#: The UNet's cross-attention key and value projections (the layers whose input is the text's context).
CROSS_ATTENTION_KV = ("attn2.to_k", "attn2.to_v")


def old_captions() -> list[str]:
    """Every caption of the standard world, full and partial ("a shape" for all dropped), and "": 505 strings."""
    captions = {""}
    for values in itertools.product(shapes.SHAPES, shapes.COLORS, shapes.SIZES, shapes.POSITIONS):
        attributes = dict(zip(shapes.ATTRIBUTES, values))
        for k in range(len(shapes.ATTRIBUTES) + 1):
            for drop in itertools.combinations(shapes.ATTRIBUTES, k):
                captions.add(shapes.caption(attributes, drop))
    return sorted(captions)


@torch.no_grad()
def old_context_basis(tokenizer, text_encoder, energy: float = 0.999) -> torch.Tensor:
    """V (D, k): the fewest top right singular vectors of the old captions' contexts holding `energy` of
    their squared norm (0 < energy <= 1; 1: all of span(C_old))."""
    if not 0.0 < energy <= 1.0:
        raise ValueError(f"energy must be in (0, 1]; got {energy!r}")
    contexts = text_encoder(tokenizer(old_captions(), device=text_encoder.token_embedding.weight.device))
    contexts = contexts.reshape(-1, contexts.shape[-1]).double()  # (N, D)
    _, singular, vh = torch.linalg.svd(contexts, full_matrices=False)
    kept = (singular**2).cumsum(0) / (singular**2).sum()
    k = int(torch.searchsorted(kept, torch.tensor(energy, dtype=kept.dtype) - 1e-12)) + 1
    return vh[:k].T.to(text_encoder.token_embedding.weight.dtype)  # (D, k)


def project_lora_inputs(unet: nn.Module, basis: torch.Tensor, target=CROSS_ATTENTION_KV) -> Callable[[], None]:
    """Make every LoRA on a layer named by `target` compute B A (I - V V^T) x in place of B A x.

    The LoRA layers must already be injected (`sdedu.nn.lora.inject_lora`), with D input features; basis
    (D, k) orthonormal columns. A forward pre-hook projects the input x, so A's gradient stays off span(V).
    Returns fold(): it writes A (I - V V^T) into A and removes the hooks (call it before merging).
    """
    layers = [
        layer
        for name, layer in unet.named_modules()
        if isinstance(layer, LoRALinear) and any(name == t or name.endswith("." + t) for t in target)
    ]
    if not layers:
        raise ValueError(
            f"no LoRA layer of the model is named by {list(target)}: inject them first (teach: target must include "
            f"{list(CROSS_ATTENTION_KV)} when protect_old > 0; 0 turns the protection off)"
        )

    def off_subspace(x: torch.Tensor) -> torch.Tensor:  # (..., D) -> (..., D)
        return x - (x @ basis) @ basis.T

    handles = [layer.lora_A.register_forward_pre_hook(lambda _, args: (off_subspace(args[0]),)) for layer in layers]

    def fold() -> None:
        with torch.no_grad():
            for layer, handle in zip(layers, handles):
                layer.lora_A.weight.copy_(off_subspace(layer.lora_A.weight))
                handle.remove()

    return fold
