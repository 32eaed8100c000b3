"""sdedu.metrics: the shapes judge (near-perfect on rendered ground truth, 'none' on noise and blanks), PSNR,
and the distances between point clouds (closed-form cases)."""

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


# ---- point clouds ------------------------------------------------------------------------------


def cloud(n=600, seed=0):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))


def test_mmd_is_zero_for_identical_clouds_and_grows_with_a_shift():
    x = cloud()
    assert metrics.mmd_rbf(x, x) == pytest.approx(0.0, abs=1e-12)
    shifts = [metrics.mmd_rbf(x, x + torch.tensor([d, 0.0])) for d in (0.1, 0.5, 2.0)]
    assert 0 < shifts[0] < shifts[1] < shifts[2]
    assert metrics.mmd_rbf(x, cloud(seed=1)) < shifts[1]  # two samples of N(0, I) are closer than a 0.5 shift
    assert metrics.mmd_rbf(x, x + 0.5) == pytest.approx(metrics.mmd_rbf(x + 0.5, x))


def test_sliced_wasserstein_of_a_translation_is_its_mean_projection():
    """For y = x + c every 1-D projection moves by theta . c, so SW1 = |c| E|cos| = |c| 2 / pi in 2-D."""
    x = cloud()
    c = torch.tensor([1.2, -0.5])
    got = metrics.sliced_wasserstein(x, x + c, num_projections=20_000)
    assert got == pytest.approx(float(c.norm()) * 2 / math.pi, rel=0.02)
    assert metrics.sliced_wasserstein(x, x) == pytest.approx(0.0, abs=1e-12)
    assert metrics.sliced_wasserstein(x, cloud(900, seed=2)) < 0.15  # different sizes work


def test_frechet_distance_closed_forms():
    x = cloud(2000)
    mu = torch.tensor([0.3, -0.4])
    assert metrics.frechet_distance(x, x + mu) == pytest.approx(0.25, rel=1e-6)  # |mu|^2, same covariance
    # y = 2 x: means m and 2 m, covariances S and 4 S, so FD = |m|^2 + Tr(S + 4 S - 2 (4 S^2)^(1/2)) = |m|^2 + Tr(S).
    mean = x.mean(0)
    expected = float((mean - 2 * mean).pow(2).sum() + torch.trace(torch.cov(x.T)))
    assert metrics.frechet_distance(x, 2 * x) == pytest.approx(expected, rel=1e-6)


def test_distances_reject_mismatched_input():
    with pytest.raises(ValueError, match="same number of features"):
        metrics.mmd_rbf(torch.zeros(5, 2), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="at least 2 points"):
        metrics.frechet_distance(torch.zeros(1, 2), torch.zeros(5, 2))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        metrics.sliced_wasserstein([[0.0, 1.0]], torch.zeros(5, 2))


def test_mode_coverage_counts_points_per_centre():
    centres = torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
    points = torch.tensor([[0.1, 0.0], [0.0, 0.1], [5.1, 0.0], [2.5, 2.5]])
    out = metrics.mode_coverage(points, centres, radius=0.5)
    assert out["counts"] == [2, 1, 0] and out["modes_covered"] == 2
    assert out["off_mode_fraction"] == pytest.approx(0.25)
