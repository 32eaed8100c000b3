"""The tiny MM-DiT: SD3's multimodal diffusion transformer on 8x8x4 latents (Esser et al. 2024, fig. 2).

    v_pred = MMDiT(x_t, t, cond, pooled)
        x_t (B, 4, 8, 8), t (B,) float in [0, T], cond (B, L, D_text), pooled (B, P) -> v_pred (B, 4, 8, 8)

Architecture (Peebles & Xie 2023's DiT with SD3's two streams):

    patchify: p x p patches, one linear map each  (B, 4, 8, 8) -> (B, N, D), N = (8 / p)^2 image tokens
        + fixed 2-D sin-cos positional embedding   (B, N, D)                  (PatchEmbed)
    text:   cond -> Linear                         (B, L, D)                  (context_embedder)
    y = MLP(timestep_embedding(t)) + MLP(pooled)   (B, D)                     (time_text_embed)
    depth x JointTransformerBlock(x, c, y)         (B, N, D), (B, L, D)       (mmdit_blocks)
    adaLN(x, y), Linear to p * p * 4               (B, N, p * p * 4)          (norm_out, proj_out)
    unpatchify                                     (B, 4, 8, 8) = v_pred

- Two kinds of text conditioning, as in SD3: the per-token embeddings cond join the attention
  as L extra tokens (the words and the image read each other); the pooled embedding (one
  vector per prompt) joins the timestep in y, which modulates every block (adaLN-Zero).
- t is the flow time scaled as SD3 scales it: t = 1000 sigma for sigma in [0, 1] (diffusers'
  FlowMatchEulerDiscreteScheduler hands the transformer `timesteps = sigmas * 1000`).
- adaLN-Zero and a zero final projection: the untrained model predicts 0 and every block starts
  as the identity (Peebles & Xie 2023, section 3.2).

Names and layouts follow diffusers 0.42's `SD3Transformer2DModel` (pos_embed.proj,
time_text_embed, context_embedder, transformer_blocks, norm_out, proj_out; the patch and
unpatchify orders), so tests/test_mmdit.py copies weights into it and compares outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sdedu._checks import check_tensor, describe
from sdedu.models.mmdit_blocks import AdaLayerNormContinuous, JointAttention, JointTransformerBlock
from sdedu.nn.embeddings import TimestepEmbedding


@dataclass
class MMDiTConfig:
    """Sizes of the tiny MM-DiT.

    in_channels: latent channels (4).   sample_size: latent height = width (8).
    patch_size: p; the image becomes (sample_size / p)^2 tokens of p * p * in_channels numbers.
    width: D, the token width of both streams.   depth: number of JointTransformerBlocks.
    num_heads: attention heads (head_dim = width / num_heads).   mlp_mult: MLP expansion.
    context_dim: width of the text encoder's token embeddings cond.
    pooled_dim: width P of the pooled text embedding.
    timestep_dim: width of the sinusoidal timestep embedding (256 in SD3).
    num_train_timesteps: T; t lies in [0, T] (t = T sigma).
    """

    in_channels: int = 4
    sample_size: int = 8
    patch_size: int = 2
    width: int = 128
    depth: int = 4
    num_heads: int = 4
    mlp_mult: int = 4
    context_dim: int = 64
    pooled_dim: int = 64
    timestep_dim: int = 256
    num_train_timesteps: int = 1000

    def __post_init__(self):
        if self.sample_size % self.patch_size:
            raise ValueError(
                f"sample_size ({self.sample_size}) must be a multiple of patch_size; got patch_size={self.patch_size}"
            )
        if self.width % self.num_heads or self.width % 4:
            raise ValueError(f"width must be a multiple of 4 and of num_heads ({self.num_heads}); got {self.width}")
        if self.depth < 1:
            raise ValueError(f"depth must be >= 1; got {self.depth}")


def sincos_2d(width: int, grid_size: int) -> torch.Tensor:
    """Fixed 2-D sin-cos positional embedding of a grid_size x grid_size grid of tokens (MAE, He et al. 2022).

    Token (row i, column j): [sincos(j), sincos(i)], sincos(p) = [sin(p w_k), cos(p w_k)],
    w_k = 10000^(-k / (width / 4)), k = 0 .. width / 4 - 1 (diffusers' get_2d_sincos_pos_embed).

    Returns:
        (grid_size * grid_size, width), rows in raster order (row-major, as the patches).
    """
    omega = 1.0 / 10000 ** (torch.arange(width // 4, dtype=torch.float64) / (width / 4))  # (width / 4,)
    pos = torch.arange(grid_size, dtype=torch.float64)
    angles = pos[:, None] * omega[None, :]  # (grid, width / 4)
    one_axis = torch.cat([angles.sin(), angles.cos()], dim=1)  # (grid, width / 2)
    column = one_axis[None, :, :].expand(grid_size, -1, -1)  # (rows, cols, width / 2): varies along j
    row = one_axis[:, None, :].expand(-1, grid_size, -1)  # (rows, cols, width / 2): varies along i
    return torch.cat([column, row], dim=-1).reshape(grid_size * grid_size, width).float()


class PatchEmbed(nn.Module):
    """Latent -> tokens: non-overlapping p x p patches, each mapped linearly to D, plus positions.

    A Conv2d with kernel = stride = p is exactly "flatten each patch, multiply by one matrix".
    """

    def __init__(self, config: MMDiTConfig):
        super().__init__()
        p = config.patch_size
        self.proj = nn.Conv2d(config.in_channels, config.width, kernel_size=p, stride=p)
        grid = config.sample_size // p
        self.register_buffer("pos_embed", sincos_2d(config.width, grid)[None], persistent=False)  # (1, N, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, D), N = (H / p) (W / p)."""
        x = self.proj(x)  # (B, D, H / p, W / p)
        return x.flatten(2).transpose(1, 2) + self.pos_embed  # (B, N, D)


class TimestepTextEmbedding(nn.Module):
    """y = MLP(timestep_embedding(t)) + MLP(pooled): the vector that modulates every block (SD3 fig. 2a)."""

    def __init__(self, config: MMDiTConfig):
        super().__init__()
        self.timestep_embedder = TimestepEmbedding(config.timestep_dim, config.width)
        self.text_linear_1 = nn.Linear(config.pooled_dim, config.width)
        self.text_linear_2 = nn.Linear(config.width, config.width)

    def forward(self, t: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """t (B,), pooled (B, P) -> y (B, D)."""
        text = self.text_linear_2(F.silu(self.text_linear_1(pooled)))  # (B, D)
        return self.timestep_embedder(t) + text


class MMDiT(nn.Module):
    """Text-conditioned velocity predictor on (B, 4, 8, 8) latents. See the module docstring.

    Args:
        config: `MMDiTConfig`.
    """

    def __init__(self, config: MMDiTConfig | None = None):
        super().__init__()
        self.config = c = config or MMDiTConfig()
        self.pos_embed = PatchEmbed(c)
        self.time_text_embed = TimestepTextEmbedding(c)
        self.context_embedder = nn.Linear(c.context_dim, c.width)
        self.transformer_blocks = nn.ModuleList(
            JointTransformerBlock(c.width, c.num_heads, c.mlp_mult, context_pre_only=i == c.depth - 1)
            for i in range(c.depth)
        )
        self.norm_out = AdaLayerNormContinuous(c.width)
        self.proj_out = nn.Linear(c.width, c.patch_size**2 * c.in_channels)
        nn.init.zeros_(self.proj_out.weight)  # the untrained model predicts 0 (DiT's zero-initialised final layer)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """Predict the flow velocity at x_t.

        Args:
            x_t: (B, 4, 8, 8) noisy scaled latents; in general (B, in_channels, sample_size, sample_size).
            t: (B,) float times in [0, T] (t = T sigma).
            cond: (B, L, context_dim) text token embeddings (of "" for the unconditional branch).
            pooled: (B, pooled_dim) pooled text embeddings of the same prompts.
        Returns:
            v_pred (B, 4, 8, 8).
        """
        self._check_inputs(x_t, t, cond, pooled)
        c = self.config
        B, p, grid = x_t.shape[0], c.patch_size, c.sample_size // c.patch_size
        # 1. Tokens: image patches with positions, projected text tokens; y from t and the pooled text.
        x = self.pos_embed(x_t)  # (B, N, D)
        context = self.context_embedder(cond)  # (B, L, D)
        y = self.time_text_embed(t, pooled)  # (B, D)
        # 2. The joint blocks (the last one returns no text tokens).
        for block in self.transformer_blocks:
            x, context = block(x, context, y)
        # 3. Final adaLN and the linear map back to patches.
        x = self.proj_out(self.norm_out(x, y))  # (B, N, p * p * C)
        # 4. Unpatchify: token (h, w) holds its patch as (p, q, C).
        x = x.view(B, grid, grid, p, p, c.in_channels)  # (B, h, w, p, q, C)
        x = x.permute(0, 5, 1, 3, 2, 4)  # (B, C, h, p, w, q)
        return x.reshape(B, c.in_channels, grid * p, grid * p)  # (B, C, H, W)

    def _check_inputs(self, x_t, t, cond, pooled):
        c = self.config
        check_tensor("x_t", x_t, ndim=4, floating=True)
        n = c.sample_size
        if tuple(x_t.shape[1:]) != (c.in_channels, n, n):
            raise ValueError(
                f"x_t must have shape (B, in_channels, sample_size, sample_size) = (B, {c.in_channels}, {n}, {n}) "
                f"(MMDiTConfig); got {describe(x_t)}"
            )
        B = x_t.shape[0]
        check_tensor("t", t)
        T = c.num_train_timesteps
        in_range = torch.compiler.is_compiling() or not t.numel() or (t.min() >= 0 and t.max() <= T)
        if tuple(t.shape) != (B,) or not in_range:
            raise ValueError(f"t must be a tensor of shape (B,) = ({B},) with values in [0, {T}]; got {describe(t)}")
        check_tensor("cond", cond, ndim=3, floating=True)
        if cond.shape[0] != B or cond.shape[2] != c.context_dim:
            raise ValueError(f"cond must have shape (B, L, D) = ({B}, L, {c.context_dim}); got {describe(cond)}")
        check_tensor("pooled", pooled, ndim=2, floating=True)
        if tuple(pooled.shape) != (B, c.pooled_dim):
            raise ValueError(f"pooled must have shape (B, P) = ({B}, {c.pooled_dim}); got {describe(pooled)}")

    # ---- joint attention maps -----------------------------------------------------------

    def joint_attentions(self) -> dict[str, JointAttention]:
        """Every joint attention module, by its name in the model."""
        return {name: m for name, m in self.named_modules() if isinstance(m, JointAttention)}

    def set_store_attention(self, store: bool = True) -> None:
        """Make every joint attention keep (or stop keeping) its probabilities (B, heads, N + L, N + L)."""
        for module in self.joint_attentions().values():
            module.store_attention = bool(store)
            if not store:
                module.attention_probs = None

    def image_to_text_attention(self) -> dict[str, torch.Tensor]:
        """How much each image token reads each word in the last forward pass: name -> (B, heads, N, L)."""
        n = (self.config.sample_size // self.config.patch_size) ** 2
        return {
            name: m.attention_probs[:, :, :n, n:]
            for name, m in self.joint_attentions().items()
            if m.attention_probs is not None
        }
