"""PixelDenoiser: a small fully convolutional eps-predictor for images of any size.

conv_in -> ResBlocks conditioned on the timestep -> conv_out, with no downsampling, so each output
pixel sees a small window of the input: it learns local image statistics (edges, smooth skin,
texture), trains on crops (`sdedu.training.pixel_denoiser`) and then denoises a whole photo
(`sdedu.editing.denoise`). A pixel-space cousin of the latent UNet, without text.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sdedu._checks import check_int_range, check_tensor, describe
from sdedu.nn.blocks import ResBlock
from sdedu.nn.embeddings import TimestepEmbedding

__all__ = ["PixelDenoiserConfig", "PixelDenoiser"]


@dataclass
class PixelDenoiserConfig:
    """Sizes of a `PixelDenoiser`.

    channels: feature channels (the same at every layer: no downsampling, any H and W work).
    num_blocks: time-conditioned ResBlocks; each (two 3x3 convolutions) widens the receptive field by 2 pixels per side.
    norm_groups: GroupNorm groups (must divide channels).
    in_channels: image channels (3 for RGB).
    """

    channels: int = 32
    num_blocks: int = 3
    norm_groups: int = 8
    in_channels: int = 3

    def __post_init__(self):
        check_int_range("channels", self.channels, 1, 4096)
        check_int_range("num_blocks", self.num_blocks, 1, 64)
        check_int_range("in_channels", self.in_channels, 1, 64)
        if self.channels % self.norm_groups:
            raise ValueError(f"norm_groups must divide channels ({self.channels}); got {self.norm_groups}")


class PixelDenoiser(nn.Module):
    """eps_theta(x_t, t) for images of any size: conv_in, ResBlocks with the timestep, conv_out.

    Fully convolutional with a small receptive field (2 + 2 * num_blocks pixels per side: 17x17 for 3 blocks), so it
    learns local image statistics (edges, smooth skin, texture) rather than whole pictures, and a
    model trained on 16x16 crops denoises a 64x64 photo.
    """

    def __init__(self, config: PixelDenoiserConfig | None = None):
        super().__init__()
        self.config = c = config or PixelDenoiserConfig()
        time_dim = 4 * c.channels
        self.time_embedding = TimestepEmbedding(c.channels, time_dim)
        self.conv_in = nn.Conv2d(c.in_channels, c.channels, 3, padding=1)
        self.blocks = nn.ModuleList(
            ResBlock(c.channels, c.channels, time_dim, norm_groups=c.norm_groups) for _ in range(c.num_blocks)
        )
        self.norm_out = nn.GroupNorm(c.norm_groups, c.channels)
        self.conv_out = nn.Conv2d(c.channels, c.in_channels, 3, padding=1)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t (B, C, H, W), t (B,) int64 -> eps_pred (B, C, H, W)."""
        check_tensor("x_t", x_t, ndim=4, floating=True)
        if x_t.shape[1] != self.config.in_channels:
            raise ValueError(f"x_t must have shape (B, {self.config.in_channels}, H, W); got {describe(x_t)}")
        check_tensor("t", t, ndim=1)
        # 1. The noise level, as features every block sees.
        temb = self.time_embedding(t)  # (B, 4 * channels)
        # 2. Local features, refined block by block.
        h = self.conv_in(x_t)  # (B, channels, H, W)
        for block in self.blocks:
            h = block(h, temb)
        # 3. Back to image channels: the predicted noise.
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, C, H, W)
