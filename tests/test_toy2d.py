"""The 2-D toy sets: shapes, dtype, seeding, scale, and the geometry each one promises; the toy trainer's targets."""

import math

import pytest
import torch

from sdedu.data.toy2d import TOY2D_NAMES, make_gaussians, make_moons, make_swiss_roll, make_toy2d
from sdedu.diffusion import noise_prediction_loss
from sdedu.models.mlp import MLPDenoiser, MLPDenoiserConfig
from sdedu.schedules import NoiseSchedule
from sdedu.training.toy import train_toy_denoiser


@pytest.mark.parametrize("name", TOY2D_NAMES)
def test_shape_dtype_and_unit_scale(name):
    points = make_toy2d(name, 5000)
    assert points.shape == (5000, 2) and points.dtype == torch.float32
    assert torch.isfinite(points).all()
    # Scaled like the N(0, I) noise they are mixed with: centred-ish, spread near 1.
    assert points.mean(0).abs().max() < 0.35
    assert ((points.std(0) > 0.7) & (points.std(0) < 1.3)).all()


@pytest.mark.parametrize("name", TOY2D_NAMES)
def test_seed_is_reproducible_and_seeds_differ(name):
    assert torch.equal(make_toy2d(name, 100, seed=3), make_toy2d(name, 100, seed=3))
    assert not torch.equal(make_toy2d(name, 100, seed=3), make_toy2d(name, 100, seed=4))


def test_generator_is_used_and_advances(generator):
    first = make_moons(50, seed=None, generator=generator)
    second = make_moons(50, seed=None, generator=generator)
    assert not torch.equal(first, second)
    assert torch.equal(first, make_moons(50, seed=None, generator=torch.Generator().manual_seed(0)))


def test_noiseless_moons_lie_on_two_unit_circles_and_alternate():
    points = make_moons(1000, noise=0.0)
    # Undo the standardisation and measure the distance to each moon's centre.
    raw = points * torch.tensor([0.87, 0.50]) + torch.tensor([0.5, 0.25])
    upper, lower = raw[0::2], raw[1::2]  # the moons alternate
    assert torch.allclose(upper.norm(dim=1), torch.ones(500), atol=1e-5)
    assert torch.allclose((lower - torch.tensor([1.0, 0.5])).norm(dim=1), torch.ones(500), atol=1e-5)
    assert (upper[:, 1] >= -1e-6).all() and (lower[:, 1] <= 0.5 + 1e-6).all()


def test_noiseless_swiss_roll_radius_equals_angle():
    points = make_swiss_roll(500, noise=0.0) * 7.0
    radius = points.norm(dim=1)
    assert radius.min() >= 1.5 * math.pi - 1e-3 and radius.max() <= 4.5 * math.pi + 1e-3


def test_gaussians_cluster_around_their_means():
    points = make_gaussians(4000, modes=4, radius=2.0, std=0.05)
    means = torch.tensor([[2.0, 0.0], [0.0, 2.0], [-2.0, 0.0], [0.0, -2.0]])
    nearest = torch.cdist(points, means).min(dim=1).values
    assert nearest.max() < 0.4
    counts = torch.cdist(points, means).argmin(dim=1).bincount(minlength=4)
    assert (counts > 800).all()


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="name must be one of"):
        make_toy2d("circles", 10)
    with pytest.raises(ValueError, match="n must be"):
        make_moons(0)
    with pytest.raises(TypeError, match="n must be"):
        make_moons(10.5)
    with pytest.raises(ValueError, match="noise must be"):
        make_swiss_roll(10, noise=-1.0)
    with pytest.raises(ValueError, match="seed or generator"):
        make_gaussians(10, seed=1, generator=torch.Generator())


@pytest.mark.parametrize("objective", ["x0", "v"])
def test_the_toy_trainer_regresses_on_x0_or_v(objective):
    # One step at lr = 0: the loss reported is noise_prediction_loss with that target on the same draws.
    points, schedule = make_moons(100), NoiseSchedule.linear(T=50)
    model = MLPDenoiser(MLPDenoiserConfig(hidden=16))
    generator = torch.Generator().manual_seed(3)
    _, losses = train_toy_denoiser(
        points,
        schedule,
        steps=1,
        batch_size=32,
        lr=0.0,
        model=model,
        generator=generator,
        progress=False,
        objective=objective,
    )
    g = torch.Generator().manual_seed(3)
    x0 = points[torch.randint(100, (32,), generator=g)]
    state = g.get_state()
    expected = noise_prediction_loss(model, x0, schedule, generator=g, prediction_type=objective)
    assert losses == [pytest.approx(expected.item(), rel=1e-6)]
    g.set_state(state)  # the same t and eps with the eps target give another loss: the target is used
    assert noise_prediction_loss(model, x0, schedule, generator=g).item() != pytest.approx(losses[0], rel=1e-3)
