"""sdedu.metrics: the shapes judge (near-perfect on rendered ground truth, 'none' on noise and blanks), PSNR."""

import math

import pytest
import torch

from sdedu import metrics
from sdedu.data import shapes


def test_judge_reads_ground_truth():
    images, captions, attributes = shapes.sample(3000, seed=11)
    scores = metrics.adherence(images, attributes)
    for name in shapes.ATTRIBUTES:
        assert scores[name] >= 0.995, (name, scores)
    assert scores["n"] == 3000
    # Prompts (strings) are scored the same way as attribute dicts.
    assert (
        metrics.adherence(images[:200], captions[:200])["all"]
        == metrics.adherence(images[:200], attributes[:200])["all"]
    )


def test_judge_survives_mild_noise_and_blur():
    images, _, attributes = shapes.sample(500, seed=12)
    noisy = (images + 0.03 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert metrics.adherence(noisy, attributes)["all"] >= 0.99
    kernel = torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16
    blurred = torch.nn.functional.conv2d(images.reshape(-1, 1, 32, 32), kernel.view(1, 1, 3, 3), padding=1)
    assert metrics.adherence(blurred.reshape(images.shape), attributes)["all"] >= 0.99


def test_judge_says_none_for_noise_blank_and_dim_images():
    gen = torch.Generator().manual_seed(0)
    for images in (
        torch.rand(20, 3, 32, 32, generator=gen),
        torch.zeros(3, 3, 32, 32),
        torch.full((2, 3, 32, 32), 0.3),
    ):
        for verdict in metrics.judge(images):
            assert verdict == {"shape": "none", "color": "none", "size": "none", "position": "none"}


def test_none_counts_as_wrong_and_only_named_attributes_count():
    images, _, attributes = shapes.sample(10, seed=1)
    noise = torch.rand(10, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    assert metrics.adherence(noise, attributes)["all"] == 0.0
    colour_only = [f"a {a['color']} shape" for a in attributes]
    scores = metrics.adherence(images, colour_only)
    assert set(scores) == {"color", "all", "n"} and scores["color"] == 1.0
    wrong = [{"color": "green" if a["color"] != "green" else "red"} for a in attributes]
    assert metrics.adherence(images, wrong)["color"] == 0.0


def test_judge_single_image_and_measure():
    image = shapes.render({"shape": "square", "color": "yellow", "size": "large", "position": "center"}, jitter=False)
    assert metrics.judge(image) == [{"shape": "square", "color": "yellow", "size": "large", "position": "center"}]
    m = metrics.measure(image.unsqueeze(0))
    assert m["fill"].item() == pytest.approx(1.0, abs=0.02)
    assert m["extent"].item() == pytest.approx(13.0, abs=0.1)


def test_diversity_distribution_and_entropy():
    images, _, attributes = shapes.sample(600, seed=2)
    d = metrics.diversity(images, "shape")
    assert set(d["counts"]) == set(shapes.SHAPES)
    assert sum(d["counts"].values()) == 600
    assert d["normalized_entropy"] > 0.98
    squares = shapes.render([{"shape": "square", "color": "red", "size": "small", "position": "center"}] * 10)
    collapsed = metrics.diversity(squares, "shape")
    assert collapsed["fractions"]["square"] == 1.0 and collapsed["entropy_bits"] == 0.0


def test_bad_input():
    with pytest.raises(ValueError, match="images"):
        metrics.judge(torch.rand(2, 1, 32, 32))
    with pytest.raises(TypeError, match="images"):
        metrics.judge([[0.0]])
    with pytest.raises(ValueError, match="one entry per image"):
        metrics.adherence(torch.rand(2, 3, 32, 32), ["a red shape"])
    with pytest.raises(ValueError, match="attribute"):
        metrics.diversity(torch.rand(2, 3, 32, 32), "texture")


def test_psnr_known_values_per_image_and_data_range():
    a = torch.zeros(2, 3, 32, 32)
    b = a + torch.tensor([0.1, 0.01]).view(2, 1, 1, 1)  # MSE 1e-2 and 1e-4 -> 20 and 40 dB for a range of 1
    torch.testing.assert_close(metrics.psnr(b, a), torch.tensor([20.0, 40.0]))
    # The same error on a [-1, 1] scale (data_range 2) is 20 log10(2) = 6.02 dB better.
    torch.testing.assert_close(metrics.psnr(b, a, data_range=2.0), torch.tensor([20.0, 40.0]) + 20 * math.log10(2))
    assert metrics.psnr(a, a).tolist() == pytest.approx([100.0, 100.0])  # identical: capped, not infinite
    # No clamping inside: values outside the range count as they are.
    torch.testing.assert_close(metrics.psnr(a + 1.1, a), torch.full((2,), -20 * math.log10(1.1)))


def test_psnr_bad_input():
    a = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match="same shape as reference"):
        metrics.psnr(torch.zeros(1, 3, 4, 4), a)
    with pytest.raises(ValueError, match="floating"):
        metrics.psnr(a.long(), a)
    with pytest.raises(ValueError, match="data_range"):
        metrics.psnr(a, a, data_range=0.0)
