"""The forward process and the eps/x0/v algebra: closed-form checks, diffusers parity, bad input."""

import diffusers  # noqa: E402  (a dependency: the test oracle)
import pytest
import torch

from sdedu.diffusion import (
    extract,
    noise_prediction_loss,
    predict_eps_from_v,
    predict_eps_from_x0,
    predict_x0_from_eps,
    predict_x0_from_v,
    q_posterior,
    q_sample,
    randn,
    sample_timesteps,
    velocity,
)
from sdedu.schedules import NoiseSchedule

SCHEDULE = NoiseSchedule.linear()


def batch(generator, shape=(4, 3, 5, 5)):
    x0 = torch.randn(shape, generator=generator)
    eps = torch.randn(shape, generator=generator)
    t = torch.randint(0, SCHEDULE.T, (shape[0],), generator=generator)
    return x0, eps, t


# ---- extract ------------------------------------------------------------------------------


def test_extract_broadcasts_per_example(generator):
    x = torch.randn(3, 2, 4, 4, generator=generator)
    t = torch.tensor([0, 5, 999])
    out = extract(SCHEDULE.alpha_bar, t, x)
    assert out.shape == (3, 1, 1, 1) and out.dtype == x.dtype
    torch.testing.assert_close(out.flatten(), SCHEDULE.alpha_bar[t])
    assert extract(SCHEDULE.alpha_bar, 7, x).shape == (1, 1, 1, 1)
    assert extract(SCHEDULE.alpha_bar, torch.tensor(7), x).item() == SCHEDULE.alpha_bar[7].item()
    assert extract(SCHEDULE.betas, t, torch.zeros(3, 2)).shape == (3, 1)  # 2-D toy data
    assert extract(SCHEDULE.betas, t, x.double()).dtype == torch.float64


@pytest.mark.parametrize(
    "t, error, match",
    [
        (torch.tensor([[0], [1], [2]]), ValueError, r"shape \(B,\) = \(3,\).*got shape \(3, 1\)"),
        (torch.tensor([0, 1]), ValueError, r"shape \(B,\) = \(3,\).*got shape \(2,\)"),
        (torch.tensor([0, 1, 1000]), ValueError, r"values in \[0, 1000\).*got values in \[0, 1000\]"),
        (torch.tensor([-1, 1, 2]), ValueError, r"got values in \[-1, 2\]"),
        (1000, ValueError, r"in \[0, 1000\).*got 1000"),
        (-1, ValueError, r"got -1"),
        (torch.tensor([0.0, 1.0, 2.0]), TypeError, "int64 tensor.*got a torch.float32"),
        (torch.tensor([0, 1, 2], dtype=torch.int32), TypeError, "got a torch.int32"),
        (1.5, TypeError, "got float 1.5"),
        (True, TypeError, "got bool"),
    ],
)
def test_extract_rejects_bad_t(t, error, match):
    with pytest.raises(error, match="t must be " + ".*" + match):
        extract(SCHEDULE.alpha_bar, t, torch.zeros(3, 2, 4, 4))


# ---- the forward process ------------------------------------------------------------------


def test_q_sample_equals_diffusers_add_noise(generator):
    x0, eps, t = batch(generator)
    for make, config in [
        (NoiseSchedule.linear, {}),
        (NoiseSchedule.scaled_linear, dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)),
        (NoiseSchedule.cosine, dict(beta_schedule="squaredcos_cap_v2")),
    ]:
        ref = diffusers.DDPMScheduler(**config).add_noise(x0, eps, t)
        torch.testing.assert_close(q_sample(x0, t, make(), noise=eps), ref, rtol=0, atol=1e-6)


def test_q_sample_mean_and_variance():
    # Many samples of one x0 at t = 300: mean sqrt(alpha_bar) x0, variance 1 - alpha_bar (eq. 4).
    n, t = 20_000, 300
    x0 = torch.tensor([0.7, -1.0, 0.0]).expand(n, 3)
    x_t = q_sample(x0, t, SCHEDULE, generator=torch.Generator().manual_seed(1))
    alpha_bar = SCHEDULE.alpha_bar[t].item()
    std_err = (1 - alpha_bar) ** 0.5 / n**0.5
    torch.testing.assert_close(x_t.mean(0), alpha_bar**0.5 * x0[0], rtol=0, atol=5 * std_err)
    torch.testing.assert_close(x_t.var(0), torch.full((3,), 1 - alpha_bar), rtol=0.05, atol=0)


def test_q_sample_generator_and_int_t(generator):
    x0 = torch.randn(2, 3, 4, 4, generator=generator)
    a = q_sample(x0, 10, SCHEDULE, generator=torch.Generator().manual_seed(3))
    b = q_sample(x0, torch.tensor([10, 10]), SCHEDULE, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, q_sample(x0, 10, SCHEDULE, noise=eps), rtol=0, atol=0)


def test_q_posterior_equals_eq7_computed_independently(generator):
    x0, x_t, t = batch(generator)
    t[0] = 0
    mean, variance = q_posterior(x0, x_t, t, SCHEDULE)
    assert mean.shape == x0.shape and variance.shape == (4, 1, 1, 1)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)  # Ho et al.'s schedule, in float64
    for i, step in enumerate(t.tolist()):
        paper_t = step + 1  # code t = paper step t+1
        alpha_bar_t = torch.prod(1 - betas[:paper_t])
        alpha_bar_prev = torch.prod(1 - betas[: paper_t - 1])  # the empty product is 1
        beta_t = betas[paper_t - 1]
        expected = (alpha_bar_prev.sqrt() * beta_t / (1 - alpha_bar_t)) * x0[i].double() + (
            (1 - beta_t).sqrt() * (1 - alpha_bar_prev) / (1 - alpha_bar_t)
        ) * x_t[i].double()
        torch.testing.assert_close(mean[i].double(), expected, rtol=1e-4, atol=1e-5)
        beta_tilde = (1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta_t
        assert variance[i].item() == pytest.approx(beta_tilde.item(), rel=1e-4, abs=1e-9)
    # At the first step the posterior is exactly x_0.
    torch.testing.assert_close(mean[0], x0[0])
    assert variance[0].item() == 0


def test_conversions_invert_each_other(generator):
    x0, eps, t = batch(generator)
    x_t = q_sample(x0, t, SCHEDULE, noise=eps)
    torch.testing.assert_close(predict_x0_from_eps(x_t, eps, t, SCHEDULE), x0, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(predict_eps_from_x0(x_t, x0, t, SCHEDULE), eps, rtol=1e-4, atol=1e-3)
    v = velocity(x0, eps, t, SCHEDULE)
    torch.testing.assert_close(predict_x0_from_v(x_t, v, t, SCHEDULE), x0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(predict_eps_from_v(x_t, v, t, SCHEDULE), eps, rtol=1e-5, atol=1e-5)
    # The v target equals diffusers' get_velocity.
    ref = diffusers.DDPMScheduler().get_velocity(x0, eps, t)
    torch.testing.assert_close(v, ref, rtol=0, atol=1e-6)


def test_velocity_definition():
    # Salimans & Ho: with alpha = cos(phi), sigma = sin(phi), v = alpha eps - sigma x0 = d x_t / d phi.
    x0, eps = torch.tensor([[1.0]]), torch.tensor([[2.0]])
    alpha_bar = SCHEDULE.alpha_bar[500].item()
    expected = alpha_bar**0.5 * 2.0 - (1 - alpha_bar) ** 0.5 * 1.0
    assert velocity(x0, eps, 500, SCHEDULE).item() == pytest.approx(expected, rel=1e-6)


# ---- training -----------------------------------------------------------------------------


def test_sample_timesteps():
    t = sample_timesteps(10_000, SCHEDULE, generator=torch.Generator().manual_seed(0))
    assert t.dtype == torch.int64 and t.shape == (10_000,) and t.device.type == "cpu"
    assert t.min().item() == 0 and t.max().item() == 999
    again = sample_timesteps(10_000, SCHEDULE, generator=torch.Generator().manual_seed(0), device="cpu")
    assert torch.equal(t, again)
    assert sample_timesteps(3, SCHEDULE).shape == (3,)
    with pytest.raises(ValueError, match="batch_size must be in"):
        sample_timesteps(0, SCHEDULE)
    with pytest.raises(TypeError, match="schedule must be a sdedu.schedules.NoiseSchedule"):
        sample_timesteps(3, "linear")


def test_noise_prediction_loss_matches_algorithm_1(generator):
    x0 = torch.randn(8, 2, generator=generator)
    model = torch.nn.Linear(2, 2)

    def eps_model(x_t, t, scale=1.0):
        return scale * model(x_t)

    loss = noise_prediction_loss(eps_model, x0, SCHEDULE, generator=torch.Generator().manual_seed(5), scale=0.5)
    # The same draws, by hand: t first, then eps.
    g = torch.Generator().manual_seed(5)
    t = torch.randint(0, 1000, (8,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    x_t = q_sample(x0, t, SCHEDULE, noise=eps)
    expected = ((0.5 * model(x_t) - eps) ** 2).mean()
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert model.weight.grad is not None and model.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("prediction_type", ["x0", "v"])
def test_noise_prediction_loss_with_x0_and_v_targets(prediction_type, generator):
    x0 = torch.randn(8, 2, generator=generator)
    model = torch.nn.Linear(2, 2)
    loss = noise_prediction_loss(
        lambda x_t, t: model(x_t), x0, SCHEDULE, torch.Generator().manual_seed(5), prediction_type=prediction_type
    )
    g = torch.Generator().manual_seed(5)  # the same draws as for eps: t first, then eps
    t = torch.randint(0, 1000, (8,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    target = x0 if prediction_type == "x0" else velocity(x0, eps, t, SCHEDULE)
    torch.testing.assert_close(loss, ((model(q_sample(x0, t, SCHEDULE, noise=eps)) - target) ** 2).mean())
    with pytest.raises(ValueError, match=r"prediction_type must be one of \('eps', 'x0', 'v'\); got str 'epsilon'"):
        noise_prediction_loss(lambda x_t, t: model(x_t), x0, SCHEDULE, prediction_type="epsilon")


def test_noise_prediction_loss_is_zero_for_an_oracle(generator):
    x0 = torch.randn(6, 3, 4, 4, generator=generator)

    def oracle(x_t, t, clean):  # knows x0 through model_kwargs, so it can recover eps exactly
        return predict_eps_from_x0(x_t, clean, t, SCHEDULE)

    assert noise_prediction_loss(oracle, x0, SCHEDULE, generator=generator, clean=x0).item() < 1e-6


# ---- bad input ----------------------------------------------------------------------------


def test_bad_inputs(generator):
    x0, eps, t = batch(generator)
    with pytest.raises(TypeError, match="x0 must be a torch.Tensor; got list"):
        q_sample([1.0], t, SCHEDULE)
    with pytest.raises(ValueError, match="x0 must be a floating-point tensor"):
        q_sample(x0.long(), t, SCHEDULE)
    with pytest.raises(ValueError, match=r"noise must have the same shape as x0 \(4, 3, 5, 5\); got \(4, 3, 5\)"):
        q_sample(x0, t, SCHEDULE, noise=eps[..., 0])
    with pytest.raises(TypeError, match="schedule must be a sdedu.schedules.NoiseSchedule; got str"):
        q_sample(x0, t, "linear")
    with pytest.raises(ValueError, match="x_t must have the same shape as x0"):
        q_posterior(x0, x0[:2], t, SCHEDULE)
    with pytest.raises(ValueError, match=r"t must be .*\(4,\)"):
        q_posterior(x0, x0, t[:2], SCHEDULE)
    with pytest.raises(ValueError, match="eps must have the same shape as x_t"):
        predict_x0_from_eps(x0, eps[:1], t, SCHEDULE)
    with pytest.raises(ValueError, match="x0 must have the same shape as x_t"):
        predict_eps_from_x0(x0, x0[:, :1], t, SCHEDULE)
    with pytest.raises(ValueError, match="eps must have the same shape as x0"):
        velocity(x0, eps.transpose(2, 3)[:, :, :4], t, SCHEDULE)
    with pytest.raises(ValueError, match="v must have the same shape as x_t"):
        predict_x0_from_v(x0, eps[:1], t, SCHEDULE)
    with pytest.raises(TypeError, match="v must be a torch.Tensor"):
        predict_eps_from_v(x0, None, t, SCHEDULE)
    with pytest.raises(ValueError, match="t must be .*got 1000"):
        q_sample(x0, 1000, SCHEDULE)
    with pytest.raises(ValueError, match=r"eps_pred \(the model's output\) must have the same shape as x0"):
        noise_prediction_loss(lambda x_t, t: x_t[:, :1], x0, SCHEDULE)
    with pytest.raises(TypeError, match="model must be callable"):
        noise_prediction_loss("unet", x0, SCHEDULE)


def test_the_core_does_not_import_diffusers():
    # diffusers is only the test oracle: the course's own code must stand alone.
    import subprocess
    import sys

    code = (
        "import sys, sdedu.schedules, sdedu.diffusion, sdedu.samplers, sdedu.guidance; "
        "print('diffusers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_randn_with_one_generator_per_row_matches_diffusers_randn_tensor():
    """Row i is drawn from generator i alone: the same whatever rows stand beside it (as diffusers' randn_tensor)."""
    from diffusers.utils.torch_utils import randn_tensor

    make = lambda seeds: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    rows = randn((3, 4, 2, 2), make([5, 6, 7]))
    torch.testing.assert_close(rows[1:2], randn((1, 4, 2, 2), make([6])), rtol=0, atol=0)
    torch.testing.assert_close(rows, randn_tensor((3, 4, 2, 2), generator=make([5, 6, 7])), rtol=0, atol=0)
    torch.testing.assert_close(
        randn((2, 3), torch.Generator().manual_seed(1)), torch.randn(2, 3, generator=torch.Generator().manual_seed(1))
    )
    with pytest.raises(ValueError, match="one per row"):
        randn((2, 3), make([1, 2, 3]))
