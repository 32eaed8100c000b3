"""A style LoRA: the "outline" style (shapes drawn as outlines), learned from 16 images, applied to any prompt.

A style LoRA teaches a look rather than an object: its images share the style and vary in content,
their captions say the content and add one trigger word. Here the look is the shapes world's
outline rendering (`shapes.render(..., style="outline")`), the trigger word is "outline", and the
LoRA is taught by `sdedu.adapt.teach` (method "lora" by default: a rank-r update of the UNet's
attention and feed-forward projections; the new word keeps its initial embedding row, which the
LoRA learns to read):

    styled = teach_style(pipe)                                   # 16 images, "a small red circle in the top left outline"
    styled(["a large blue square in the center outline"])       # any prompt: add the word

Measured by `fill_fraction` (`sdedu.metrics`: the lit share of the region the shape encloses, 1 for a
filled shape, 0.3-0.7 for a large rendered outline) on LARGE shapes of content the 16 images need not
have shown, with and without the trigger word, and on the original pipeline.
"""

from __future__ import annotations

import torch

from sdedu._checks import check_int_range
from sdedu.adapt.teach import teach
from sdedu.data import shapes
from sdedu.metrics import fill_fraction

__all__ = ["STYLE_WORD", "EVAL_SEED", "style_examples", "teach_style", "style_prompts", "measure_style"]

STYLE_WORD = "outline"
EVAL_SEED = 30_000  # the measured prompts' attributes: a seed the teaching images' (0, ...) do not use


def style_examples(n: int = 16, seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """n outline images (n, 3, 32, 32) of random content and their captions with the style word appended."""
    images, captions, _ = shapes.sample_concept(n, None, seed=seed, style="outline")
    return images, [f"{c} {STYLE_WORD}" for c in captions]


def teach_style(pipe, n: int = 16, steps: int | None = None, seed: int = 0, method: str = "lora", **kwargs):
    """A new pipeline that draws outlines when a prompt ends with STYLE_WORD (`teach` on `style_examples`)."""
    images, captions = style_examples(n, seed)
    return teach(pipe, images, captions, method=method, steps=steps, seed=seed, **kwargs)


def style_prompts(n: int, seed: int = EVAL_SEED) -> tuple[list[str], list[dict]]:
    """n full captions of LARGE shapes (held-out pairs excluded) and their attributes: the content to style."""
    n = check_int_range("n", n, 1, 10**6)
    attributes = shapes.sample_attributes(n, torch.Generator().manual_seed(seed), exclude_held_out=True)
    attributes = [{**a, "size": "large"} for a in attributes]
    return [shapes.caption(a) for a in attributes], attributes


def measure_style(styled, pipe, n: int = 32, seed: int = EVAL_SEED, **kwargs) -> dict:
    """Mean fill fraction of large shapes: the original pipeline, the styled one without and with the word.

    Args:
        styled: the pipeline `teach_style` returned.  pipe: the original pipeline.
        n: prompts (from `style_prompts`).
        kwargs: passed to both pipelines' calls (num_inference_steps, seed, ...).
    Returns:
        {"original", "styled, no word", "styled, with the word", "rendered outline"}: mean fill fractions;
        "images": {the same keys but the last: (n, 3, 32, 32)}; "prompts": the n prompts.
    """
    prompts, attributes = style_prompts(n, seed)
    images = {
        "original": pipe(prompts, **kwargs),
        "styled, no word": styled(prompts, **kwargs),
        "styled, with the word": styled([f"{p} {STYLE_WORD}" for p in prompts], **kwargs),
    }
    result = {name: float(fill_fraction(x.cpu()).mean()) for name, x in images.items()}
    reference = shapes.render(attributes, generator=torch.Generator().manual_seed(seed), style="outline")
    result["rendered outline"] = float(fill_fraction(reference).mean())
    return {**result, "images": images, "prompts": prompts}
