"""Sampling the shapes world: uniform, independent attributes, rendered, with their captions.

`sample(n, seed)` draws a fixed evaluation set; `training_batches` an endless training stream
with partial captions. Two (colour, shape) pairs, `HELD_OUT`, can be excluded: asking the model
for them measures compositional generalisation. `sample_concept` draws the new concepts (orange,
the diamond) or the outline style, for teaching (`sdedu.adapt.teach`); the two others never do.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from sdedu._checks import check_int_range, check_number_range
from sdedu.data.shapes.captions import caption
from sdedu.data.shapes.drawing import render_codes
from sdedu.data.shapes.world import (
    ATTRIBUTES,
    COLORS,
    CONCEPT_COLORS,
    CONCEPT_SHAPES,
    CONCEPTS,
    HELD_OUT,
    POSITIONS,
    SHAPES,
    SIZES,
    check_style,
)

__all__ = [
    "attributes_from_codes",
    "sample_indices",
    "sample_attributes",
    "sample",
    "sample_concept",
    "training_batches",
]


def attributes_from_codes(index: dict) -> list[dict]:
    """Integer codes {"shape": (n,), "color": (n,), "size": (n,), "position": (n,)} -> n attribute dicts."""
    shapes, colors = SHAPES + CONCEPT_SHAPES, COLORS + CONCEPT_COLORS
    return [
        {"shape": shapes[s], "color": colors[c], "size": SIZES[z], "position": POSITIONS[p]}
        for s, c, z, p in zip(*(index[name].tolist() for name in ATTRIBUTES))
    ]


def sample_attributes(n: int, generator: torch.Generator | None = None, exclude_held_out: bool = False) -> list[dict]:
    """n attribute dicts, each attribute uniform and independent (held-out pairs redrawn if asked)."""
    check_int_range("n", n, 0, 10**8)
    index = sample_indices(n, generator, exclude_held_out)
    return attributes_from_codes(index)


def sample_indices(n: int, generator: torch.Generator | None, exclude_held_out: bool) -> dict:
    """Uniform integer codes for each attribute; held-out (colour, shape) pairs are redrawn."""
    index = {
        "shape": torch.randint(len(SHAPES), (n,), generator=generator),
        "color": torch.randint(len(COLORS), (n,), generator=generator),
        "size": torch.randint(len(SIZES), (n,), generator=generator),
        "position": torch.randint(len(POSITIONS), (n,), generator=generator),
    }
    if exclude_held_out:
        held = torch.zeros(len(COLORS), len(SHAPES), dtype=torch.bool)
        for color, shape in HELD_OUT:
            held[COLORS.index(color), SHAPES.index(shape)] = True
        # Redraw only the colour of a held-out pair: the shape distribution stays uniform and
        # the held-out colour still appears with the other shapes.
        while True:
            bad = held[index["color"], index["shape"]]
            if not bad.any():
                break
            index["color"][bad] = torch.randint(len(COLORS), (int(bad.sum()),), generator=generator)
    return index


def sample(n: int, seed: int = 0, exclude_held_out: bool = False, device="cpu"):
    """n random images of the shapes world with their full captions and attributes.

    Args:
        n: number of images.
        seed: the same seed gives the same images, captions and attributes.
        exclude_held_out: never draw the (colour, shape) pairs in HELD_OUT (for training).
        device: where the images live.
    Returns:
        images (n, 3, 32, 32) float32 in [0, 1], captions list[str], attributes list[dict].
    """
    check_int_range("n", n, 0, 10**8)
    generator = torch.Generator().manual_seed(int(seed))
    index = sample_indices(n, generator, exclude_held_out)
    images = render_codes(**index, generator=generator).to(device)
    attributes = attributes_from_codes(index)
    return images, [caption(a) for a in attributes], attributes


def sample_concept(n: int, concept: str | None = None, seed: int = 0, style: str = "filled", device="cpu"):
    """n images showing a new concept, with their full captions and attributes (for `sdedu.adapt.teach`).

    The other attributes are uniform as in `sample`; the concept replaces the colour ("orange") or
    the shape ("diamond") of every image. concept=None keeps the standard world (for a style alone).

    Args:
        n: number of images.
        concept: one of CONCEPTS ("orange", "diamond") or None.
        seed: the same seed gives the same images, captions and attributes.
        style: one of STYLES, "filled" or "outline".
        device: where the images live.
    Returns:
        images (n, 3, 32, 32) float32 in [0, 1], captions list[str], attributes list[dict].
    """
    check_int_range("n", n, 0, 10**8)
    check_style(style)
    if concept is not None and concept not in CONCEPTS:
        raise ValueError(f"concept must be one of {CONCEPTS} or None; got {concept!r}")
    generator = torch.Generator().manual_seed(int(seed))
    index = sample_indices(n, generator, exclude_held_out=False)
    if concept in CONCEPT_COLORS:
        index["color"].fill_(len(COLORS) + CONCEPT_COLORS.index(concept))
    elif concept in CONCEPT_SHAPES:
        index["shape"].fill_(len(SHAPES) + CONCEPT_SHAPES.index(concept))
    images = render_codes(**index, generator=generator, style=style).to(device)
    attributes = attributes_from_codes(index)
    return images, [caption(a) for a in attributes], attributes


def training_batches(
    batch_size: int,
    seed: int = 0,
    p_drop: float = 0.5,
    p_full: float = 0.5,
    exclude_held_out: bool = True,
    device="cpu",
) -> Iterator[tuple[torch.Tensor, list[str]]]:
    """An endless stream of (images (B, 3, 32, 32), captions) for training, fresh every batch.

    A fraction `p_full` of captions is complete; the rest drop each attribute independently with
    probability `p_drop` (see `random_partial_caption`). Held-out pairs are excluded by default.
    The trainer applies its own conditioning dropout (the empty caption) on top.
    """
    check_int_range("batch_size", batch_size, 1, 10**6)
    check_number_range("p_drop", p_drop, 0.0, 1.0)
    check_number_range("p_full", p_full, 0.0, 1.0)
    generator = torch.Generator().manual_seed(int(seed))
    while True:
        index = sample_indices(batch_size, generator, exclude_held_out)
        images = render_codes(**index, generator=generator).to(device)
        full = torch.rand(batch_size, generator=generator) < p_full
        drops = torch.rand(batch_size, len(ATTRIBUTES), generator=generator) < p_drop  # (B, 4)
        captions = []
        for i, item in enumerate(attributes_from_codes(index)):
            drop = () if full[i] else [name for name, d in zip(ATTRIBUTES, drops[i].tolist()) if d]
            captions.append(caption(item, drop=drop))
        yield images, captions
