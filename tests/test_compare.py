"""Distances between point clouds (closed-form cases) and the GAN / VAE / diffusion comparison."""

import math

import pytest
import torch

from sdedu import compare


def cloud(n=600, seed=0):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))


def test_mmd_is_zero_for_identical_clouds_and_grows_with_a_shift():
    x = cloud()
    assert compare.mmd_rbf(x, x) == pytest.approx(0.0, abs=1e-12)
    shifts = [compare.mmd_rbf(x, x + torch.tensor([d, 0.0])) for d in (0.1, 0.5, 2.0)]
    assert 0 < shifts[0] < shifts[1] < shifts[2]
    assert compare.mmd_rbf(x, cloud(seed=1)) < shifts[1]  # two samples of N(0, I) are closer than a 0.5 shift
    assert compare.mmd_rbf(x, x + 0.5) == pytest.approx(compare.mmd_rbf(x + 0.5, x))


def test_sliced_wasserstein_of_a_translation_is_its_mean_projection():
    """For y = x + c every 1-D projection moves by theta . c, so SW1 = |c| E|cos| = |c| 2 / pi in 2-D."""
    x = cloud()
    c = torch.tensor([1.2, -0.5])
    got = compare.sliced_wasserstein(x, x + c, num_projections=20_000)
    assert got == pytest.approx(float(c.norm()) * 2 / math.pi, rel=0.02)
    assert compare.sliced_wasserstein(x, x) == pytest.approx(0.0, abs=1e-12)
    assert compare.sliced_wasserstein(x, cloud(900, seed=2)) < 0.15  # different sizes work


def test_frechet_distance_closed_forms():
    x = cloud(2000)
    mu = torch.tensor([0.3, -0.4])
    assert compare.frechet_distance(x, x + mu) == pytest.approx(0.25, rel=1e-6)  # |mu|^2, same covariance
    # y = 2 x: means m and 2 m, covariances S and 4 S, so FD = |m|^2 + Tr(S + 4 S - 2 (4 S^2)^(1/2)) = |m|^2 + Tr(S).
    mean = x.mean(0)
    expected = float((mean - 2 * mean).pow(2).sum() + torch.trace(torch.cov(x.T)))
    assert compare.frechet_distance(x, 2 * x) == pytest.approx(expected, rel=1e-6)


def test_distances_reject_mismatched_input():
    with pytest.raises(ValueError, match="same number of features"):
        compare.mmd_rbf(torch.zeros(5, 2), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="at least 2 points"):
        compare.frechet_distance(torch.zeros(1, 2), torch.zeros(5, 2))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        compare.sliced_wasserstein([[0.0, 1.0]], torch.zeros(5, 2))


def test_mode_coverage_counts_points_per_centre():
    centres = torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
    points = torch.tensor([[0.1, 0.0], [0.0, 0.1], [5.1, 0.0], [2.5, 2.5]])
    out = compare.mode_coverage(points, centres, radius=0.5)
    assert out["counts"] == [2, 1, 0] and out["modes_covered"] == 2
    assert out["off_mode_fraction"] == pytest.approx(0.25)


def test_gan_and_vae_train_and_sample():
    from sdedu.data.toy2d import make_gaussians

    points = make_gaussians(512, seed=0)
    gan, gan_losses = compare.train_gan(
        points, steps=30, batch_size=64, hidden=32, layers=2, progress=False, generator=torch.Generator().manual_seed(0)
    )
    vae, vae_losses = compare.train_vae(
        points,
        steps=150,
        batch_size=64,
        hidden=32,
        layers=2,
        progress=False,
        generator=torch.Generator().manual_seed(0),
    )
    assert gan.sample(7).shape == (7, 2) and vae.sample(7).shape == (7, 2)
    assert all(math.isfinite(v) for v in gan_losses)
    assert sum(vae_losses[-20:]) / 20 < sum(vae_losses[:20]) / 20  # the negative ELBO falls
    a = vae.sample(5, torch.Generator().manual_seed(1))
    assert torch.equal(a, vae.sample(5, torch.Generator().manual_seed(1)))


def test_compare_generative_models_smoke():
    from sdedu.data.toy2d import make_moons

    out = compare.compare_generative_models(make_moons(400, seed=0), steps=5, diffusion_steps=5, progress=False)
    assert set(out["results"]) == {"GAN", "VAE", "diffusion"}
    assert out["reference"].shape == (200, 2)
    for result in out["results"].values():
        assert result.samples.shape == (200, 2)
        assert set(result.distances) == {"mmd", "sliced_w1", "frechet"}
        assert all(v >= -1e-9 for v in result.distances.values())
    assert out["results"]["diffusion"].network_calls == 5 and out["results"]["GAN"].network_calls == 1
    assert out["results"]["diffusion"].schedule is not None and out["results"]["VAE"].model.sample(3).shape == (3, 2)
    # an untrained model is far from the data; the other half of the data is close
    assert out["baseline"]["mmd"] < out["results"]["GAN"].distances["mmd"]
