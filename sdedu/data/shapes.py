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
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch

from sdedu._checks import check_int_range, check_number_range, describe

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


# ---------------------------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------------------------


def caption(attributes: dict, drop: Sequence[str] = ()) -> str:
    """The caption of one image, leaving out the attributes named in `drop`.

    "a {size} {color} {shape} in the {position}"; a dropped shape is said as "shape", a dropped
    size, colour or position is left out: caption(a, drop=("size", "position")) -> "a red circle".
    Dropping everything gives "a shape".

    Args:
        attributes: dict with keys shape, color, size, position (values from the constants).
        drop: names of attributes to leave out, a subset of ATTRIBUTES.
    """
    _check_attributes(attributes)
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
    absent from the result. Used by `sdedu.metrics` to score only what a prompt asks for.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str; got {describe(text)}")
    words = text.lower().split()
    unknown = sorted({w for w in words if w not in VOCABULARY})
    if unknown:
        raise ValueError(
            f"caption {text!r} has words outside the vocabulary: {unknown}; vocabulary: {list(VOCABULARY)}"
        )
    named = {}
    joined = " ".join(words)
    for position in sorted(POSITIONS, key=len, reverse=True):
        if joined.endswith("the " + position):
            named["position"] = position
            break
    for word in words:
        if word in SHAPES:
            named["shape"] = word
        elif word in COLORS:
            named["color"] = word
        elif word in SIZES:
            named["size"] = word
    return named


# ---------------------------------------------------------------------------------------------
# Sampling attributes
# ---------------------------------------------------------------------------------------------


def sample_attributes(n: int, generator: torch.Generator | None = None, exclude_held_out: bool = False) -> list[dict]:
    """n attribute dicts, each attribute uniform and independent (held-out pairs redrawn if asked)."""
    check_int_range("n", n, 0, 10**8)
    index = _sample_indices(n, generator, exclude_held_out)
    return [
        {"shape": SHAPES[s], "color": COLORS[c], "size": SIZES[z], "position": POSITIONS[p]}
        for s, c, z, p in zip(*(index[name].tolist() for name in ATTRIBUTES))
    ]


def _sample_indices(n: int, generator: torch.Generator | None, exclude_held_out: bool) -> dict:
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


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def _render_codes(
    shape: torch.Tensor,
    color: torch.Tensor,
    size: torch.Tensor,
    position: torch.Tensor,
    generator: torch.Generator | None = None,
    jitter: bool = True,
) -> torch.Tensor:
    """Render images from integer attribute codes, all (n,) int64. Returns (n, 3, 32, 32)."""
    n = shape.shape[0]
    centers = torch.tensor([POSITION_CENTER[p] for p in POSITIONS])  # (5, 2)
    halves = torch.tensor([SIZE_HALF_EXTENT[s] for s in SIZES])  # (2,)
    rgb = torch.tensor([COLOR_RGB[c] for c in COLORS])  # (6, 3)

    # 1. Per-image geometry: centre (cx, cy) and half-extent r, with seeded jitter.
    cx, cy = centers[position, 0], centers[position, 1]  # (n,), (n,)
    r = halves[size]  # (n,)
    if jitter:
        offsets = torch.rand(n, 3, generator=generator) * 2 - 1  # (n, 3) in [-1, 1]
        cx = cx + CENTER_JITTER * offsets[:, 0]
        cy = cy + CENTER_JITTER * offsets[:, 1]
        r = r + SIZE_JITTER * offsets[:, 2]

    # 2. Pixel-centre offsets from the shape centre.
    grid = torch.arange(IMAGE_SIZE, dtype=torch.float32) + 0.5  # (32,)
    dx = grid.view(1, 1, -1) - cx.view(-1, 1, 1)  # (n, 1, 32)
    dy = grid.view(1, -1, 1) - cy.view(-1, 1, 1)  # (n, 32, 1)
    rr = r.view(-1, 1, 1)  # (n, 1, 1)

    # 3. Signed distance (negative inside) of each image's shape, in pixels.
    distance = torch.empty(n, IMAGE_SIZE, IMAGE_SIZE)  # (n, 32, 32)
    circle, square, triangle = (shape == k for k in range(len(SHAPES)))  # boolean masks (n,)
    distance[circle] = torch.sqrt(dx[circle] ** 2 + dy[circle] ** 2) - rr[circle]
    distance[square] = torch.maximum(dx[square].abs(), dy[square].abs()) - rr[square]
    # Triangle with apex (0, -r) and base corners (+-r, r): the base edge and the two slanted
    # edges, whose outward normals are (+-2, -1) / sqrt(5).
    base = dy[triangle] - rr[triangle]
    sides = (2 * dx[triangle].abs() - dy[triangle] - rr[triangle]) / math.sqrt(5.0)
    distance[triangle] = torch.maximum(base, sides)

    # 4. Coverage (anti-aliased mask) times colour.
    coverage = (0.5 - distance).clamp(0.0, 1.0)  # (n, 32, 32)
    return coverage.unsqueeze(1) * rgb[color].view(n, 3, 1, 1)  # (n, 3, 32, 32)


def render(attributes, jitter: bool = True, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
    """Draw the image(s) described by attribute dict(s).

    Args:
        attributes: one dict (-> (3, 32, 32)) or a list of n dicts (-> (n, 3, 32, 32)) with keys
            shape, color, size, position.
        jitter: add the small random offset of centre and size that `sample` uses; with
            jitter=False every image of the same attributes is identical.
        generator: torch.Generator (on the CPU) for reproducible jitter.
        device: where the returned tensor lives.
    Returns:
        float32 image(s) in [0, 1].
    """
    single = isinstance(attributes, dict)
    items = [attributes] if single else list(attributes)
    for item in items:
        _check_attributes(item)
    codes = {
        name: torch.tensor([table.index(item[name]) for item in items], dtype=torch.long)
        for name, table in zip(ATTRIBUTES, (SHAPES, COLORS, SIZES, POSITIONS))
    }
    images = _render_codes(**codes, generator=generator, jitter=jitter).to(device)
    return images[0] if single else images


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
    index = _sample_indices(n, generator, exclude_held_out)
    images = _render_codes(**index, generator=generator).to(device)
    attributes = [
        {"shape": SHAPES[s], "color": COLORS[c], "size": SIZES[z], "position": POSITIONS[p]}
        for s, c, z, p in zip(*(index[name].tolist() for name in ATTRIBUTES))
    ]
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
        index = _sample_indices(batch_size, generator, exclude_held_out)
        images = _render_codes(**index, generator=generator).to(device)
        full = torch.rand(batch_size, generator=generator) < p_full
        drops = torch.rand(batch_size, len(ATTRIBUTES), generator=generator) < p_drop  # (B, 4)
        captions = []
        for i, codes in enumerate(zip(*(index[name].tolist() for name in ATTRIBUTES))):
            item = {
                "shape": SHAPES[codes[0]],
                "color": COLORS[codes[1]],
                "size": SIZES[codes[2]],
                "position": POSITIONS[codes[3]],
            }
            drop = () if full[i] else [name for name, d in zip(ATTRIBUTES, drops[i].tolist()) if d]
            captions.append(caption(item, drop=drop))
        yield images, captions


def _check_attributes(attributes) -> None:
    if not isinstance(attributes, dict):
        raise TypeError(f"attributes must be a dict with keys {ATTRIBUTES}; got {describe(attributes)}")
    for name, table in zip(ATTRIBUTES, (SHAPES, COLORS, SIZES, POSITIONS)):
        if name not in attributes:
            raise ValueError(f"attributes must have the key {name!r}; got keys {sorted(attributes)}")
        if attributes[name] not in table:
            raise ValueError(f"attributes[{name!r}] must be one of {table}; got {attributes[name]!r}")
