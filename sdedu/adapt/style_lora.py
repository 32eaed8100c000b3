"""A style LoRA: the "outline" style (shapes drawn as outlines), learned from 16 images, applied to any prompt.

A style LoRA teaches a look rather than an object: its images share the style and vary in content,
their captions say the content and add one trigger word. Here the look is the shapes world's
outline rendering (`shapes.render(..., style="outline")`), the trigger word is "outline", and the
LoRA is taught by `sdedu.adapt.teach` (method "both" by default: a rank-r update of the UNet's
attention and feed-forward projections and the new word's embedding row, with prior preservation so
that prompts without the word keep their filled shapes):

    styled = teach_style(pipe)                                   # 16 images, "a small red circle in the top left outline"
    styled(["a large blue square in the center outline"])       # any prompt: add the word

Measured on LARGE shapes of content the 16 images need not have shown by the fill fraction
(`metrics.fill_fraction`: the painted share of the shape's convex extent, 1 for a filled shape, 0.45 for a
rendered outline), in one table with its references (box fill beside it: `metrics.measure(images)["fill"]`,
the lit mass over its box, 0.79 for filled shapes because a circle covers pi/4 of its box and a triangle half):

                               fill fraction   box fill
    rendered filled                1.00          0.79     the shapes world's own look
    rendered outline               0.45          0.35     the style itself
    outlines through the VAE       0.47          0.56     rendered outlines encoded and decoded by the shipped VAE:
                                                          the outline is finer than a latent pixel; the most a
                                                          latent model can reach
    original                       1.00          0.78     the shipped pipeline
    styled, no word                0.92          0.71     the same prompts: the style mostly stays with its word
    styled, with the word          0.50          0.52     the prompts with "outline" appended

Measured 2026-12-02: both, rank 8, 400 steps, 64 prior images; 32 prompts at EVAL_SEED, 25 DDIM steps;
teaching 115 CPU-s (one thread; 273 s wall on the shared machine). Generated outlines are often open or
broken (a C, a U): the convex extent still reads them as outlines, where a flood fill of the enclosed region
read them as filled (0.99).
"""

from __future__ import annotations

import torch

from sdedu._checks import check_int_range
from sdedu.adapt.teach import teach
from sdedu.data import shapes
from sdedu.metrics import fill_fraction, measure
from sdedu.nn.lora import DEFAULT_TARGET

__all__ = [
    "STYLE_WORD",
    "EVAL_SEED",
    "STEPS",
    "RANK",
    "RECIPE",
    "style_examples",
    "teach_style",
    "style_prompts",
    "measure_style",
]

STYLE_WORD = "outline"
EVAL_SEED = 30_000  # the measured prompts' attributes: a seed the teaching images' (0, ...) do not use
STEPS, RANK = 400, 8  # what the measured style took (see the module docstring)
RECIPE = {"target": DEFAULT_TARGET, "prior_weight": 1.0, "protect_old": 0.0, "lr": 5e-3}  # teach options, pinned


def style_examples(n: int = 16, seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """n outline images (n, 3, 32, 32) of random content and their captions with the style word appended."""
    images, captions, _ = shapes.sample_concept(n, None, seed=seed, style="outline")
    return images, [f"{c} {STYLE_WORD}" for c in captions]


def teach_style(pipe, n: int = 16, steps: int = STEPS, seed: int = 0, method: str = "both", rank: int = RANK, **kwargs):
    """A new pipeline that draws outlines when a prompt ends with STYLE_WORD (`teach` on `style_examples`).

    The measured recipe is pinned (RECIPE: LoRA on every attention and feed-forward projection, prior weight 1,
    no protection of the old captions' subspace, learning rate 5e-3), whatever `teach`'s defaults for new words;
    kwargs override it.
    """
    images, captions = style_examples(n, seed)
    return teach(pipe, images, captions, method=method, steps=steps, seed=seed, rank=rank, **{**RECIPE, **kwargs})


def style_prompts(n: int, seed: int = EVAL_SEED) -> tuple[list[str], list[dict]]:
    """n full captions of LARGE shapes (held-out pairs excluded) and their attributes: the content to style."""
    n = check_int_range("n", n, 1, 10**6)
    attributes = shapes.sample_attributes(n, torch.Generator().manual_seed(seed), exclude_held_out=True)
    attributes = [{**a, "size": "large"} for a in attributes]
    return [shapes.caption(a) for a in attributes], attributes


def measure_style(styled, pipe, n: int = 32, seed: int = EVAL_SEED, **kwargs) -> dict:
    """How filled large shapes are: the references, the original pipeline, the styled one without and with the word.

    Args:
        styled: the pipeline `teach_style` returned.  pipe: the original pipeline.
        n: prompts (from `style_prompts`).
        kwargs: passed to both pipelines' calls (num_inference_steps, seed, ...).
    Returns:
        {"fill fraction": {name: mean}, "box fill": {name: mean}, "images": {name: (n, 3, 32, 32)}, "prompts"}
        with names, in this order, "rendered filled", "rendered outline", "outlines through the VAE", "original",
        "styled, no word", "styled, with the word" (see the module docstring).
    """
    prompts, attributes = style_prompts(n, seed)
    rendered = {
        f"rendered {style}": shapes.render(attributes, generator=torch.Generator().manual_seed(seed), style=style)
        for style in ("filled", "outline")
    }
    images = {
        **rendered,
        "outlines through the VAE": pipe.decode_latents(pipe.encode_images(rendered["rendered outline"])),
        "original": pipe(prompts, **kwargs),
        "styled, no word": styled(prompts, **kwargs),
        "styled, with the word": styled([f"{p} {STYLE_WORD}" for p in prompts], **kwargs),
    }
    images = {name: x.cpu().clamp(0, 1) for name, x in images.items()}
    return {
        "fill fraction": {name: float(fill_fraction(x).mean()) for name, x in images.items()},
        "box fill": {name: float(measure(x)["fill"].mean()) for name, x in images.items()},
        "images": images,
        "prompts": prompts,
    }
