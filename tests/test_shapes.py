"""The shapes world: shapes, captions, vocabulary, held-out pairs, reproducibility."""

import math

import pytest
import torch

from sdedu.data import shapes


def test_sample_shapes_range_and_dtype():
    images, captions, attributes = shapes.sample(64, seed=0)
    assert images.shape == (64, 3, 32, 32)
    assert images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1
    assert len(captions) == len(attributes) == 64
    for a in attributes:
        assert a["shape"] in shapes.SHAPES and a["color"] in shapes.COLORS
        assert a["size"] in shapes.SIZES and a["position"] in shapes.POSITIONS


def test_same_seed_same_images_other_seed_other_images():
    a = shapes.sample(16, seed=3)
    b = shapes.sample(16, seed=3)
    c = shapes.sample(16, seed=4)
    assert torch.equal(a[0], b[0]) and a[1] == b[1]
    assert not torch.equal(a[0], c[0])


def test_background_black_and_shape_in_its_colour():
    images, _, attributes = shapes.sample(200, seed=1)
    for image, a in zip(images, attributes):
        assert image[:, 0, 0].sum() == 0  # corners are always background
        inside = image.amax(dim=0) == 1.0  # fully covered pixels
        assert inside.sum() > 4
        torch.testing.assert_close(image[:, inside].mean(dim=1), torch.tensor(shapes.COLOR_RGB[a["color"]]))


def test_geometry_area_and_position():
    """Rendered areas match the geometry (circle pi r^2, square 4 r^2, triangle 2 r^2)."""
    for shape, factor in (("circle", math.pi), ("square", 4.0), ("triangle", 2.0)):
        image = shapes.render({"shape": shape, "color": "red", "size": "large", "position": "center"}, jitter=False)
        r = shapes.SIZE_HALF_EXTENT["large"]
        assert image[0].sum().item() == pytest.approx(factor * r * r, rel=0.03)
        ys, xs = torch.nonzero(image[0] > 0.5, as_tuple=True)
        assert (xs.float().mean() + 0.5).item() == pytest.approx(16.0, abs=0.6)
    # The triangle points up: its top row is narrower than its bottom row.
    tri = shapes.render({"shape": "triangle", "color": "red", "size": "large", "position": "center"}, jitter=False)[0]
    rows = (tri > 0.5).sum(dim=1)
    filled = torch.nonzero(rows).flatten()
    assert rows[filled[0]] < rows[filled[-1]]
    top_left = shapes.render(
        {"shape": "square", "color": "red", "size": "small", "position": "top left"}, jitter=False
    )[0]
    ys, xs = torch.nonzero(top_left > 0.5, as_tuple=True)
    assert xs.float().mean() < 12 and ys.float().mean() < 12


def test_render_without_jitter_is_deterministic_and_with_jitter_varies():
    a = {"shape": "circle", "color": "blue", "size": "small", "position": "bottom right"}
    assert torch.equal(shapes.render(a, jitter=False), shapes.render(a, jitter=False))
    batch = shapes.render([a] * 8, generator=torch.Generator().manual_seed(0))
    assert batch.shape == (8, 3, 32, 32)
    assert not torch.equal(batch[0], batch[1])


def test_captions_full_and_partial():
    a = {"shape": "circle", "color": "red", "size": "small", "position": "top left"}
    assert shapes.caption(a) == "a small red circle in the top left"
    assert shapes.caption({**a, "position": "center"}) == "a small red circle in the center"
    assert shapes.caption(a, drop=("shape", "size", "position")) == "a red shape"
    assert shapes.caption(a, drop=("color", "position")) == "a small circle"
    assert shapes.caption(a, drop=shapes.ATTRIBUTES) == "a shape"
    with pytest.raises(ValueError, match="drop"):
        shapes.caption(a, drop=("colour",))
    with pytest.raises(ValueError, match="color"):
        shapes.caption({**a, "color": "purple"})


def test_parse_caption_inverts_caption():
    a = {"shape": "triangle", "color": "cyan", "size": "large", "position": "bottom right"}
    assert shapes.parse_caption(shapes.caption(a)) == a
    assert shapes.parse_caption("a red shape") == {"color": "red"}
    assert shapes.parse_caption("a shape in the center") == {"position": "center"}
    with pytest.raises(ValueError, match="purple"):
        shapes.parse_caption("a purple circle")


def test_vocabulary_covers_every_caption_and_is_sorted():
    assert list(shapes.VOCABULARY) == sorted(set(shapes.VOCABULARY))
    gen = torch.Generator().manual_seed(0)
    _, captions, attributes = shapes.sample(300, seed=2)
    partial = [shapes.random_partial_caption(a, gen, p_drop=0.5) for a in attributes]
    words = {w for c in captions + partial for w in c.split()}
    assert words <= set(shapes.VOCABULARY)
    assert "shape" in words and "center" in words


def test_partial_captions_drop_each_attribute_independently():
    gen = torch.Generator().manual_seed(0)
    a = {"shape": "square", "color": "green", "size": "large", "position": "center"}
    captions = [shapes.random_partial_caption(a, gen, p_drop=0.5) for _ in range(2000)]
    for word in ("square", "green", "large", "center"):
        assert 0.4 < sum(word in c for c in captions) / 2000 < 0.6
    assert captions.count("a green shape") / 2000 == pytest.approx(1 / 16, abs=0.02)
    assert all(shapes.random_partial_caption(a, gen, p_drop=0.0) == shapes.caption(a) for _ in range(5))


def test_held_out_pairs_excluded_only_when_asked():
    assert len(shapes.HELD_OUT) == 2
    # "a red shape" measures diversity: red must be trained with every shape.
    assert all(color != "red" for color, _ in shapes.HELD_OUT)
    _, _, with_all = shapes.sample(2000, seed=0)
    _, _, train = shapes.sample(2000, seed=0, exclude_held_out=True)
    pairs_all = {(a["color"], a["shape"]) for a in with_all}
    pairs_train = {(a["color"], a["shape"]) for a in train}
    assert set(shapes.HELD_OUT) <= pairs_all
    assert not set(shapes.HELD_OUT) & pairs_train
    assert len(pairs_train) == len(shapes.COLORS) * len(shapes.SHAPES) - 2
    # Shapes stay balanced after the exclusion.
    for shape in shapes.SHAPES:
        assert abs(sum(a["shape"] == shape for a in train) / 2000 - 1 / 3) < 0.04


def test_training_batches():
    stream = shapes.training_batches(32, seed=0, p_full=0.5)
    images, captions = next(stream)
    images2, captions2 = next(stream)
    assert images.shape == (32, 3, 32, 32) and len(captions) == 32
    assert not torch.equal(images, images2)
    first_again, captions_again = next(shapes.training_batches(32, seed=0, p_full=0.5))
    assert torch.equal(images, first_again) and captions == captions_again
    full = [c for c in captions + captions2 if " in the " in c and c.split()[-1] != "shape"]
    assert 0 < len(full) < 64


def test_bad_arguments():
    with pytest.raises(TypeError, match="n"):
        shapes.sample(2.5)
    with pytest.raises(ValueError, match="p_drop"):
        shapes.random_partial_caption(
            {"shape": "circle", "color": "red", "size": "small", "position": "center"}, p_drop=2
        )
    with pytest.raises(ValueError, match="position"):
        shapes.render({"shape": "circle", "color": "red", "size": "small"})
