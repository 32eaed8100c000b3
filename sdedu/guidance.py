"""Classifier-free guidance: push the prediction away from "no prompt" and towards the prompt.

One network is trained both with the text condition and, for a fraction of examples, with an
empty prompt. At sampling time it is run twice per step and the two noise predictions combined:

    eps = eps_uncond + w (eps_cond - eps_uncond)     (Imagen, Saharia et al. 2022, eq. 2)

w is the guidance scale, `guidance_scale` here and in diffusers (docs/NOTATION.md). Ho & Salimans
2022, eq. 6 write eps = (1 + w_HS) eps_cond - w_HS eps_uncond: the same formula with w = 1 + w_HS.
w = 0 ignores the prompt, w = 1 is the plain conditional model, w > 1 (Stable Diffusion: 7.5)
trades diversity for adherence to the prompt.
"""

from __future__ import annotations

import torch

from sdedu._checks import check_number_range, check_same_shape, check_tensor


def classifier_free_guidance(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """Combine unconditional and conditional noise predictions.

    eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)

    Args:
        eps_uncond: (B, ...) prediction with the empty prompt.
        eps_cond: (B, ...) prediction with the prompt, same shape.
        guidance_scale: w >= 0 (0: unconditional, 1: conditional, > 1: guided).
    Returns:
        the guided eps, (B, ...).
    """
    check_tensor("eps_uncond", eps_uncond, floating=True)
    check_tensor("eps_cond", eps_cond, floating=True)
    check_same_shape("eps_cond", eps_cond, "eps_uncond", eps_uncond)
    guidance_scale = check_number_range("guidance_scale", guidance_scale, 0.0)
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)
