"""Captions of the shapes world: full ("a small red circle in the top left"), partial ("a red
shape"), and back from a caption to the attributes it names.

"a {size} {color} {shape} in the {position}"; "shape" is the word for an unspecified shape.
Training shows partial captions too, so that partial prompts work and classifier-free guidance
has something to choose between.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sdedu._checks import check_number_range, describe
from sdedu.data.shapes.world import (
    ATTRIBUTES,
    COLORS,
    CONCEPT_COLORS,
    CONCEPT_SHAPES,
    CONCEPT_VOCABULARY,
    POSITIONS,
    SHAPES,
    SIZES,
    VOCABULARY,
    check_attributes,
)

__all__ = ["caption", "random_partial_caption", "parse_caption"]


def caption(attributes: dict, drop: Sequence[str] = ()) -> str:
    """The caption of one image, leaving out the attributes named in `drop`.

    "a {size} {color} {shape} in the {position}"; a dropped shape is said as "shape", a dropped
    size, colour or position is left out: caption(a, drop=("size", "position")) -> "a red circle".
    Dropping everything gives "a shape".

    Args:
        attributes: dict with keys shape, color, size, position (values from the constants; the
            new concepts, "orange" and "diamond", are said as any other colour and shape).
        drop: names of attributes to leave out, a subset of ATTRIBUTES.
    """
    check_attributes(attributes, concepts=True)
    unknown = [name for name in drop if name not in ATTRIBUTES]
    if unknown:
        raise ValueError(f"drop must name attributes from {ATTRIBUTES}; got {list(drop)!r}")
    words = ["a"]
    if "size" not in drop:
        words.append(attributes["size"])
    if "color" not in drop:
        words.append(attributes["color"])
    words.append("shape" if "shape" in drop else attributes["shape"])
    if "position" not in drop:
        words += ["in", "the", attributes["position"]]
    return " ".join(words)


def random_partial_caption(attributes: dict, generator: torch.Generator | None = None, p_drop: float = 0.5) -> str:
    """A caption with each attribute dropped independently with probability `p_drop`.

    Independent drops make every partial prompt appear in training ("a red shape" is the caption
    of red circles, squares and triangles alike, in equal numbers), so the model learns that
    "a red shape" means any of the three shapes, and guidance has a real choice to make.

    Args:
        attributes: dict with keys shape, color, size, position.
        generator: torch.Generator for reproducible drops.
        p_drop: probability of dropping each attribute, in [0, 1].
    """
    check_number_range("p_drop", p_drop, 0.0, 1.0)
    coins = torch.rand(len(ATTRIBUTES), generator=generator)
    drop = [name for name, coin in zip(ATTRIBUTES, coins.tolist()) if coin < p_drop]
    return caption(attributes, drop=drop)


def parse_caption(text: str) -> dict:
    """The attributes a caption names: {"color": "red", "shape": "circle"} for "a red circle".

    The inverse of `caption`: attributes the caption leaves out (or says only as "shape") are
    absent from the result. Used by `sdedu.metrics` to score only what a prompt asks for. The new
    concepts' words (CONCEPT_VOCABULARY: "orange", "diamond") are read too; other words are refused.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str; got {describe(text)}")
    words = text.lower().split()
    known = VOCABULARY + CONCEPT_VOCABULARY
    unknown = sorted({w for w in words if w not in known})
    if unknown:
        raise ValueError(f"caption {text!r} has words outside the vocabulary: {unknown}; vocabulary: {list(known)}")
    named = {}
    joined = " ".join(words)
    for position in sorted(POSITIONS, key=len, reverse=True):
        if joined.endswith("the " + position):
            named["position"] = position
            break
    for word in words:
        if word in SHAPES + CONCEPT_SHAPES:
            named["shape"] = word
        elif word in COLORS + CONCEPT_COLORS:
            named["color"] = word
        elif word in SIZES:
            named["size"] = word
    return named
