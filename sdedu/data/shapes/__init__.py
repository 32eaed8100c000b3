"""The shapes world: the course's canonical text-to-image data set, drawn procedurally.

Every image is 32x32 RGB on a black background and holds one axis-aligned shape:

    shape     circle, square, triangle (pointing up)
    color     red, green, blue, yellow, magenta, cyan (pure RGB primaries / secondaries)
    size      small (about 6 px across), large (about 13 px across)
    position  top left, top right, bottom left, bottom right, center

A caption names all four: "a small red circle in the top left", "a large blue square in the
center". Training also shows partial captions ("a red circle", "a triangle", "a large shape",
"a red shape"; "shape" is the word for an unspecified shape) so that partial prompts work and
classifier-free guidance has something to choose between.

Two (colour, shape) pairs, `HELD_OUT`, are never drawn for training; asking the model for
them measures compositional generalisation (it has seen magenta things and triangles, never a
magenta triangle).

Nothing is downloaded: `sample(n, seed)` draws n fresh images in well under a second for 10k,
because rendering is one vectorised torch expression over a (n, 32, 32) pixel grid. Edges are
anti-aliased by turning a signed distance (in pixels) into pixel coverage,
coverage = clamp(0.5 - signed_distance, 0, 1).

The package, one module per idea (every name is importable from `sdedu.data.shapes`):

    world     the attribute values, colours, positions, sizes, HELD_OUT, VOCABULARY
    captions  caption, random_partial_caption, parse_caption
    drawing   render (attributes -> images in [0, 1])
    sampling  sample_attributes, sample, training_batches, sample_concept

New concepts for teaching (issue 18): the colour "orange" (RGB 1, 0.5, 0) and the shape "diamond"
(a square turned 45 degrees), and the "outline" style, are opt-in: `render` draws them when asked,
`sample_concept` samples them; `sample`, `training_batches` and VOCABULARY never hold them.
"""

from sdedu.data.shapes.captions import caption, parse_caption, random_partial_caption
from sdedu.data.shapes.drawing import render
from sdedu.data.shapes.sampling import sample, sample_attributes, sample_concept, training_batches
from sdedu.data.shapes.world import (
    ATTRIBUTES,
    CENTER_JITTER,
    COLOR_RGB,
    COLORS,
    CONCEPT_COLOR_RGB,
    CONCEPT_COLORS,
    CONCEPT_SHAPES,
    CONCEPT_VOCABULARY,
    CONCEPTS,
    HELD_OUT,
    IMAGE_SIZE,
    OUTLINE_WIDTH,
    POSITION_CENTER,
    POSITIONS,
    SHAPES,
    SIZE_HALF_EXTENT,
    SIZE_JITTER,
    SIZES,
    STYLES,
    VOCABULARY,
)

__all__ = [
    "ATTRIBUTES",
    "CENTER_JITTER",
    "COLOR_RGB",
    "COLORS",
    "CONCEPT_COLOR_RGB",
    "CONCEPT_COLORS",
    "CONCEPT_SHAPES",
    "CONCEPT_VOCABULARY",
    "CONCEPTS",
    "HELD_OUT",
    "OUTLINE_WIDTH",
    "IMAGE_SIZE",
    "POSITION_CENTER",
    "POSITIONS",
    "SHAPES",
    "SIZE_HALF_EXTENT",
    "SIZE_JITTER",
    "SIZES",
    "STYLES",
    "VOCABULARY",
    "caption",
    "parse_caption",
    "random_partial_caption",
    "render",
    "sample",
    "sample_attributes",
    "sample_concept",
    "training_batches",
]
