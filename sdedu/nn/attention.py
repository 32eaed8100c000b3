"""Scaled dot-product attention, and the two ways Stable Diffusion uses it.

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_head)) V        (Vaswani et al. 2017, eq. 1)

Each query row takes a weighted average of the value rows; the weights (the *attention
probabilities*, each row summing to 1) say how well the query matches each key.

- **Self-attention**: queries, keys and values all come from the same tokens. In the UNet the
  tokens are the H*W pixels of a feature map, so every pixel can look at every other pixel.
- **Cross-attention** (Rombach et al. 2022, eq. 3): queries come from the pixels, keys and values
  from the text encoder's token embeddings `cond` (B, L, D). This is the *only* place where the
  prompt enters the UNet. Its probabilities (B, heads, H*W, L) say, for every pixel, which words
  it reads: reshaped to (H, W) per word they are the cross-attention maps the notebooks show.
  Set `store_attention = True` on a module to keep them in `.attention_probs`.

Multi-head: the width is split into `num_heads` independent heads of `head_dim` channels each,
attended separately and concatenated (Vaswani et al. 2017, section 3.2.2). Layer names
(to_q, to_k, to_v, to_out) follow diffusers' `Attention`, so weights load into either.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sdedu._checks import check_tensor

FUSED_ABOVE = 64 * 64  # N * L above which the fused attention kernel is faster on a CPU


def scaled_dot_product_attention(q, k, v, mask=None, return_probs: bool = False):
    """softmax(q k^T / sqrt(d_head)) v, written out (Vaswani et al. 2017, eq. 1).

    Args:
        q: (B, heads, N, d_head) queries.
        k, v: (B, heads, L, d_head) keys and values.
        mask: optional (B, L) bool, True where a key may be attended (False = padding).
        return_probs: also return the attention probabilities.
    Returns:
        out (B, heads, N, d_head), and probs (B, heads, N, L) when return_probs.

    Speed: without return_probs, long sequences and GPUs use the fused kernel
    `torch.nn.functional.scaled_dot_product_attention` (the same maths, without storing the
    N x L probabilities). For the short sequences of the tiny UNet on a CPU (N * L <= 64 * 64),
    the written-out products below are faster: the fused kernel's set-up costs more than the
    maths (1.3-3x slower at these sizes, measured on a 2-core CPU).
    """
    attn_mask = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, L)
    if not return_probs and (q.device.type != "cpu" or q.shape[-2] * k.shape[-2] > FUSED_ABOVE):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    # 1. Similarity of every query with every key, scaled so the softmax does not saturate.
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, heads, N, L)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    # 2. Each row becomes a probability distribution over the keys.
    probs = scores.softmax(dim=-1)  # (B, heads, N, L)
    # 3. Weighted average of the values.
    out = probs @ v  # (B, heads, N, d_head)
    return (out, probs) if return_probs else out


def _split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    B, N, inner = x.shape
    return x.view(B, N, num_heads, inner // num_heads).transpose(1, 2)  # (B, heads, N, d_head)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    B, heads, N, d_head = x.shape
    return x.transpose(1, 2).reshape(B, N, heads * d_head)  # (B, N, heads * d_head)


class CrossAttention(nn.Module):
    """Pixels (queries) attend to text tokens (keys and values): Rombach et al. 2022, eq. 3.

    Q = x W_Q,  K = cond W_K,  V = cond W_V,  out = softmax(Q K^T / sqrt(d_head)) V W_out

    Args:
        query_dim: channels of the pixel tokens x.
        context_dim: width D of the text embeddings cond.
        num_heads: number of attention heads.
        head_dim: channels per head (inner width = num_heads * head_dim).

    Set `store_attention = True` to keep the last probabilities (B, heads, N, L) in
    `attention_probs` (detached), e.g. for cross-attention maps per word.
    """

    def __init__(self, query_dim: int, context_dim: int, num_heads: int = 4, head_dim: int = 32):
        super().__init__()
        inner = num_heads * head_dim
        self.num_heads = num_heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Linear(inner, query_dim)
        self.store_attention = False
        self.attention_probs: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, N, query_dim), cond (B, L, context_dim), mask (B, L) bool -> (B, N, query_dim)."""
        check_tensor("cond", cond, ndim=3, floating=True)
        if cond.shape[0] != x.shape[0]:
            raise ValueError(f"cond must have batch size {x.shape[0]} like x; got shape {tuple(cond.shape)}")
        # 1. Project pixels to queries, tokens to keys and values; split the heads.
        q = _split_heads(self.to_q(x), self.num_heads)  # (B, heads, N, d_head)
        k = _split_heads(self.to_k(cond), self.num_heads)  # (B, heads, L, d_head)
        v = _split_heads(self.to_v(cond), self.num_heads)  # (B, heads, L, d_head)
        # 2. Attend (eq. 1 of Vaswani et al.), keeping the probabilities if asked.
        if self.store_attention:
            out, probs = scaled_dot_product_attention(q, k, v, mask, return_probs=True)
            self.attention_probs = probs.detach()  # (B, heads, N, L)
        else:
            out = scaled_dot_product_attention(q, k, v, mask)
        # 3. Concatenate the heads and project back to the pixel width.
        return self.to_out(_merge_heads(out))  # (B, N, query_dim)


class SelfAttention(nn.Module):
    """Every token attends to every token of the same sequence (Vaswani et al. 2017).

    Q = x W_Q,  K = x W_K,  V = x W_V,  out = softmax(Q K^T / sqrt(d_head)) V W_out

    Args:
        dim: channels of the tokens x.
        num_heads: number of attention heads.
        head_dim: channels per head.

    `store_attention = True` keeps the last probabilities (B, heads, N, N) in `attention_probs`.
    """

    def __init__(self, dim: int, num_heads: int = 4, head_dim: int = 32):
        super().__init__()
        inner = num_heads * head_dim
        self.num_heads = num_heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Linear(inner, dim)
        self.store_attention = False
        self.attention_probs: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, N, dim), mask (B, N) bool (False = padding, never attended) -> (B, N, dim)."""
        # 1. Queries, keys and values all from x; split the heads.
        q = _split_heads(self.to_q(x), self.num_heads)  # (B, heads, N, d_head)
        k = _split_heads(self.to_k(x), self.num_heads)  # (B, heads, N, d_head)
        v = _split_heads(self.to_v(x), self.num_heads)  # (B, heads, N, d_head)
        # 2. Attend.
        if self.store_attention:
            out, probs = scaled_dot_product_attention(q, k, v, mask, return_probs=True)
            self.attention_probs = probs.detach()  # (B, heads, N, N)
        else:
            out = scaled_dot_product_attention(q, k, v, mask)
        # 3. Concatenate the heads and project back.
        return self.to_out(_merge_heads(out))  # (B, N, dim)
