"""The tiny cross-attention UNet that predicts noise in latent space (Rombach et al. 2022).

    eps_pred = UNet(x_t, t, cond)      x_t (B, 4, 8, 8), t (B,) int64, cond (B, L, D)

Architecture (Ronneberger et al. 2015's UNet as adapted by Ho et al. 2020 and Stable Diffusion):

    conv_in                                   (B, c0, 8, 8)
    down 0: ResBlock + SpatialTransformer     (B, c0, 8, 8)  ----------- skip 0 ----------.
            Downsample                        (B, c0, 4, 4)                               |
    down 1: ResBlock + SpatialTransformer     (B, c1, 4, 4)  --- skip 1 ---.              |
    mid:    ResBlock + SpatialTransformer     (B, c1, 4, 4)                |              |
    up 1:   concat skip 1, ResBlock + SpatialTransformer  (B, c1, 4, 4) <--'              |
            Upsample                          (B, c0, 8, 8)                               |
    up 0:   concat skip 0, ResBlock + SpatialTransformer  (B, c0, 8, 8) <-----------------'
    GroupNorm, SiLU, conv_out                 (B, 4, 8, 8) = eps_pred

- every ResBlock receives the timestep embedding (sinusoids + MLP, `sdedu.nn.embeddings`);
- every SpatialTransformer has self-attention and cross-attention to `cond`: at 8x8 and 4x4
  only, because attention over H*W tokens costs (H*W)^2 and 8x8 latents are already small;
- skip connections carry the fine detail from the down path to the up path (concatenated
  on the channel axis). SD has two or three blocks per level; one is plenty for 8x8 latents
  and keeps a training step cheap on a CPU.

The model knows nothing about betas or alpha_bar: t is just an input (STYLE.md). Classifier-free
guidance needs no change here: the trainer replaces some captions by "" (conditioning dropout),
and the sampler calls the UNet with the encoded "" for the unconditional prediction.

Cross-attention maps: `unet.set_store_attention(True)` makes every CrossAttention keep its
probabilities (B, heads, H*W, L); `unet.cross_attention_maps()` collects them by name.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sdedu._checks import check_tensor, describe
from sdedu.nn.attention import CrossAttention
from sdedu.nn.blocks import Downsample, ResBlock, SpatialTransformer, Upsample
from sdedu.nn.embeddings import TimestepEmbedding


@dataclass
class UNetConfig:
    """Sizes of the tiny UNet.

    in_channels: latent channels (4); 3 runs the same network on RGB pixels.
    sample_size: height = width of x_t (8 for 8x8 latents; 32 for 32x32 pixels). Even, because
        the UNet halves the resolution once (sample_size -> sample_size // 2) and doubles it back.
    channels: (c0, c1) feature channels at sample_size and sample_size // 2 (8x8 and 4x4).
    context_dim: width D of the text encoder's embeddings.
    head_dim: channels per attention head (heads = channels // head_dim).
    ff_mult: feed-forward expansion in the transformer blocks.
    norm_groups: GroupNorm groups.
    num_train_timesteps: T, the range of t the model accepts.
    """

    in_channels: int = 4
    sample_size: int = 8
    channels: tuple = (48, 96)
    context_dim: int = 64
    head_dim: int = 32
    ff_mult: int = 2
    norm_groups: int = 16
    num_train_timesteps: int = 1000

    def __post_init__(self):
        self.channels = tuple(int(c) for c in self.channels)
        if len(self.channels) != 2:
            raise ValueError(f"channels must give 2 levels (8x8, 4x4); got {self.channels!r}")
        if int(self.sample_size) != self.sample_size or self.sample_size < 2 or self.sample_size % 2:
            raise ValueError(
                f"sample_size must be an even int >= 2 (the UNet halves it once); got {self.sample_size!r}"
            )
        self.sample_size = int(self.sample_size)


class UNet(nn.Module):
    """Text-conditioned noise predictor on (B, 4, 8, 8) latents. See the module docstring.

    The layers do not depend on the resolution: `UNetConfig(in_channels=3, sample_size=32)` is the
    same network on (B, 3, 32, 32) images (notebook 08 times it against the latent one).

    Args:
        config: `UNetConfig`.
    """

    def __init__(self, config: UNetConfig | None = None):
        super().__init__()
        self.config = config = config or UNetConfig()
        c0, c1 = config.channels
        temb = 4 * c0  # timestep-embedding width, 4x the base channels as in DDPM and SD
        g = config.norm_groups

        def res(cin, cout):
            return ResBlock(cin, cout, temb, norm_groups=g, zero_init=True)

        def attn(ch):
            return SpatialTransformer(
                ch, config.context_dim, ch // config.head_dim, config.head_dim, config.ff_mult, norm_groups=g
            )

        self.time_embedding = TimestepEmbedding(c0, temb)
        self.conv_in = nn.Conv2d(config.in_channels, c0, 3, padding=1)
        # Down path: 8x8 then 4x4.
        self.down0_res, self.down0_attn = res(c0, c0), attn(c0)
        self.downsample = Downsample(c0)
        self.down1_res, self.down1_attn = res(c0, c1), attn(c1)
        # Middle, at 4x4.
        self.mid_res, self.mid_attn = res(c1, c1), attn(c1)
        # Up path: each level concatenates its skip (channels: in + skip -> out).
        self.up1_res, self.up1_attn = res(c1 + c1, c1), attn(c1)
        self.upsample = Upsample(c1, c0)
        self.up0_res, self.up0_attn = res(c0 + c0, c0), attn(c0)
        self.norm_out = nn.GroupNorm(g, c0)
        self.conv_out = nn.Conv2d(c0, config.in_channels, 3, padding=1)

    def forward(
        self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, down_residuals=None, mid_residual=None
    ) -> torch.Tensor:
        """Predict the noise in x_t.

        Args:
            x_t: (B, 4, 8, 8) noisy scaled latents; in general (B, in_channels, sample_size, sample_size).
            t: (B,) int64 timesteps in [0, T).
            cond: (B, L, D) text embeddings (the encoded "" for the unconditional branch).
            down_residuals, mid_residual: a ControlNet's outputs (`sdedu.models.controlnet`), added to
                skip 0 (B, c0, 8, 8) and skip 1 (B, c1, 4, 4) and to the middle's output (B, c1, 4, 4)
                (diffusers' down_block_additional_residuals, mid_block_additional_residual); None: none.
        Returns:
            eps_pred (B, 4, 8, 8).
        """
        self._check_inputs(x_t, t, cond)
        # 1. Timestep embedding shared by every ResBlock.
        temb = self.time_embedding(t)  # (B, 4 * c0)
        # 2. Down path, remembering each level's output for the skip connections.
        h = self.conv_in(x_t)  # (B, c0, 8, 8)
        skip0 = self.down0_attn(self.down0_res(h, temb), cond)  # (B, c0, 8, 8)
        h = self.downsample(skip0)  # (B, c0, 4, 4)
        skip1 = self.down1_attn(self.down1_res(h, temb), cond)  # (B, c1, 4, 4)
        # 3. Middle: the coarsest, most global view.
        h = self.mid_attn(self.mid_res(skip1, temb), cond)  # (B, c1, 4, 4)
        # 3b. A ControlNet's residuals join the skips and the middle (Zhang et al. 2023, section 3.2).
        if down_residuals is not None:
            skip0, skip1 = skip0 + down_residuals[0], skip1 + down_residuals[1]
        if mid_residual is not None:
            h = h + mid_residual
        # 4. Up path: concatenate the matching skip, then ResBlock + SpatialTransformer.
        h = torch.cat([h, skip1], dim=1)  # (B, 2 * c1, 4, 4)
        h = self.up1_attn(self.up1_res(h, temb), cond)  # (B, c1, 4, 4)
        h = self.upsample(h)  # (B, c0, 8, 8)
        h = torch.cat([h, skip0], dim=1)  # (B, 2 * c0, 8, 8)
        h = self.up0_attn(self.up0_res(h, temb), cond)  # (B, c0, 8, 8)
        # 5. Back to latent channels.
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, 4, 8, 8)

    def _check_inputs(self, x_t, t, cond):
        c = self.config
        check_tensor("x_t", x_t, ndim=4, floating=True)
        n = c.sample_size
        if tuple(x_t.shape[1:]) != (c.in_channels, n, n):
            raise ValueError(
                f"x_t must have shape (B, in_channels, sample_size, sample_size) = (B, {c.in_channels}, {n}, {n}) "
                f"(UNetConfig.in_channels={c.in_channels}, sample_size={n}); got {describe(x_t)}"
            )
        B = x_t.shape[0]
        check_tensor("t", t)
        # The range check reads t's values: torch.compile would split its graph there (and a GPU
        # would wait for the values), so a compiled UNet checks only the dtype and shape.
        in_range = torch.compiler.is_compiling() or not t.numel() or (t.min() >= 0 and t.max() < c.num_train_timesteps)
        if t.dtype != torch.long or tuple(t.shape) != (B,) or not in_range:
            raise ValueError(
                f"t must be an int64 tensor of shape (B,) = ({B},) with values in [0, {c.num_train_timesteps}); got {describe(t)}"
            )
        check_tensor("cond", cond, ndim=3, floating=True)
        if cond.shape[0] != B or cond.shape[2] != c.context_dim:
            raise ValueError(f"cond must have shape (B, L, D) = ({B}, L, {c.context_dim}); got {describe(cond)}")

    # ---- cross-attention maps ---------------------------------------------------------

    def cross_attentions(self) -> dict[str, CrossAttention]:
        """Every cross-attention module, by its name in the model."""
        return {name: m for name, m in self.named_modules() if isinstance(m, CrossAttention)}

    def set_store_attention(self, store: bool = True) -> None:
        """Make every cross-attention layer keep (or stop keeping) its attention probabilities."""
        for module in self.cross_attentions().values():
            module.store_attention = bool(store)
            if not store:
                module.attention_probs = None

    def cross_attention_maps(self) -> dict[str, torch.Tensor]:
        """The stored probabilities of the last forward pass: name -> (B, heads, H*W, L)."""
        return {name: m.attention_probs for name, m in self.cross_attentions().items() if m.attention_probs is not None}
