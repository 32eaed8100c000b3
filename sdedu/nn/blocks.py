"""The building blocks of the Stable Diffusion UNet (and of its VAE).

- `ResBlock`: GroupNorm -> SiLU -> conv, twice, with the timestep embedding added in between
  and a skip connection around it all (Ho et al. 2020, appendix B; He et al. 2016).
- `TransformerBlock`: self-attention, cross-attention to the text, feed-forward, each
  pre-normalised with LayerNorm and residual (Rombach et al. 2022; diffusers'
  `BasicTransformerBlock`).
- `SpatialTransformer`: turns a feature map (B, C, H, W) into H*W tokens, runs transformer
  blocks on them and turns them back (LDM's `SpatialTransformer`, diffusers' `Transformer2DModel`).
- `Downsample` (strided conv) and `Upsample` (nearest neighbour + conv) change the resolution.

Layer names follow diffusers (norm1, conv1, time_emb_proj, ...), so each block can be checked
against diffusers' implementation weight for weight (tests/test_nn.py does).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sdedu.nn.attention import CrossAttention, SelfAttention


def _zero_(module: nn.Module) -> nn.Module:
    """Zero a layer's parameters so its residual branch starts as the identity (LDM's zero_module)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """Residual block with GroupNorm and time conditioning (Ho et al. 2020, appendix B).

    h   = conv1(SiLU(GroupNorm(x)))
    h   = h + time_emb_proj(SiLU(temb))          (per-channel shift by the noise level)
    h   = conv2(dropout(SiLU(GroupNorm(h))))
    out = skip(x) + h                            (skip = 1x1 conv when the channels change)

    Args:
        in_channels, out_channels: channels of x and of the output.
        time_dim: width of the timestep embedding, or None for an unconditioned block (VAE).
        norm_groups: GroupNorm groups (32 in Stable Diffusion; must divide both channel counts).
        dropout: dropout before the second convolution.
        zero_init: start conv2 at zero so the block is the identity at initialisation (LDM does).
        eps: GroupNorm epsilon.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        time_dim: int | None = None,
        norm_groups: int = 32,
        dropout: float = 0.0,
        zero_init: bool = False,
        eps: float = 1e-5,
    ):
        super().__init__()
        self.norm1 = nn.GroupNorm(norm_groups, in_channels, eps=eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_emb_proj = nn.Linear(time_dim, out_channels) if time_dim is not None else None
        self.norm2 = nn.GroupNorm(norm_groups, out_channels, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if zero_init:
            _zero_(self.conv2)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, in_channels, H, W), temb (B, time_dim) or None -> (B, out_channels, H, W)."""
        # 1. First normalise-activate-convolve.
        h = self.conv1(F.silu(self.norm1(x)))
        # 2. Tell every channel the noise level: a learned shift from the timestep embedding.
        if self.time_emb_proj is not None:
            if temb is None:
                raise ValueError("temb must be a (B, time_dim) tensor for a time-conditioned ResBlock; got None")
            h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]  # (B, C, 1, 1) broadcast
        # 3. Second normalise-activate-convolve.
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        # 4. Residual connection.
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return skip + h


class Downsample(nn.Module):
    """Halve H and W with a stride-2 3x3 convolution (as in the SD UNet)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)  # (B, C, H/2, W/2)


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour upsampling then a 3x3 convolution (no checkerboards).

    Args:
        channels: input channels.
        out_channels: output channels (default: the same).
    """

    def __init__(self, channels: int, out_channels: int | None = None):
        super().__init__()
        self.conv = nn.Conv2d(channels, out_channels or channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))  # (B, C_out, 2H, 2W)


class FeedForward(nn.Module):
    """Position-wise MLP with a GEGLU gate (Shazeer 2020), as in Stable Diffusion.

    FF(x) = W_2 (a * GELU(g)),  [a, g] = W_1 x
    """

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        inner = dim * mult
        self.proj_in = nn.Linear(dim, 2 * inner)
        self.proj_out = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, gate = self.proj_in(x).chunk(2, dim=-1)  # (B, N, inner) each
        return self.proj_out(a * F.gelu(gate))


class TransformerBlock(nn.Module):
    """Self-attention, cross-attention to the text, feed-forward (Rombach et al. 2022, section 3.3).

    x = x + SelfAttention(LayerNorm(x))
    x = x + CrossAttention(LayerNorm(x), cond)
    x = x + FeedForward(LayerNorm(x))

    Args:
        dim: token width (the feature map's channels).
        context_dim: width D of the text embeddings.
        num_heads, head_dim: attention heads (dim = num_heads * head_dim in SD, not required).
        ff_mult: feed-forward expansion.
    """

    def __init__(self, dim: int, context_dim: int, num_heads: int = 4, head_dim: int = 32, ff_mult: int = 4):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = SelfAttention(dim, num_heads, head_dim)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = CrossAttention(dim, context_dim, num_heads, head_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, ff_mult)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, cond_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, N, dim), cond (B, L, context_dim) -> (B, N, dim)."""
        # 1. Pixels look at each other (global layout).
        x = x + self.attn1(self.norm1(x))
        # 2. Pixels read the prompt: the only path from text to image.
        x = x + self.attn2(self.norm2(x), cond, cond_mask)
        # 3. Per-token MLP.
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """Transformer blocks on a feature map's pixels (LDM's SpatialTransformer).

    tokens = proj_in(GroupNorm(x)) viewed as (B, H*W, C);  tokens = blocks(tokens, cond)
    out = x + proj_out(tokens viewed back as (B, C, H, W))     (proj_out starts at zero)

    Args:
        channels: C of the feature map.
        context_dim: width D of the text embeddings.
        num_heads, head_dim, ff_mult: as in `TransformerBlock`.
        depth: number of transformer blocks.
        norm_groups: GroupNorm groups.
    """

    def __init__(
        self,
        channels: int,
        context_dim: int,
        num_heads: int = 4,
        head_dim: int = 32,
        ff_mult: int = 4,
        depth: int = 1,
        norm_groups: int = 32,
    ):
        super().__init__()
        self.norm = nn.GroupNorm(norm_groups, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.blocks = nn.ModuleList(
            TransformerBlock(channels, context_dim, num_heads, head_dim, ff_mult) for _ in range(depth)
        )
        self.proj_out = _zero_(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor, cond: torch.Tensor, cond_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, C, H, W), cond (B, L, D) -> (B, C, H, W)."""
        B, C, H, W = x.shape
        # 1. Normalise, flatten the pixels into a sequence of H*W tokens, and project them.
        h = self.norm(x).permute(0, 2, 3, 1).reshape(B, H * W, C)  # (B, H*W, C)
        h = _pointwise(self.proj_in, h)
        # 2. Transformer blocks (self-attention, cross-attention, feed-forward).
        for block in self.blocks:
            h = block(h, cond, cond_mask)
        # 3. Project, back to a feature map; residual around the whole transformer.
        h = _pointwise(self.proj_out, h)
        return x + h.reshape(B, H, W, C).permute(0, 3, 1, 2)  # (B, C, H, W)


def _pointwise(conv: nn.Conv2d, tokens: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution applied to tokens (B, N, C_in) -> (B, N, C_out).

    A 1x1 convolution is one linear map applied to every pixel, so on tokens it is F.linear with
    the kernel viewed as a (C_out, C_in) matrix: the same parameters as the Conv2d (checkpoints load
    unchanged), but one matrix product instead of a convolution between two layout changes.
    """
    return F.linear(tokens, conv.weight.flatten(1), conv.bias)
