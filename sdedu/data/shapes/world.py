"""The shapes world's constants: what an image can hold, where, in which colour, and the words for it.

Every image is 32x32 RGB on a black background and holds one axis-aligned shape:

    shape     circle, square, triangle (pointing up)
    color     red, green, blue, yellow, magenta, cyan (pure RGB primaries / secondaries)
    size      small (about 6 px across), large (about 13 px across)
    position  top left, top right, bottom left, bottom right, center

An image's attributes are a dict {"shape": ..., "color": ..., "size": ..., "position": ...}.
"""

from __future__ import annotations

from sdedu._checks import describe

__all__ = [
    "SHAPES",
    "COLORS",
    "SIZES",
    "POSITIONS",
    "ATTRIBUTES",
    "COLOR_RGB",
    "HELD_OUT",
    "IMAGE_SIZE",
    "POSITION_CENTER",
    "SIZE_HALF_EXTENT",
    "CENTER_JITTER",
    "SIZE_JITTER",
    "VOCABULARY",
    "CONCEPT_COLORS",
    "CONCEPT_SHAPES",
    "CONCEPT_COLOR_RGB",
    "CONCEPTS",
    "CONCEPT_VOCABULARY",
    "STYLES",
    "OUTLINE_WIDTH",
    "check_attributes",
    "check_style",
]

SHAPES = ("circle", "square", "triangle")
COLORS = ("red", "green", "blue", "yellow", "magenta", "cyan")
SIZES = ("small", "large")
POSITIONS = ("top left", "top right", "bottom left", "bottom right", "center")
ATTRIBUTES = ("shape", "color", "size", "position")

#: RGB in [0, 1] of each colour, in the order of `COLORS`.
COLOR_RGB = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "magenta": (1.0, 0.0, 1.0),
    "cyan": (0.0, 1.0, 1.0),
}

#: (colour, shape) pairs never drawn for training: the compositional-generalisation test.
#: Both colours are secondaries, so every primary (red, green, blue) is seen in every shape and the
#: partial prompt "a red shape" can, and should, give circles, squares and triangles alike.
HELD_OUT = (("magenta", "triangle"), ("cyan", "square"))

IMAGE_SIZE = 32
#: Centre (x, y) in pixels of each position; x grows rightwards, y downwards.
POSITION_CENTER = {
    "top left": (8.0, 8.0),
    "top right": (24.0, 8.0),
    "bottom left": (8.0, 24.0),
    "bottom right": (24.0, 24.0),
    "center": (16.0, 16.0),
}
#: Half-extent in pixels (circle radius, half the side of the square and of the triangle's box).
SIZE_HALF_EXTENT = {"small": 3.0, "large": 6.5}

#: Default jitter: centre offset up to +-1 px in x and y, half-extent up to +-0.3 px.
CENTER_JITTER = 1.0
SIZE_JITTER = 0.3


def _vocabulary() -> tuple[str, ...]:
    words = {"a", "in", "the", "shape", *SHAPES, *COLORS, *SIZES}
    for position in POSITIONS:
        words.update(position.split())
    return tuple(sorted(words))


#: Every word any caption can use, sorted.
VOCABULARY = _vocabulary()

#: New concepts for teaching (issue 18, `sdedu.adapt.teach`): the colour orange and the diamond (a square
#: turned 45 degrees, its corners on the same box as the other shapes). Opt-in only: `render` draws them
#: when asked and `sample_concept` samples them, but `sample`, `training_batches` and VOCABULARY never
#: hold them, so the shipped model never saw them and its weights and recipes are unchanged.
CONCEPT_COLORS = ("orange",)
CONCEPT_SHAPES = ("diamond",)
CONCEPT_COLOR_RGB = {"orange": (1.0, 0.5, 0.0)}
CONCEPTS = CONCEPT_COLORS + CONCEPT_SHAPES
#: The words the new concepts add to captions, sorted.
CONCEPT_VOCABULARY = tuple(sorted(CONCEPTS))

#: How a shape is drawn: filled (the standard world) or as an outline OUTLINE_WIDTH px wide, inside its edge.
STYLES = ("filled", "outline")
OUTLINE_WIDTH = 1.5


def check_attributes(attributes, concepts: bool = False) -> None:
    """Require a dict with a valid value for each of ATTRIBUTES (the error names what is wrong).

    concepts: also accept the new concepts (CONCEPT_SHAPES, CONCEPT_COLORS).
    """
    if not isinstance(attributes, dict):
        raise TypeError(f"attributes must be a dict with keys {ATTRIBUTES}; got {describe(attributes)}")
    shapes, colors = (SHAPES + CONCEPT_SHAPES, COLORS + CONCEPT_COLORS) if concepts else (SHAPES, COLORS)
    for name, table in zip(ATTRIBUTES, (shapes, colors, SIZES, POSITIONS)):
        if name not in attributes:
            raise ValueError(f"attributes must have the key {name!r}; got keys {sorted(attributes)}")
        if attributes[name] not in table:
            raise ValueError(f"attributes[{name!r}] must be one of {table}; got {attributes[name]!r}")


def check_style(style) -> str:
    """Require one of STYLES; returns it."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}; got {describe(style)}")
    return style
