"""The 2-D MLP denoiser and its training helper: shapes, time dependence, learning, sampling."""

import pytest
import torch

from sdedu.data.toy2d import make_gaussians
from sdedu.models.mlp import MLPDenoiser, MLPDenoiserConfig
from sdedu.samplers import DDIMSampler, DDPMSampler
from sdedu.schedules import NoiseSchedule
from sdedu.training.toy import sample_toy, train_toy_denoiser


def test_output_shape_and_dtype():
    model = MLPDenoiser(MLPDenoiserConfig(hidden=32, num_layers=2))
    eps_pred = model(torch.randn(7, 2), torch.randint(0, 1000, (7,)))
    assert eps_pred.shape == (7, 2) and eps_pred.dtype == torch.float32


def test_other_data_dims_work():
    model = MLPDenoiser(MLPDenoiserConfig(data_dim=5, hidden=16, num_layers=1))
    assert model(torch.randn(3, 5), torch.zeros(3, dtype=torch.int64)).shape == (3, 5)


def test_the_output_depends_on_t():
    torch.manual_seed(0)
    model = MLPDenoiser(MLPDenoiserConfig(hidden=32, num_layers=2))
    x_t = torch.randn(4, 2)
    early = model(x_t, torch.full((4,), 10))
    late = model(x_t, torch.full((4,), 900))
    assert not torch.allclose(early, late, atol=1e-4)


def test_a_0_dim_t_is_broadcast_to_the_batch():
    model = MLPDenoiser(MLPDenoiserConfig(hidden=16, num_layers=1))
    x_t = torch.randn(3, 2)
    torch.testing.assert_close(model(x_t, torch.tensor(5)), model(x_t, torch.full((3,), 5)))


def test_bad_inputs_name_the_argument():
    model = MLPDenoiser(MLPDenoiserConfig(hidden=16, num_layers=1))
    with pytest.raises(ValueError, match="x_t must have shape"):
        model(torch.randn(3, 3), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"t must have shape \(B,\)"):
        model(torch.randn(3, 2), torch.zeros(4, dtype=torch.int64))
    with pytest.raises(ValueError, match="time_embed_dim must be even"):
        MLPDenoiserConfig(time_embed_dim=7)


@pytest.fixture(scope="module")
def trained():
    """A small denoiser trained on two tight Gaussians (a few seconds on one thread)."""
    schedule = NoiseSchedule.linear(T=100, beta_start=1e-3, beta_end=0.2)
    points = make_gaussians(2000, modes=2, radius=1.5, std=0.1)
    model, losses = train_toy_denoiser(
        points,
        schedule,
        steps=600,
        batch_size=128,
        config=MLPDenoiserConfig(hidden=64, num_layers=2),
        generator=torch.Generator().manual_seed(0),
        progress=False,
    )
    return schedule, model, losses


def test_training_lowers_the_loss(trained):
    _, model, losses = trained
    assert len(losses) == 600
    assert sum(losses[-100:]) / 100 < 0.7 * sum(losses[:100]) / 100
    assert not model.training


def test_training_is_reproducible_with_a_seeded_generator():
    schedule = NoiseSchedule.linear(T=50)
    points = make_gaussians(100)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)  # the initial weights
        _, losses = train_toy_denoiser(
            points,
            schedule,
            steps=5,
            config=MLPDenoiserConfig(hidden=8, num_layers=1),
            generator=torch.Generator().manual_seed(1),
            progress=False,
        )
        runs.append(losses)
    assert runs[0] == runs[1]


@pytest.mark.parametrize("make_sampler", [lambda s: DDPMSampler(s), lambda s: DDIMSampler(s)])
def test_samples_land_on_the_training_modes(trained, make_sampler):
    schedule, model, _ = trained
    sampler = make_sampler(schedule)
    sampler.set_timesteps(50)
    x0, trajectory, timesteps = sample_toy(
        model, sampler, 500, generator=torch.Generator().manual_seed(2), return_trajectory=True
    )
    assert x0.shape == (500, 2) and trajectory.shape == (51, 500, 2) and len(timesteps) == 50
    torch.testing.assert_close(trajectory[-1], x0)
    means = torch.tensor([[1.5, 0.0], [-1.5, 0.0]])
    nearest = torch.cdist(x0, means).min(dim=1).values
    # Pure noise would put most points far from both modes; the trained chain brings them home.
    assert (nearest < 0.5).float().mean() > 0.9
    share = (x0[:, 0] > 0).float().mean()
    assert 0.25 < share < 0.75


def test_ddim_eta0_sampling_is_deterministic_given_x_T(trained):
    schedule, model, _ = trained
    sampler = DDIMSampler(schedule, eta=0.0)
    sampler.set_timesteps(10)
    a = sample_toy(model, sampler, 20, generator=torch.Generator().manual_seed(5))
    b = sample_toy(model, sampler, 20, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b)


def test_training_rejects_mismatched_points():
    model = MLPDenoiser(MLPDenoiserConfig(data_dim=3, hidden=8, num_layers=1))
    with pytest.raises(ValueError, match="points must have shape"):
        train_toy_denoiser(torch.randn(10, 2), NoiseSchedule.linear(T=10), steps=1, model=model, progress=False)
