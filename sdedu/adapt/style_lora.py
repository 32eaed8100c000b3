"""A style LoRA: the "outline" style (shapes drawn as outlines), learned from 16 images, applied to any prompt.

A style LoRA teaches a look rather than an object: its images share the style and vary in content,
their captions say the content and add one trigger word. Here the look is the shapes world's
outline rendering (`shapes.render(..., style="outline")`), the trigger word is "outline", and the
LoRA is taught by `sdedu.adapt.teach` (method "both" by default: a rank-r update of the UNet's
attention and feed-forward projections and the new word's embedding row, with prior preservation so
that prompts without the word keep their filled shapes):

    styled = teach_style(pipe)                                   # 16 images, "a small red circle in the top left outline"
    styled(["a large blue square in the center outline"])       # any prompt: add the word

Measured on LARGE shapes of content the 16 images need not have shown, for the original pipeline and
the styled one without and with the trigger word, by two readings of "how filled":

    box fill        the judge's fill ratio (`metrics.measure(images)["fill"]`): the lit mass over the area of
                    its box, 0.79 for rendered filled shapes, 0.35 for rendered outlines; it reads a
                    broken or dim outline as less filled, which is what generated outlines often are
    fill fraction   `metrics.fill_fraction`: the lit share of the region the shape encloses; strict, it needs a
                    closed lit outline to see a hole (a broken one reads as 1, filled)

Measured (`python -m sdedu.bench`'s rows: both, rank 8, 400 steps, 64 prior images; 32 prompts at
EVAL_SEED, 25 DDIM steps): box fill 0.78 original, 0.72 styled without the word, 0.50 with it (rendered
outlines 0.35, filled 0.79); fill fraction 1.00, 0.96, 0.99 (rendered outlines 0.45): the style shows
and stays with its word, but its outlines are seldom closed. Teaching took 202 s on the shared machine.
"""

from __future__ import annotations

import torch

from sdedu._checks import check_int_range
from sdedu.adapt.teach import teach
from sdedu.data import shapes
from sdedu.metrics import fill_fraction, measure

__all__ = [
    "STYLE_WORD",
    "EVAL_SEED",
    "STEPS",
    "RANK",
    "style_examples",
    "teach_style",
    "style_prompts",
    "measure_style",
]

STYLE_WORD = "outline"
EVAL_SEED = 30_000  # the measured prompts' attributes: a seed the teaching images' (0, ...) do not use
STEPS, RANK = 400, 8  # what the measured style took (see the module docstring)


def style_examples(n: int = 16, seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """n outline images (n, 3, 32, 32) of random content and their captions with the style word appended."""
    images, captions, _ = shapes.sample_concept(n, None, seed=seed, style="outline")
    return images, [f"{c} {STYLE_WORD}" for c in captions]


def teach_style(pipe, n: int = 16, steps: int = STEPS, seed: int = 0, method: str = "both", rank: int = RANK, **kwargs):
    """A new pipeline that draws outlines when a prompt ends with STYLE_WORD (`teach` on `style_examples`)."""
    images, captions = style_examples(n, seed)
    return teach(pipe, images, captions, method=method, steps=steps, seed=seed, rank=rank, **kwargs)


def style_prompts(n: int, seed: int = EVAL_SEED) -> tuple[list[str], list[dict]]:
    """n full captions of LARGE shapes (held-out pairs excluded) and their attributes: the content to style."""
    n = check_int_range("n", n, 1, 10**6)
    attributes = shapes.sample_attributes(n, torch.Generator().manual_seed(seed), exclude_held_out=True)
    attributes = [{**a, "size": "large"} for a in attributes]
    return [shapes.caption(a) for a in attributes], attributes


def measure_style(styled, pipe, n: int = 32, seed: int = EVAL_SEED, **kwargs) -> dict:
    """How filled large shapes are: the original pipeline, the styled one without and with the word.

    Args:
        styled: the pipeline `teach_style` returned.  pipe: the original pipeline.
        n: prompts (from `style_prompts`).
        kwargs: passed to both pipelines' calls (num_inference_steps, seed, ...).
    Returns:
        {"box fill": {name: mean}, "fill fraction": {name: mean}, "images": {name: (n, 3, 32, 32)}, "prompts"}
        with names "original", "styled, no word", "styled, with the word" and, for the two means,
        "rendered outline" (the style itself) and "rendered filled" (the shapes world's own look).
    """
    prompts, attributes = style_prompts(n, seed)
    images = {
        "original": pipe(prompts, **kwargs).cpu(),
        "styled, no word": styled(prompts, **kwargs).cpu(),
        "styled, with the word": styled([f"{p} {STYLE_WORD}" for p in prompts], **kwargs).cpu(),
    }
    rendered = {
        f"rendered {style}": shapes.render(attributes, generator=torch.Generator().manual_seed(seed), style=style)
        for style in ("outline", "filled")
    }
    every = {**images, **rendered}
    return {
        "box fill": {name: float(measure(x.clamp(0, 1))["fill"].mean()) for name, x in every.items()},
        "fill fraction": {name: float(fill_fraction(x.clamp(0, 1)).mean()) for name, x in every.items()},
        "images": images,
        "prompts": prompts,
    }
