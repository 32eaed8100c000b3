"""Sinusoidal timestep embeddings: how a network is told which noise level it is looking at.

The UNet shares its weights across all T noise levels, so it needs t as an input. An integer is
a poor input to a network; the Transformer's positional encoding (Vaswani et al. 2017,
section 3.5), reused for diffusion timesteps by Ho et al. 2020 (appendix B), turns it into a
vector of sines and cosines of geometrically spaced frequencies:

    freq_i = max_period ** (-i / half),  i = 0 .. half-1,  half = dim // 2
    emb(t) = [cos(t * freq_0), ..., cos(t * freq_{half-1}), sin(t * freq_0), ..., sin(t * freq_{half-1})]

Nearby timesteps get nearby vectors, and the slow frequencies distinguish far-apart ones. The
cos-first order is Stable Diffusion's (`timestep_embedding` in the LDM code base), equal to
diffusers' `get_timestep_embedding(t, dim, flip_sin_to_cos=True, downscale_freq_shift=0)`.
An MLP (`TimestepEmbedding`) then maps it to the width the residual blocks use.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sdedu._checks import check_int_range, check_number_range, check_tensor


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000) -> torch.Tensor:
    """Sinusoidal embedding of timesteps (Vaswani et al. 2017, section 3.5; Ho et al. 2020).

    emb = [cos(t * freqs), sin(t * freqs)],  freqs_i = max_period ** (-i / (dim // 2))

    Args:
        t: (B,) timesteps (int or float; fractional t works too).
        dim: embedding width; an odd `dim` gets one zero column at the end.
        max_period: the longest period, in timesteps, of the sinusoids (10000 as in the papers).
    Returns:
        (B, dim) float32 embedding on t's device.
    """
    check_tensor("t", t, ndim=1)
    check_int_range("dim", dim, 1, 1_000_000)
    check_number_range("max_period", max_period, 1.0)
    half = dim // 2
    # 1. Geometric frequencies from 1 down to 1/max_period.
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    freqs = torch.exp(exponent)  # (half,)
    # 2. Outer product t x freqs, then the cosines and sines side by side.
    args = t.float()[:, None] * freqs[None, :]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, 2 * half)
    if dim % 2 == 1:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)  # (B, dim)
    return emb


class TimestepEmbedding(nn.Module):
    """Sinusoids followed by a two-layer MLP, as in the DDPM and Stable Diffusion UNets.

    temb = Linear(SiLU(Linear(timestep_embedding(t, base_dim))))

    Args:
        base_dim: width of the sinusoidal embedding (the UNet's first channel count).
        out_dim: width handed to every residual block (4 * base_dim in the papers).
    """

    def __init__(self, base_dim: int, out_dim: int):
        super().__init__()
        self.base_dim = base_dim
        self.linear_1 = nn.Linear(base_dim, out_dim)
        self.linear_2 = nn.Linear(out_dim, out_dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """(B,) timesteps -> (B, out_dim)."""
        emb = timestep_embedding(t, self.base_dim)  # (B, base_dim)
        return self.linear_2(nn.functional.silu(self.linear_1(emb)))
