"""Flow matching (sdedu.flow_matching) and FlowMatchEulerSampler: parity with diffusers, the path's algebra, bad input."""

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from exercise_catalogue import assert_passes, assert_rejected, mutants, right_answers, wrong_answers

from sdedu import flow_matching as fm
from sdedu.diffusion import q_sample
from sdedu.pipeline.loop import denoise
from sdedu.samplers import FlowMatchEulerSampler, SamplerStep
from sdedu.schedules import NoiseSchedule

SHAPE = (2, 4, 3, 3)


def velocity_model(x_t, t):
    """A fixed, deterministic velocity of (x_t, t) that keeps samples O(1)."""
    t = t.reshape(-1, *([1] * (x_t.ndim - 1))) / fm.TIME_SCALE
    return torch.tanh(x_t) * (1.0 - t) + 0.3 * torch.sin(3.0 * t) - 0.5 * x_t


def draw(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("n", [1, 4, 28])
def test_full_loop_matches_diffusers(shift, n):
    ours = FlowMatchEulerSampler(shift=shift)
    ours.set_timesteps(n)
    theirs = FlowMatchEulerDiscreteScheduler(shift=shift)
    theirs.set_timesteps(n)
    torch.testing.assert_close(ours.timesteps, theirs.timesteps, rtol=0, atol=1e-4)
    torch.testing.assert_close(ours.sigmas, theirs.sigmas, rtol=0, atol=1e-7)
    x = draw(SHAPE, 0)
    # Ours through the one denoising loop; theirs through diffusers' own loop.
    ours_out = denoise(velocity_model, ours, x.clone())
    y = x.clone()
    for t in theirs.timesteps:
        y = theirs.step(velocity_model(y, t.expand(SHAPE[0])), t, y).prev_sample
    assert (ours_out - y).abs().max() <= 1e-5


def test_interpolate_matches_diffusers_scale_noise():
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(10)
    x0, eps = draw(SHAPE, 1), draw(SHAPE, 2)
    timestep = scheduler.timesteps[[3, 3]]
    expected = scheduler.scale_noise(x0, timestep, eps)
    t = scheduler.sigmas[[3, 3]]
    torch.testing.assert_close(fm.interpolate(x0, eps, t), expected)


def test_path_ends_and_velocity_is_its_time_derivative():
    x0, eps = draw(SHAPE, 3), draw(SHAPE, 4)
    torch.testing.assert_close(fm.interpolate(x0, eps, 0.0), x0)
    torch.testing.assert_close(fm.interpolate(x0, eps, 1.0), eps)
    h = 1e-3
    slope = (fm.interpolate(x0.double(), eps.double(), 0.4 + h) - fm.interpolate(x0.double(), eps.double(), 0.4)) / h
    torch.testing.assert_close(slope, fm.velocity_target(x0, eps).double())


def test_velocity_gives_back_x0_and_eps():
    x0, eps = draw(SHAPE, 5), draw(SHAPE, 6)
    t = torch.tensor([0.2, 0.9])
    x_t, v = fm.interpolate(x0, eps, t), fm.velocity_target(x0, eps)
    torch.testing.assert_close(fm.x0_from_velocity(x_t, v, t), x0)
    torch.testing.assert_close(fm.eps_from_velocity(x_t, v, t), eps)


def test_ddpm_sample_is_a_rescaled_point_on_the_straight_path():
    schedule = NoiseSchedule.linear(1000)
    x0, eps = draw(SHAPE, 7), draw(SHAPE, 8)
    steps = torch.tensor([10, 700])
    t, scale = fm.flow_time_from_alpha_bar(schedule.alpha_bar[steps])
    x_s = q_sample(x0, steps, schedule, noise=eps)
    torch.testing.assert_close(scale[:, None, None, None] * x_s, fm.interpolate(x0, eps, t))


def test_mixture_velocity_is_the_conditional_mean_of_eps_minus_x0():
    # One standard Gaussian: E[x0 | x] = (1 - t) x / var, E[eps | x] = t x / var, var = (1 - t)^2 + t^2.
    x, t = draw((5, 2), 12), 0.3
    var = (1 - t) ** 2 + t**2
    torch.testing.assert_close(fm.mixture_velocity(x, t, torch.zeros(1, 2), 1.0), (2 * t - 1) / var * x)
    # A mixture: the residual eps - x0 - u_t(x_t) is uncorrelated with any function of x_t (Monte Carlo).
    g = torch.Generator().manual_seed(13)
    means = torch.tensor([[1.5, 0.0], [-1.0, 1.0], [0.0, -2.0]])
    x0 = means[torch.randint(3, (200_000,), generator=g)] + 0.2 * torch.randn(200_000, 2, generator=g)
    eps = torch.randn(200_000, 2, generator=g)
    t = torch.rand(200_000, generator=g)
    x_t = fm.interpolate(x0, eps, t)
    residual = fm.velocity_target(x0, eps) - fm.mixture_velocity(x_t, t, means, 0.2)
    for feature in (torch.ones_like(t), x_t[:, 0], x_t[:, 1], torch.tanh(3 * x_t[:, 0]) * t):
        assert (residual * feature[:, None]).mean(0).abs().max() < 0.01


def test_straightness_gap():
    times = torch.linspace(1, 0, 5)
    line = (1 - times)[:, None, None] * torch.tensor([[3.0, 4.0]])  # (5, 1, 2): constant velocity
    bent = torch.stack([1 - times, (1 - times) ** 2], dim=1)[:, None, :]  # (5, 1, 2): y = x^2
    got = fm.straightness_gap(torch.cat([line, bent], dim=1), times)
    # For (s, s^2), s = 1 - t on 4 equal steps: step velocities (1, 2 s_mid) against the chord (1, 1).
    s_mid = torch.tensor([0.125, 0.375, 0.625, 0.875])
    expected = ((2 * s_mid - 1) ** 2).mean() / 2
    torch.testing.assert_close(got, torch.stack([torch.tensor(0.0), expected]))


def test_logit_normal_times_are_sigmoid_of_a_normal():
    t = fm.logit_normal_times(20_000, m=0.5, s=0.8, generator=torch.Generator().manual_seed(0))
    assert t.shape == (20_000,) and bool(((t > 0) & (t < 1)).all())
    logit = torch.logit(t.double())
    assert abs(float(logit.mean()) - 0.5) < 0.02 and abs(float(logit.std()) - 0.8) < 0.02
    # Logit-normal(0, 1) puts more mass in the middle of the path than U(0, 1).
    mid = lambda u: float(((u > 0.25) & (u < 0.75)).float().mean())
    g = torch.Generator().manual_seed(1)
    assert mid(fm.logit_normal_times(20_000, generator=g)) > mid(fm.uniform_times(20_000, generator=g)) + 0.1


def test_shift_time_is_diffusers_training_grid():
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    grid = torch.linspace(1, 1000, 1000).flip(0) / 1000
    torch.testing.assert_close(fm.shift_time(grid, 3.0), scheduler.sigmas)
    assert fm.shift_time(0.0, 3.0) == 0.0 and fm.shift_time(1.0, 3.0) == 1.0 and fm.shift_time(0.5, 3.0) == 0.75


def test_loss_is_zero_for_the_true_velocity_and_draws_t_then_eps():
    x0 = draw(SHAPE, 9)
    g = torch.Generator().manual_seed(5)
    t = fm.logit_normal_times(SHAPE[0], generator=g)
    eps = torch.randn(SHAPE, generator=g)
    calls = []

    def oracle(x_t, time, cond=None):
        calls.append(cond)
        torch.testing.assert_close(time, t * fm.TIME_SCALE)
        torch.testing.assert_close(x_t, fm.interpolate(x0, eps, t))
        return eps - x0

    loss = fm.flow_matching_loss(oracle, x0, generator=torch.Generator().manual_seed(5), cond="text")
    assert float(loss) == 0.0 and calls == ["text"]
    wrong = fm.flow_matching_loss(lambda x_t, time: x0 - eps, x0, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(wrong, (2 * (eps - x0)).pow(2).mean())


def test_euler_on_a_straight_path_lands_on_the_data_in_any_number_of_steps():
    x0, eps = draw(SHAPE, 10), draw(SHAPE, 11)
    for n in (1, 3):
        sampler = FlowMatchEulerSampler(shift=3.0)
        sampler.set_timesteps(n)
        out = denoise(lambda x_t, t: eps - x0, sampler, eps.clone())
        torch.testing.assert_close(out, x0)
    step = sampler.step(eps - x0, sampler.timesteps[0], eps)
    assert isinstance(step, SamplerStep)
    torch.testing.assert_close(step.x0_pred, x0)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: fm.interpolate(torch.zeros(2, 3), torch.zeros(2, 4), 0.5), "eps"),
        (lambda: fm.interpolate(torch.zeros(2, 3), torch.zeros(2, 3), 1.5), "t"),
        (lambda: fm.interpolate(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0.5])), "t"),
        (lambda: fm.interpolate(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([1, 0])), "t"),
        (lambda: fm.velocity_target(torch.zeros(2, 3, dtype=torch.int64), torch.zeros(2, 3)), "x0"),
        (lambda: fm.logit_normal_times(0), "batch_size"),
        (lambda: fm.logit_normal_times(4, s=-1.0), "s"),
        (lambda: fm.shift_time(0.5, 0.0), "shift"),
        (lambda: fm.shift_time(torch.tensor([2.0]), 3.0), "t"),
        (lambda: fm.sample_times(4, "cosine"), "time_sampling"),
        (lambda: fm.flow_matching_loss("model", torch.zeros(2, 3)), "model"),
        (lambda: fm.flow_matching_loss(lambda x, t: x[:, :1], torch.zeros(2, 3)), "model output"),
        (lambda: fm.flow_time_from_alpha_bar(torch.tensor([0.0])), "alpha_bar"),
        (lambda: fm.mixture_velocity(torch.zeros(2, 2), 0.5, torch.zeros(3, 3), 0.1), "means"),
        (lambda: fm.mixture_velocity(torch.zeros(2, 2), 0.5, torch.zeros(3, 2), 0.0), "std"),
        (lambda: fm.straightness_gap(torch.zeros(1, 4, 2), torch.zeros(1)), "trajectory"),
        (lambda: fm.straightness_gap(torch.zeros(3, 4, 2), torch.tensor([1.0, 0.0, 0.5])), "times"),
        (lambda: FlowMatchEulerSampler(shift=0), "shift"),
        (lambda: FlowMatchEulerSampler().set_timesteps(0), "n"),
        (lambda: FlowMatchEulerSampler().step(torch.zeros(2), 3.5, torch.zeros(2)), "t"),
        (lambda: FlowMatchEulerSampler().step(torch.zeros(3), 1000.0, torch.zeros(2)), "model_output"),
        (lambda: FlowMatchEulerSampler().step(torch.zeros(2), "1000", torch.zeros(2)), "t"),
    ],
)
def test_bad_input_names_the_argument(call, name):
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    assert str(info.value).startswith(name)


def test_toy_flow_model_trains_and_samples_through_the_one_loop():
    from sdedu.data.toy2d import make_moons
    from sdedu.metrics.point_clouds import sliced_wasserstein
    from sdedu.models.mlp import MLPDenoiser, MLPDenoiserConfig
    from sdedu.training.toy import sample_toy, train_toy_denoiser

    points = make_moons(2000, seed=0)
    torch.manual_seed(0)  # the network's initial weights: without it the result depends on the tests run before
    g = torch.Generator().manual_seed(0)
    model = MLPDenoiser(MLPDenoiserConfig(data_dim=2))
    model, losses = train_toy_denoiser(
        points, None, model=model, steps=200, objective="flow", generator=g, progress=False
    )
    assert sum(losses[-50:]) < sum(losses[:50])  # the velocity loss has a high floor: Var(eps - x_0 | x_t)
    sampler = FlowMatchEulerSampler()
    sampler.set_timesteps(8)
    samples, trajectory, timesteps = sample_toy(model, sampler, 500, generator=g, return_trajectory=True)
    assert trajectory.shape == (9, 500, 2) and torch.equal(timesteps, sampler.timesteps)
    reference = make_moons(500, seed=1)
    # 200 steps take the distance to the moons from 0.209 (the noise) to 0.100-0.107 over init seeds 0-4.
    assert sliced_wasserstein(samples, reference) < 0.6 * sliced_wasserstein(trajectory[0], reference)
    with pytest.raises(ValueError, match="^objective"):
        train_toy_denoiser(points, None, steps=1, objective="velocity", progress=False)


# ---- exercise 13: the graded items and their mistake catalogue -------------------------------------


def ex_interpolate(x0, eps, t, *, swap=False, reshape=True):
    t = t.reshape(-1, *([1] * (x0.ndim - 1))) if reshape else t
    return t * x0 + (1 - t) * eps if swap else (1 - t) * x0 + t * eps


def ex_velocity(x0, eps, *, sign=1):
    return sign * (eps - x0)


def ex_logit_normal_t(batch_size, m, s, generator, *, uniform=False, sigmoid=True, square=False):
    if uniform:
        return torch.rand(batch_size, generator=generator)
    u = m + (s**2 if square else s) * torch.randn(batch_size, generator=generator)
    return torch.sigmoid(u) if sigmoid else u


def ex_loss(model, x0, eps, t, *, target="v", swap=False, scale=1000.0, reduce="mean", detach=False):
    v_pred = model(ex_interpolate(x0, eps, t, swap=swap), t * scale)
    goal = {"v": eps - x0, "x0": x0, "-v": x0 - eps, "eps": eps}[target]
    loss = (v_pred - goal).pow(2)
    loss = loss.mean() if reduce == "mean" else loss.sum()
    return loss.detach() if detach else loss


EX13_RIGHT = [
    ("flow_interpolate", ex_interpolate),
    ("flow_velocity_target", ex_velocity),
    ("flow_logit_normal_t", ex_logit_normal_t),
    ("flow_matching_loss", ex_loss),
]
EX13_WRONG = {
    "flow_interpolate": {
        "t and 1 - t swapped": (lambda *a: ex_interpolate(*a, swap=True), "t and 1 - t are swapped"),
        "no reshape": (lambda *a: ex_interpolate(*a, reshape=False), "reshape it to (B, 1, ..., 1)"),
    },
    "flow_velocity_target": {
        "x0 - eps": (lambda *a: ex_velocity(*a, sign=-1), "x0 - eps instead of eps - x0"),
    },
    "flow_logit_normal_t": {
        "uniform t": (lambda *a: ex_logit_normal_t(*a, uniform=True), "uniform vs logit-normal"),
        "no sigmoid": (lambda *a: ex_logit_normal_t(*a, sigmoid=False), "apply the sigmoid"),
        "s squared": (lambda *a: ex_logit_normal_t(*a, square=True), "s scales it"),
        "ignores the generator": (
            lambda n, m, s, g: torch.sigmoid(m + s * torch.randn(n)),
            "draw u from the generator",
        ),
    },
    "flow_matching_loss": {
        "loss on x0": (lambda *a: ex_loss(*a, target="x0"), "loss on x0 instead of v"),
        "x0 - eps target": (lambda *a: ex_loss(*a, target="-v"), "x0 - eps instead of eps - x0"),
        "eps target": (lambda *a: ex_loss(*a, target="eps"), "DDPM target"),
        "t and 1 - t swapped": (lambda *a: ex_loss(*a, swap=True), "t and 1 - t are swapped"),
        "time not scaled": (lambda *a: ex_loss(*a, scale=1.0), "t * 1000"),
        "sum": (lambda *a: ex_loss(*a, reduce="sum"), "not .sum()"),
        "detached": (lambda *a: ex_loss(*a, detach=True), "gradients"),
    },
}
EX13_CATALOGUE = mutants(EX13_WRONG)


@right_answers(EX13_RIGHT)
def test_exercise_13_right_answers_pass(item, answer, capsys):
    assert_passes(item, answer, capsys)


@wrong_answers(EX13_CATALOGUE)
def test_exercise_13_wrong_answers_are_rejected_with_a_useful_hint(item, name, answer, keyword):
    assert_rejected(item, name, answer, keyword)


def test_a_check_judged_inside_fails_when_a_case_failed():
    """flow_matching_loss is judged inside the sandbox: its failed cases must fail it there too (they did not)."""
    from sdedu.grading.checker import run_check
    from sdedu.grading.judge import JUDGED_INSIDE, inside_result
    from sdedu.grading.trial import Trial

    assert "flow_matching_loss" in JUDGED_INSIDE
    trial = Trial(seed=3, partial=True)
    summary = run_check("flow_matching_loss", lambda *a: ex_loss(*a, target="x0"), trial)  # returns: cases scored
    status, fraction, message = inside_result("passed", summary, trial.cases)
    assert (status, fraction) == ("failed", 0.0) and "loss on x0 instead of v" in message
    assert inside_result("passed", "4 cases", [("1", None), ("2", None)]) == ("passed", 1.0, "4 cases")
    assert inside_result("passed", "1 case", [("1", None), ("2", "wrong")])[:2] == ("failed", 0.5)
