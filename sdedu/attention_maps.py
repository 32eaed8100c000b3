"""Where each word of the prompt acts: Stable Diffusion's cross-attention maps, one per token.

For every latent pixel, how much attention it paid to each word (Hertz et al. 2022,
"Prompt-to-Prompt", section 3.1), averaged over heads, layers and denoising steps:
`word_attention_maps(pipe, prompt)` measures them, `plot_word_maps` draws them over the image.
Nothing here changes the pipeline: stored attention is switched off again on exit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from sdedu._checks import describe
from sdedu.nn.attention import CrossAttention

__all__ = ["WordAttention", "word_attention_maps", "plot_word_maps"]


@dataclass
class WordAttention:
    """Cross-attention maps of one generated image.

    image: (3, 32, 32) the generated image in [0, 1].
    tokens: the prompt's tokens, <start> and <end> included (padding dropped unless asked for).
    maps: (len(tokens), H, W) attention per token, averaged over heads, layers and steps; at each
        pixel the values over *all* L tokens sum to 1.
    per_layer: layer name -> (len(tokens), H, W), averaged over heads and steps only.
    """

    image: torch.Tensor
    tokens: list
    maps: torch.Tensor
    per_layer: dict


@torch.no_grad()
def word_attention_maps(
    pipe,
    prompt: str,
    seed: int = 0,
    num_inference_steps: int = 25,
    guidance_scale: float | None = None,
    include_padding: bool = False,
) -> WordAttention:
    """Generate one image for `prompt` and measure where each word was looked at.

    1. Generate with `pipe`, keeping the trajectory of latents z_t.
    2. Re-run the UNet's conditional branch on each z_t with every CrossAttention module storing
       its probabilities softmax(Q K^T / sqrt(d)): (1, heads, h*w, L), queries = latent pixels,
       keys = tokens.
    3. Average over heads, fold h*w back to (h, w), upsample 4x4 layers to the 8x8 latent grid
       (nearest), and average over layers and steps.

    Args:
        pipe: a `TinyStableDiffusion`.
        prompt: one prompt.
        seed, num_inference_steps: as for `pipe(...)`.
        guidance_scale: as for `pipe(...)` (None: the pipeline's default).
        include_padding: keep the <pad> tokens (they receive attention too: nothing masks them).
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be one str; got {describe(prompt)}")
    extra = {} if guidance_scale is None else {"guidance_scale": guidance_scale}
    # 1. The image and its trajectory.
    trajectory = pipe(prompt, num_inference_steps=num_inference_steps, seed=seed, return_trajectory=True, **extra)
    cond, _ = pipe.encode_prompt([prompt])  # (1, L, D)
    ids = pipe.tokenizer([prompt])  # (1, L)
    tokens = pipe.tokenizer.decode(ids)[0]
    layers = {name: m for name, m in pipe.unet.named_modules() if isinstance(m, CrossAttention)}
    size = trajectory.latents.shape[-1]  # latent side, 8
    sums = {name: 0.0 for name in layers}
    before = {name: m.store_attention for name, m in layers.items()}
    # 2. Conditional UNet calls along the trajectory, with the probabilities kept.
    try:
        for m in layers.values():
            m.store_attention = True
        for z, t in zip(trajectory.latents[:-1], trajectory.timesteps):
            pipe.unet(z.to(pipe.device), t.reshape(1).to(pipe.device), cond)
            for name, m in layers.items():
                probs = m.attention_probs[0].mean(dim=0)  # (h*w, L), heads averaged
                side = math.isqrt(probs.shape[0])
                grid = probs.T.reshape(1, -1, side, side)  # (1, L, h, w)
                sums[name] = sums[name] + F.interpolate(grid, size=(size, size), mode="nearest")[0].cpu()  # (L, 8, 8)
    finally:
        for name, m in layers.items():
            m.store_attention = before[name]
            m.attention_probs = None
    # 3. Averages over steps (per layer) and over layers.
    steps = len(trajectory.timesteps)
    keep = len(tokens) if include_padding else tokens.index("<end>") + 1 if "<end>" in tokens else len(tokens)
    per_layer = {name: s[:keep] / steps for name, s in sums.items()}
    maps = torch.stack(list(per_layer.values())).mean(dim=0)  # (keep, 8, 8)
    return WordAttention(image=trajectory.images[0].cpu(), tokens=tokens[:keep], maps=maps, per_layer=per_layer)


def plot_word_maps(attention: WordAttention, size: float = 1.6, title: str | None = None) -> plt.Figure:
    """The image, then one panel per token: its attention map (upsampled smoothly) over the image in grey."""
    image = attention.image.permute(1, 2, 0).clamp(0, 1).numpy()  # (32, 32, 3)
    grey = image.mean(axis=2)
    H, W = grey.shape
    smooth = F.interpolate(attention.maps[None], size=(H, W), mode="bilinear", align_corners=False)[0]  # (n, H, W)
    count = len(attention.tokens) + 1
    fig, axes = plt.subplots(1, count, figsize=(size * count, size + 0.4), squeeze=False)
    axes[0, 0].imshow(image, interpolation="nearest")
    axes[0, 0].set_title("image", fontsize=9)
    vmax = float(attention.maps.max())
    for ax, token, heat in zip(axes[0, 1:], attention.tokens, smooth):
        ax.imshow(grey, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.imshow(heat.numpy(), cmap="magma", alpha=0.75, vmin=0, vmax=vmax)
        ax.set_title(token, fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
