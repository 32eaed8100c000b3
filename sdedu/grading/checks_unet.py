"""Checks for exercise 03: the parts of the UNet (timestep embedding, residual block, cross-attention).

Each learner version is compared with the library's module of the same name (sdedu.nn), on
inputs chosen so that the usual slips change the result: an image height different from its
width, a text width different from the image width, several attention heads.

    emb(t) = [cos(t f_0..f_{h-1}), sin(t f_0..f_{h-1})],  f_i = 10000^(-i/h), h = dim/2   (Vaswani et al. 2017)
    ResBlock: h = conv1(SiLU(GN(x))) + W SiLU(temb); out = skip(x) + conv2(SiLU(GN(h)))     (Ho et al. 2020, app. B)
    CrossAttention: softmax(Q K^T / sqrt(d_head)) V per head, Q from pixels, K and V from text (Rombach et al. 2022, eq. 3)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sdedu.grading.expect import expect_tensor
from sdedu.grading.registry import register
from sdedu.grading.trial import Trial

NOTEBOOK = "03_unet_parts"


# ---- the timestep embedding ---------------------------------------------------------------------


def _embedding(t, dim, *, sin_first=False, over_dim=False, positive=False, interleave=False):
    half = dim // 2
    exponent = torch.arange(half, dtype=torch.float32) / (dim if over_dim else half)
    freqs = torch.exp((1 if positive else -1) * math.log(10000) * exponent)
    args = t.float()[:, None] * freqs[None, :]  # (B, half)
    first, second = (args.sin(), args.cos()) if sin_first else (args.cos(), args.sin())
    if interleave:
        return torch.stack([first, second], dim=-1).flatten(1)  # (B, dim)
    return torch.cat([first, second], dim=-1)  # (B, dim)


@register("timestep_embedding", "timestep_embedding(t, dim): sinusoidal features of the timestep", NOTEBOOK)
def check_timestep_embedding(timestep_embedding, trial: Trial) -> str:
    from sdedu.nn.embeddings import timestep_embedding as reference

    item = "timestep_embedding"
    cases = [
        ("1 (t = [0, 1, 10, 999], dim 32)", torch.tensor([0, 1, 10, 999]), 32),
        ("2 (t = [5, 500], dim 8)", torch.tensor([5, 500]), 8),
        ("3 (t = [123], dim 64)", torch.tensor([123]), 64),
    ]
    for case, t, dim in cases:
        with trial.case(case):
            got = trial.call(item, timestep_embedding, [("t", t), ("dim", dim)], case=case, name="timestep_embedding")
            mistakes = [
                (
                    lambda: _embedding(t, dim, sin_first=True),
                    "this code base puts the cosines first, then the sines (Stable Diffusion's order).",
                ),
                (
                    lambda: _embedding(t, dim, interleave=True),
                    "concatenate all the cosines, then all the sines; do not interleave them.",
                ),
                (
                    lambda: _embedding(t, dim, over_dim=True),
                    "the exponent is i / half, with half = dim // 2 frequencies, not i / dim.",
                ),
                (
                    lambda: _embedding(t, dim, positive=True),
                    "the frequencies must fall from 1 to 1/10000: the exponent is negative.",
                ),
            ]
            expect_tensor(
                item,
                case,
                got,
                reference(t, dim),
                name="the embedding",
                atol=1e-4,
                rtol=1e-4,
                mistakes=mistakes,
                shape_hint="the embedding has `dim` features per timestep: dim // 2 cosines and dim // 2 sines.",
                default_hint="emb = [cos(t * f), sin(t * f)] with f_i = 10000 ** (-i / half), i = 0 .. half-1.",
            )
    return "3 cases, equal to sdedu.nn.embeddings.timestep_embedding"


# ---- the residual block with time conditioning ------------------------------------------------------


def _resblock(block, x, temb, *, silu_temb=True, time_after=False, skip=True, act_before_norm=False):
    norm_act = (lambda n, h: n(F.silu(h))) if act_before_norm else (lambda n, h: F.silu(n(h)))
    h = block.conv1(norm_act(block.norm1, x))
    shift = block.time_emb_proj(F.silu(temb) if silu_temb else temb)[:, :, None, None]  # (B, C, 1, 1)
    if not time_after:
        h = h + shift
    h = block.conv2(norm_act(block.norm2, h))
    if time_after:
        h = h + shift
    if not skip:
        return h
    return (x if block.conv_shortcut is None else block.conv_shortcut(x)) + h


@register("resblock", "resblock_forward(block, x, temb): the residual block with time conditioning", NOTEBOOK)
def check_resblock(resblock_forward, trial: Trial) -> str:
    from sdedu.nn.blocks import ResBlock

    item = "resblock"
    torch.manual_seed(0)
    g = trial.generator(1)
    cases = [
        (
            "1 (16 -> 32 channels, an 8 x 6 feature map, batch 2)",
            ResBlock(16, 32, time_dim=24, norm_groups=8),
            (2, 16, 8, 6),
        ),
        (
            "2 (32 -> 32 channels, a 4 x 4 feature map, batch 3)",
            ResBlock(32, 32, time_dim=24, norm_groups=8),
            (3, 32, 4, 4),
        ),
    ]
    for case, block, shape in cases:
        with trial.case(case):
            block.eval()
            x = torch.randn(shape, generator=g)
            temb = torch.randn(shape[0], 24, generator=g)
            got = trial.call(
                item,
                resblock_forward,
                [("block", block), ("x", x), ("temb", temb)],
                case=case,
                name="resblock_forward",
                error_hints={
                    "must match the size": "the time shift has shape (B, C): index it with [:, :, None, None] "
                    "to add it to every pixel; and when the channels change, the skip path goes "
                    "through block.conv_shortcut."
                },
            )
            with torch.no_grad():
                expected = block(x, temb)
                mistakes = [
                    (
                        lambda: _resblock(block, x, temb, silu_temb=False),
                        "the timestep embedding goes through SiLU before time_emb_proj.",
                    ),
                    (
                        lambda: _resblock(block, x, temb, time_after=True),
                        "add the time shift between the two convolutions, after conv1.",
                    ),
                    (
                        lambda: _resblock(block, x, temb, skip=False),
                        "a residual block adds its input back: out = skip(x) + h.",
                    ),
                    (
                        lambda: _resblock(block, x, temb, act_before_norm=True),
                        "normalise first, then SiLU: conv(SiLU(GroupNorm(x))).",
                    ),
                ]
                expect_tensor(
                    item,
                    case,
                    got,
                    expected,
                    name="the output",
                    atol=1e-4,
                    rtol=1e-4,
                    mistakes=mistakes,
                    default_hint="h = conv1(SiLU(norm1(x))) + time_emb_proj(SiLU(temb))[:, :, None, None]; "
                    "h = conv2(SiLU(norm2(h))); return skip(x) + h.",
                )
    return "2 blocks, equal to sdedu.nn.blocks.ResBlock"


# ---- cross-attention ------------------------------------------------------------------------------


def _cross_attention(attn, x, cond, *, scale=None, softmax_dim=-1, heads=None):
    B, N, _ = x.shape
    L = cond.shape[1]
    h = attn.num_heads if heads is None else heads
    q = attn.to_q(x).view(B, N, h, -1).transpose(1, 2)  # (B, h, N, d)
    k = attn.to_k(cond).view(B, L, h, -1).transpose(1, 2)  # (B, h, L, d)
    v = attn.to_v(cond).view(B, L, h, -1).transpose(1, 2)
    d = q.shape[-1]
    scores = q @ k.transpose(-2, -1) / (math.sqrt(d) if scale is None else scale(d, h))  # (B, h, N, L)
    out = scores.softmax(dim=softmax_dim) @ v  # (B, h, N, d)
    return attn.to_out(out.transpose(1, 2).reshape(B, N, -1))  # (B, N, h * d)


@register("cross_attention", "cross_attention(attn, x, cond): pixels attend to the words", NOTEBOOK)
def check_cross_attention(cross_attention, trial: Trial) -> str:
    from sdedu.nn.attention import CrossAttention

    item = "cross_attention"
    torch.manual_seed(0)
    g = trial.generator(2)
    cases = [
        (
            "1 (4 heads of 8, 12 pixels of width 24 attend to 5 tokens of width 40, batch 2)",
            CrossAttention(24, 40, num_heads=4, head_dim=8),
            (2, 12, 24),
            (2, 5, 40),
        ),
        (
            "2 (2 heads of 16, 64 pixels of width 32, 7 tokens of width 16, batch 1)",
            CrossAttention(32, 16, num_heads=2, head_dim=16),
            (1, 64, 32),
            (1, 7, 16),
        ),
    ]
    for case, attn, x_shape, cond_shape in cases:
        with trial.case(case):
            x = torch.randn(x_shape, generator=g)
            cond = torch.randn(cond_shape, generator=g) * 2
            got = trial.call(
                item,
                cross_attention,
                [("attn", attn), ("x", x), ("cond", cond)],
                case=case,
                name="cross_attention",
                error_hints={
                    "mat1 and mat2": "queries come from the pixels x (attn.to_q), keys and values from "
                    "the text cond (attn.to_k, attn.to_v): the two have different widths."
                },
            )
            with torch.no_grad():
                expected = attn(x, cond)
                mistakes = [
                    (
                        lambda: _cross_attention(attn, x, cond, scale=lambda d, h: 1.0),
                        "scale the scores by 1/sqrt(d_head) before the softmax, or it saturates.",
                    ),
                    (
                        lambda: _cross_attention(attn, x, cond, scale=lambda d, h: math.sqrt(d * h)),
                        "scale by the square root of one head's width d_head, not of the whole width.",
                    ),
                    (
                        lambda: _cross_attention(attn, x, cond, softmax_dim=-2),
                        "the softmax runs over the keys (the text tokens, the last axis): each pixel's weights over the words sum to 1.",
                    ),
                    (
                        lambda: _cross_attention(attn, x, cond, heads=1),
                        "split the width into attn.num_heads heads and attend in each head separately.",
                    ),
                ]
                expect_tensor(
                    item,
                    case,
                    got,
                    expected,
                    name="the output",
                    atol=1e-4,
                    rtol=1e-4,
                    mistakes=mistakes,
                    default_hint="per head: softmax(Q K^T / sqrt(d_head)) V, then merge the heads and apply attn.to_out.",
                )
    return "2 cases, equal to sdedu.nn.attention.CrossAttention"
