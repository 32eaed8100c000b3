"""Euler, Euler ancestral, Heun and DPM-Solver++(2M): full-loop parity with diffusers, the ODE view, bad input."""

import copy

import diffusers  # noqa: E402  (a dependency: the test oracle)
import pytest
import torch
from diffusers.schedulers.scheduling_ddim import rescale_zero_terminal_snr as reference_rescale

from sdedu.diffusion import predict_x0_from_eps, q_sample, randn_like, velocity
from sdedu.samplers import (
    PREDICTION_TYPES,
    DDIMInverseSampler,
    DDIMSampler,
    DDPMSampler,
    DPMSolverMultistepSampler,
    EulerAncestralSampler,
    EulerSampler,
    HeunSampler,
    SamplerStep,
    euler_ancestral,
)
from sdedu.samplers.sigmas import trailing_timesteps
from sdedu.schedules import NoiseSchedule, rescale_zero_terminal_snr

SHAPE = (2, 3, 4, 4)
SCHEDULES = {
    "linear": (NoiseSchedule.linear, dict(beta_schedule="linear", beta_start=1e-4, beta_end=0.02)),
    "scaled_linear": (
        NoiseSchedule.scaled_linear,
        dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
    ),
    "cosine": (NoiseSchedule.cosine, dict(beta_schedule="squaredcos_cap_v2")),
}
DIFFUSERS_PREDICTION = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}
# sampler -> (diffusers scheduler, its extra configuration, does its step take a generator?)
REFERENCES = {
    EulerSampler: (diffusers.EulerDiscreteScheduler, dict(interpolation_type="linear", final_sigmas_type="zero"), True),
    EulerAncestralSampler: (diffusers.EulerAncestralDiscreteScheduler, {}, True),
    HeunSampler: (diffusers.HeunDiscreteScheduler, dict(clip_sample=False), False),
    DPMSolverMultistepSampler: (
        diffusers.DPMSolverMultistepScheduler,
        dict(
            algorithm_type="dpmsolver++",
            solver_order=2,
            solver_type="midpoint",
            lower_order_final=True,
            euler_at_final=False,
            final_sigmas_type="zero",
            thresholding=False,
        ),
        True,
    ),
}
SAMPLERS = list(REFERENCES)
DETERMINISTIC = [EulerSampler, HeunSampler, DPMSolverMultistepSampler]


def stand_in_model(schedule):
    """A fixed, deterministic model of (x_t, t): the best eps for N(0, I) data, sqrt(1 - alpha_bar) x_t,
    bent by a nonlinearity, so that the latents stay O(1) (read as eps, x0 or v alike)."""
    alpha_bar = schedule.alpha_bar

    def model(x_t, t):
        t = int(t)
        return (
            (1 - alpha_bar[t]) ** 0.5 * x_t
            + 0.2 * torch.tanh(1.5 * x_t) * (0.5 + t / 2000)
            + 0.1 * torch.sin(x_t * t / 100)
        )

    return model


def reference(sampler_class, config, n, prediction_type):
    scheduler_class, extra, _ = REFERENCES[sampler_class]
    ref = scheduler_class(
        **config,
        **extra,
        timestep_spacing="trailing",
        steps_offset=0,
        prediction_type=DIFFUSERS_PREDICTION[prediction_type],
    )
    ref.set_timesteps(n)
    return ref


def run_ours(sampler, model, z, seed):
    generator = torch.Generator().manual_seed(seed)
    x = z
    for t in sampler.timesteps:
        x = sampler.step(model(x, t), t, x, generator=generator).x_prev
    return x


def run_diffusers(ref, model, z, seed, takes_generator):
    """diffusers' pipeline loop: x = z * init_noise_sigma, the model sees scale_model_input(x, t)."""
    generator = torch.Generator().manual_seed(seed)
    x = z * ref.init_noise_sigma
    for t in ref.timesteps:
        kwargs = {"generator": generator} if takes_generator else {}
        x = ref.step(model(ref.scale_model_input(x, t), t), t, x, **kwargs).prev_sample
    return x


def our_start(ref, z):
    """Our x_T for diffusers' first sample z * init_noise_sigma: the point its model sees first.

    (Euler and Heun keep x = x_t / sqrt(alpha_bar) and scale it back; DPM-Solver keeps x_t.)
    A copy of the scheduler is asked, so that `ref` starts its own loop untouched.
    """
    fresh = copy.deepcopy(ref)
    return fresh.scale_model_input(z * fresh.init_noise_sigma, fresh.timesteps[0])


# ---- parity with diffusers: full loops, same stand-in model, same generator ---------------


CASES = [
    (name, n, prediction_type)
    for name, steps in (("linear", (1, 2, 7, 25)), ("scaled_linear", (1, 2, 7, 25)))
    for n in steps
    for prediction_type in PREDICTION_TYPES
] + [("scaled_linear", 1000, "eps"), ("cosine", 25, "v"), ("cosine", 7, "x0")]


@pytest.mark.parametrize("sampler_class", SAMPLERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("name, n, prediction_type", CASES)
def test_loop_equals_diffusers(sampler_class, name, n, prediction_type, monkeypatch):
    """sdedu's loop and diffusers' give the same x_0 to 1e-5, or as close as float32 allows.

    Where they differ by more than 1e-5 it is float32 rounding, not a formula. The first step works
    in sigma space, on x = x_T sqrt(1 + sigma_T^2): values up to |x_T| sigma_T = 537 for the linear
    schedule (sigma_T = 157) and 6.9e4 for the cosine one (sigma_T = 2.0e4), where float32's spacing
    is 6.1e-5 and 7.8e-3. The step subtracts two such numbers (x - sigma d) down to O(1) and keeps
    their absolute rounding error, which Heun's second evaluation and the stand-in model's slope
    can amplify. diffusers keeps x between steps and computes x0_pred in sigma space (x - sigma eps);
    sdedu keeps x_t and converts at each step (`sdedu.samplers.sigmas`), so the two round
    differently. Measured, |sdedu - diffusers| (both float32) vs |sdedu float32 - sdedu float64|:
    linear, n = 1, every sampler and type: 3.05e-5 (half the spacing at 537) vs 3.96e-5 (eps);
    linear, n = 2: Euler 1.9e-5 vs 2.2e-5, Euler ancestral 2.7e-5 vs 1.6e-5, Heun 2.4e-4 vs 5.0e-4
    (eps); cosine, Heun: 1.45e-4 vs 0.28 (n = 7, x0) and 5.7e-5 vs 0.12 (n = 25, v). Every other
    case agrees to <= 1e-5. Both loops round at the same magnitudes, each ends about
    |float32 - float64| from the float64 answer, possibly on opposite sides: the test allows
    max(1e-5, 2 |float32 - float64|) of our own loop. diffusers cannot be run in float64 to compare
    (its Euler step casts the sample to float32). In the float64 run Euler ancestral draws its noise
    in float32, so that it is the same noise.
    """
    if sampler_class is EulerAncestralSampler and prediction_type == "x0":
        pytest.skip("diffusers' EulerAncestralDiscreteScheduler has no prediction_type='sample'")
    if sampler_class is HeunSampler and n == 1000:
        n = 500  # 999 model calls are enough
    make, config = SCHEDULES[name]
    schedule = make()
    sampler = sampler_class(schedule, prediction_type=prediction_type)
    sampler.set_timesteps(n)
    ref = reference(sampler_class, config, n, prediction_type)
    assert torch.equal(sampler.timesteps, ref.timesteps.to(torch.int64))
    assert_loop_equals(sampler, ref, stand_in_model(schedule), monkeypatch)


def assert_loop_equals(sampler, ref, model, monkeypatch):
    """Full loops of sampler and diffusers' ref from the same x_T: equal to max(1e-5, 2 float32 rounding)."""
    z = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    start = our_start(ref, z)
    ours = run_ours(sampler, model, start, seed=1)
    theirs = run_diffusers(ref, model, z, seed=1, takes_generator=REFERENCES[type(sampler)][2])
    assert torch.isfinite(ours).all()
    gap = (ours - theirs).abs().max().item()
    if gap > 1e-5:  # only then: how far float32 is from float64 for this very loop
        float32_noise = lambda x, generator: randn_like(x.float(), generator).to(x.dtype)
        monkeypatch.setattr(euler_ancestral, "randn_like", float32_noise)
        rounding = (ours.double() - run_ours(sampler, model, start.double(), seed=1)).abs().max().item()
        assert gap <= 2 * rounding, (gap, rounding)


def test_euler_ancestral_is_stochastic_and_follows_the_generator():
    schedule = NoiseSchedule.scaled_linear()
    sampler = EulerAncestralSampler(schedule)
    sampler.set_timesteps(10)
    model, z = stand_in_model(schedule), torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    a, b = run_ours(sampler, model, z, seed=1), run_ours(sampler, model, z, seed=1)
    assert torch.equal(a, b)
    assert (run_ours(sampler, model, z, seed=2) - a).abs().max() > 0.01


def test_timesteps_are_trailing_and_heun_repeats_them():
    schedule = NoiseSchedule.linear()
    for sampler_class in SAMPLERS:
        sampler = sampler_class(schedule)
        sampler.set_timesteps(4)
        expected = [999, 749, 749, 499, 499, 249, 249] if sampler_class is HeunSampler else [999, 749, 499, 249]
        assert sampler.timesteps.dtype == torch.int64 and sampler.timesteps.tolist() == expected
    assert torch.equal(trailing_timesteps(1000, 1000), torch.arange(999, -1, -1))
    # numpy's arange overshoots for n = 61: diffusers gets 62 timesteps ending at -1; we keep 61.
    ref = diffusers.EulerDiscreteScheduler(timestep_spacing="trailing")
    ref.set_timesteps(61)
    assert len(ref.timesteps) == 62 and ref.timesteps[-1] == -1
    assert torch.equal(trailing_timesteps(1000, 61), ref.timesteps[:61].to(torch.int64))


def test_docstrings_name_the_diffusers_configuration():
    for sampler_class, (scheduler_class, extra, _) in REFERENCES.items():
        for word in [scheduler_class.__name__, "timestep_spacing", "trailing", "prediction_type", *extra]:
            assert word in sampler_class.__doc__, (sampler_class.__name__, word)


# ---- the ODE view: closed-form checks -----------------------------------------------------


def test_euler_is_ddim_and_euler_ancestral_is_ddim_with_eta_1(generator):
    # Song et al. 2021, eq. 13: DDIM is Euler's method in (sigma, x / sqrt(alpha_bar)); its eta = 1
    # noise is Euler ancestral's sigma_up. Same timesteps: DDIM with steps_offset=0 and n = T.
    schedule = NoiseSchedule.scaled_linear()
    euler, ancestral = EulerSampler(schedule), EulerAncestralSampler(schedule)
    ddim0, ddim1 = DDIMSampler(schedule, eta=0.0, steps_offset=0), DDIMSampler(schedule, eta=1.0, steps_offset=0)
    for sampler in (euler, ancestral, ddim0, ddim1):
        sampler.set_timesteps(1000)
    x_t = torch.randn(SHAPE, generator=generator)
    model = stand_in_model(schedule)
    for t in (1, 400, 999):
        eps = model(x_t, t)
        torch.testing.assert_close(euler.step(eps, t, x_t).x_prev, ddim0.step(eps, t, x_t).x_prev, rtol=1e-5, atol=1e-5)
        a = ancestral.step(eps, t, x_t, generator=torch.Generator().manual_seed(t)).x_prev
        b = ddim1.step(eps, t, x_t, generator=torch.Generator().manual_seed(t)).x_prev
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sampler_class", DETERMINISTIC, ids=lambda c: c.__name__)
def test_with_the_true_noise_every_solver_lands_on_x0(sampler_class, generator):
    # If the model returns the noise that made x_t, x0_pred = x_0 at every step and the ODE's
    # solution is the straight line x = x_0 + sigma eps: every solver follows it to x_0 exactly.
    schedule = NoiseSchedule.scaled_linear()
    sampler = sampler_class(schedule)
    sampler.set_timesteps(7)
    x0, eps = torch.randn(SHAPE, generator=generator), torch.randn(SHAPE, generator=generator)
    x = q_sample(x0, int(sampler.timesteps[0]), schedule, noise=eps)
    for t in sampler.timesteps:
        x, x0_pred = sampler.step(eps, t, x)
        torch.testing.assert_close(x0_pred, x0, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(x, x0, rtol=1e-4, atol=1e-4)


def gaussian_errors(sampler_class, n, c=0.5):
    """Distance to the exact ODE solution for N(0, c^2) data, at the last timestep (before the final jump).

    For N(0, c^2) data the best denoiser is D(x; sigma) = c^2 / (c^2 + sigma^2) x, and the ODE
    dx / dsigma = (x - D) / sigma = sigma x / (c^2 + sigma^2) solves to x(sigma) ∝ sqrt(c^2 + sigma^2).
    """
    schedule = NoiseSchedule.scaled_linear()
    alpha_bar = schedule.alpha_bar.double()

    def best_eps(x_t, t):  # E[eps | x_t] for x_0 ~ N(0, c^2)
        a = alpha_bar[int(t)]
        return (1 - a) ** 0.5 * x_t / (a * c**2 + 1 - a)

    sampler = sampler_class(schedule)
    sampler.set_timesteps(n)
    z = torch.randn(1000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = z
    for t in sampler.timesteps[:-1]:
        x = sampler.step(best_eps(x, t), t, x).x_prev
    first, last = alpha_bar[int(sampler.timesteps[0])], alpha_bar[int(sampler.timesteps[-1])]
    sigma2_first, sigma2_last = (1 - first) / first, (1 - last) / last
    exact = z / first**0.5 * ((c**2 + sigma2_last) / (c**2 + sigma2_first)) ** 0.5 * last**0.5  # back to x_t
    return (x - exact).abs().max().item()


def test_second_order_solvers_are_closer_to_the_ode_and_converge_faster():
    euler = {n: gaussian_errors(EulerSampler, n) for n in (10, 20)}
    heun = {n: gaussian_errors(HeunSampler, n) for n in (10, 20)}
    dpm = gaussian_errors(DPMSolverMultistepSampler, 20)
    # Measured: Euler 0.085, Heun 0.011, DPM-Solver++(2M) 0.0057 at 20 steps.
    assert heun[20] < euler[20] / 5 and dpm < euler[20] / 5
    # Halving the step divides the error by ~2 for a first-order method, ~4 for a second-order one
    # (measured 1.45 and 3.4: the discrete schedule's uneven steps keep them from the ideal).
    assert euler[10] / euler[20] < 2.0
    assert heun[10] / heun[20] > 2.5


def test_heun_makes_2n_minus_1_model_calls_and_corrects_its_euler_predictor(generator):
    schedule = NoiseSchedule.scaled_linear()
    heun, euler = HeunSampler(schedule), EulerSampler(schedule)
    calls = []
    model = stand_in_model(schedule)

    def counting_model(x, t):
        calls.append(int(t))
        return model(x, t)

    for n in (1, 5, 25):
        calls.clear()
        heun.set_timesteps(n)
        euler.set_timesteps(n)
        run_ours(heun, counting_model, torch.randn(SHAPE, generator=generator), seed=0)
        assert len(calls) == 2 * n - 1 == heun.num_model_evaluations == len(heun.timesteps)
    # The first call at a timestep is exactly an Euler step; the second replaces it.
    x = torch.randn(SHAPE, generator=generator)
    t0, t1 = int(heun.timesteps[0]), int(heun.timesteps[1])
    predicted = heun.step(model(x, t0), t0, x).x_prev
    torch.testing.assert_close(predicted, euler.step(model(x, t0), t0, x).x_prev)
    corrected = heun.step(model(predicted, t1), t1, predicted).x_prev
    assert (corrected - predicted).abs().max() > 1e-3
    assert heun.order == 2 and all(s.order == 1 for s in (euler, EulerAncestralSampler(schedule)))


def test_dpm_solver_first_step_is_first_order_and_a_restart_forgets_the_last_one(generator):
    schedule = NoiseSchedule.scaled_linear()
    dpm, euler = DPMSolverMultistepSampler(schedule), EulerSampler(schedule)
    dpm.set_timesteps(10)
    euler.set_timesteps(10)
    model = stand_in_model(schedule)
    x = torch.randn(SHAPE, generator=generator)
    t0 = int(dpm.timesteps[0])
    # DPM-Solver++(1) is DDIM, i.e. Euler in sigma: the first step of both agrees.
    torch.testing.assert_close(dpm.step(model(x, t0), t0, x).x_prev, euler.step(model(x, t0), t0, x).x_prev)
    # A loop run twice without set_timesteps gives the same result (no stale x0_pred used).
    assert torch.equal(run_ours(dpm, model, x, seed=0), run_ours(dpm, model, x, seed=0))
    # The last step lands on x0_pred.
    t_last = int(dpm.timesteps[-1])
    out = dpm.step(model(x, t_last), t_last, x)
    assert torch.equal(out.x_prev, out.x0_pred)


@pytest.mark.parametrize("sampler_class", SAMPLERS, ids=lambda c: c.__name__)
def test_eps_x0_and_v_models_that_agree_give_the_same_samples(sampler_class):
    # One eps model, read three ways: x0 = predict_x0_from_eps, v = velocity(x0, eps).
    schedule = NoiseSchedule.scaled_linear()
    eps_model = stand_in_model(schedule)
    as_x0 = lambda x, t: predict_x0_from_eps(x, eps_model(x, t), int(t), schedule)
    as_v = lambda x, t: velocity(as_x0(x, t), eps_model(x, t), int(t), schedule)
    z = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    results = []
    for prediction_type, model in (("eps", eps_model), ("x0", as_x0), ("v", as_v)):
        sampler = sampler_class(schedule, prediction_type=prediction_type)
        sampler.set_timesteps(10)
        results.append(run_ours(sampler, model, z, seed=3))
    torch.testing.assert_close(results[1], results[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(results[2], results[0], rtol=1e-4, atol=1e-4)


def test_euler_ancestral_adds_no_noise_on_the_last_step(generator):
    sampler = EulerAncestralSampler(NoiseSchedule.linear())
    x = torch.randn(SHAPE, generator=generator)
    t = int(sampler.timesteps[-1])
    g = torch.Generator().manual_seed(1)
    state = g.get_state()
    out = sampler.step(stand_in_model(sampler.schedule)(x, t), t, x, generator=g)
    assert torch.equal(g.get_state(), state) and torch.equal(out.x_prev, out.x0_pred)


@pytest.mark.parametrize("sampler_class", SAMPLERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
@pytest.mark.parametrize("n", [1, 3, 20])
def test_every_option_runs(sampler_class, prediction_type, n):
    schedule = NoiseSchedule.cosine(T=20)
    sampler = sampler_class(schedule, prediction_type=prediction_type)
    sampler.set_timesteps(n)
    model = stand_in_model(schedule)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    generators = [torch.Generator().manual_seed(i) for i in range(SHAPE[0])]  # one per image
    for t in sampler.timesteps:  # 0-dim tensors
        out = sampler.step(model(x, t).double(), t, x, generator=generators)
        assert isinstance(out, SamplerStep) and out.x_prev.shape == SHAPE and out.x0_pred.shape == SHAPE
        assert out.x_prev.dtype == torch.float64 and torch.isfinite(out.x_prev).all()
        x = out.x_prev
    assert not isinstance(sampler, torch.nn.Module) and not hasattr(sampler, "parameters")
    assert "steps=" in repr(sampler) and prediction_type in repr(sampler)


# ---- DDIM inversion ------------------------------------------------------------------------


def ddim_inverse_reference(config, n, prediction_type):
    ref = diffusers.DDIMInverseScheduler(
        **config,
        timestep_spacing="leading",
        steps_offset=1,
        set_alpha_to_one=False,
        clip_sample=False,
        prediction_type=DIFFUSERS_PREDICTION[prediction_type],
    )
    ref.set_timesteps(n)
    return ref


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("n", [1, 10, 50])
@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_ddim_inversion_equals_diffusers(name, n, prediction_type):
    make, config = SCHEDULES[name]
    schedule = make()
    sampler = DDIMInverseSampler(schedule, prediction_type=prediction_type)
    sampler.set_timesteps(n)
    ref = ddim_inverse_reference(config, n, prediction_type)
    assert torch.equal(sampler.timesteps, ref.timesteps)
    ddim = DDIMSampler(schedule)
    ddim.set_timesteps(n)
    assert torch.equal(sampler.timesteps, ddim.timesteps.flip(0))  # DDIM's, ascending
    model = stand_in_model(schedule)
    ours = theirs = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    for t in sampler.timesteps:
        ours = sampler.step(model(ours, t), t, ours).x_prev
        theirs = ref.step(model(theirs, t), t, theirs).prev_sample
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


def invert_then_regenerate(schedule, model, x0, n):
    inverse, ddim = DDIMInverseSampler(schedule), DDIMSampler(schedule)
    inverse.set_timesteps(n)
    ddim.set_timesteps(n)
    x = x0
    for t in inverse.timesteps:
        x = inverse.step(model(x, t), t, x).x_prev
    noise = x
    for t in ddim.timesteps:
        x = ddim.step(model(x, t), t, x).x_prev
    return noise, x


def test_ddim_inversion_is_exact_with_the_true_noise(generator):
    # A model that always returns the noise eps: x0_pred is the same x_0 at every level, so the
    # inverse lands on q_sample(x_0, first DDIM timestep, eps) and DDIM comes back to the start.
    schedule = NoiseSchedule.scaled_linear()
    x0, eps = torch.randn(SHAPE, generator=generator), torch.randn(SHAPE, generator=generator)
    start = q_sample(x0, 0, schedule, noise=eps)  # where DDIM's last step lands: alpha_bar[0]
    noise, back = invert_then_regenerate(schedule, lambda x, t: eps, start, n=20)
    torch.testing.assert_close(noise, q_sample(x0, 951, schedule, noise=eps), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(back, start, rtol=1e-4, atol=1e-4)


def test_ddim_inversion_reconstructs_better_with_more_steps():
    # The one approximation, eps(x_t) ~ eps(x_s), costs one step's change in eps: error ~ 1 / n.
    # Measured with this stand-in model: 0.19 (10 steps), 0.038 (50), 0.0078 (250).
    schedule = NoiseSchedule.scaled_linear()
    model = stand_in_model(schedule)
    x0 = 0.8 * torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    errors = [(invert_then_regenerate(schedule, model, x0, n)[1] - x0).abs().max().item() for n in (10, 50, 250)]
    assert errors[1] < 0.05
    assert errors[0] > 3 * errors[1] > 9 * errors[2]


# ---- zero terminal SNR (Lin et al. 2024, Algorithm 1) ------------------------------------


@pytest.mark.parametrize("name", SCHEDULES)
def test_rescale_zero_terminal_snr_equals_diffusers(name):
    betas = SCHEDULES[name][0]().betas
    rescaled = rescale_zero_terminal_snr(betas)
    assert torch.equal(rescaled, reference_rescale(betas.clone()))
    alpha_bar, old_alpha_bar = torch.cumprod(1 - rescaled, 0), torch.cumprod(1 - betas, 0)
    assert rescaled[-1] == 1 and alpha_bar[-1] == 0  # SNR(T) = 0: x_T is pure noise
    torch.testing.assert_close(alpha_bar[0], old_alpha_bar[0])  # the first step is unchanged
    assert (alpha_bar.diff() < 0).all() and (alpha_bar <= old_alpha_bar + 1e-6).all()  # only more noise
    assert NoiseSchedule(rescaled).zero_terminal_snr  # beta_T = 1 is allowed, last only
    with pytest.raises(ValueError, match=r"betas must hold at least two values \(T >= 2\)"):
        rescale_zero_terminal_snr(betas[:1])
    with pytest.raises(TypeError, match="betas must be a torch.Tensor"):
        rescale_zero_terminal_snr(betas.tolist())


def zero_snr_reference(sampler_class, name, n, prediction_type):
    """diffusers' scheduler for the same schedule rescaled to zero terminal SNR.

    Every scheduler but Heun takes `rescale_betas_zero_snr=True`; diffusers' Heun has no such option,
    so it is given the rescaled betas and, as the others do, `alphas_cumprod[-1] = 2**-24`.
    """
    config = SCHEDULES[name][1]
    if sampler_class is not HeunSampler:
        return reference(sampler_class, {**config, "rescale_betas_zero_snr": True}, n, prediction_type)
    betas = rescale_zero_terminal_snr(SCHEDULES[name][0]().betas)
    ref = reference(sampler_class, {"trained_betas": betas.tolist()}, n, prediction_type)
    ref.alphas_cumprod[-1] = 2**-24
    ref.set_timesteps(n)
    return ref


def zero_snr_schedule(name="scaled_linear"):
    return NoiseSchedule(rescale_zero_terminal_snr(SCHEDULES[name][0]().betas))


ZERO_SNR_CASES = [("scaled_linear", n, p) for n in (1, 4, 25) for p in ("v", "x0")] + [("linear", 10, "v")]


@pytest.mark.parametrize("sampler_class", SAMPLERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("name, n, prediction_type", ZERO_SNR_CASES)
def test_zero_terminal_snr_loop_equals_diffusers(sampler_class, name, n, prediction_type, monkeypatch):
    # Lin et al. 2024: zero terminal SNR, a v (or x0) model, trailing timesteps from t = T - 1. The
    # samplers in sigma start at sigma_T = 4096 (alpha_bar_T = 2^-24), as diffusers' do.
    if sampler_class is EulerAncestralSampler and prediction_type == "x0":
        pytest.skip("diffusers' EulerAncestralDiscreteScheduler has no prediction_type='sample'")
    schedule = zero_snr_schedule(name)
    sampler = sampler_class(schedule, prediction_type=prediction_type)
    sampler.set_timesteps(n)
    assert sampler.timesteps[0] == 999 and sampler.schedule.alpha_bar[-1] == 2**-24 and schedule.alpha_bar[-1] == 0
    ref = zero_snr_reference(sampler_class, name, n, prediction_type)
    assert torch.equal(sampler.timesteps, ref.timesteps.to(torch.int64))
    assert_loop_equals(sampler, ref, stand_in_model(schedule), monkeypatch)


@pytest.mark.parametrize("prediction_type", ["v", "x0"])
@pytest.mark.parametrize(
    "make, n, eta",
    [("ddpm", 1000, None), ("ddpm", 10, None), ("ddim", 999, 0.0), ("ddim", 10, 0.0), ("ddim", 10, 1.0)]
    + [("ddim0", 1000, 0.0)],
)
def test_zero_terminal_snr_ddpm_and_ddim_equal_diffusers(make, n, eta, prediction_type):
    # diffusers' DDPMScheduler and DDIMScheduler keep alpha_bar_T = 0 (x0_pred = -v there); so do
    # DDPMSampler and DDIMSampler. Their "leading" timesteps reach t = T - 1 only for n = T (DDPM),
    # n = T - 1 (DDIM) or n = T with steps_offset=0. (DDIM with eta = 1 from t = T - 1: see below.)
    _, config = SCHEDULES["scaled_linear"]
    schedule = zero_snr_schedule()
    common = dict(
        **config,
        rescale_betas_zero_snr=True,
        timestep_spacing="leading",
        clip_sample=False,
        prediction_type=DIFFUSERS_PREDICTION[prediction_type],
    )
    if make == "ddpm":
        sampler = DDPMSampler(schedule, prediction_type=prediction_type)
        ref = diffusers.DDPMScheduler(**common, variance_type="fixed_small", steps_offset=0)
    else:
        offset = 0 if make == "ddim0" else 1
        sampler = DDIMSampler(schedule, eta=eta, steps_offset=offset, prediction_type=prediction_type)
        ref = diffusers.DDIMScheduler(**common, steps_offset=offset, set_alpha_to_one=False)
    sampler.set_timesteps(n)
    ref.set_timesteps(n)
    assert torch.equal(sampler.timesteps, ref.timesteps) and (n < 999 or sampler.timesteps[0] == 999)
    model = stand_in_model(schedule)
    results = []
    for step in (sampler.step, lambda *a, **k: ref.step(*a, **k, **({} if eta is None else {"eta": eta}))):
        generator, x = torch.Generator().manual_seed(1), torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
        for t in sampler.timesteps:
            x = step(model(x, t), t, x, generator=generator)[0]
        results.append(x)
    assert torch.isfinite(results[0]).all()
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=1e-5)


def test_zero_terminal_snr_ddim_with_eta_1_from_pure_noise_is_a_ddpm_step():
    # From alpha_bar_T = 0 with eta = 1, 1 - alpha_bar_prev - sigma_t^2 is 0 up to rounding:
    # diffusers' DDIMScheduler takes its square root and returns NaN; DDIMSampler clamps it at 0
    # and is DDPM's step there, as eta = 1 promises (Song et al. 2021, section 4.1).
    schedule = zero_snr_schedule()
    ddim = DDIMSampler(schedule, eta=1.0, steps_offset=0, prediction_type="v")
    ddim.set_timesteps(1000)
    ddpm = DDPMSampler(schedule, prediction_type="v")
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    v = stand_in_model(schedule)(x, 999)
    a = ddim.step(v, 999, x, generator=torch.Generator().manual_seed(1))
    b = ddpm.step(v, 999, x, generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(a.x_prev).all()
    torch.testing.assert_close(a.x0_pred, -v)  # x0_pred = sqrt(alpha_bar) x_t - sqrt(1 - alpha_bar) v = -v
    torch.testing.assert_close(a.x_prev, b.x_prev, rtol=1e-5, atol=1e-5)


def test_an_eps_model_cannot_sample_zero_terminal_snr():
    schedule = zero_snr_schedule()
    for make in [DDPMSampler, DDIMSampler, DDIMInverseSampler, *SAMPLERS]:
        with pytest.raises(ValueError, match=r"prediction_type 'eps' cannot sample a schedule with zero terminal SNR"):
            make(schedule)
        assert make(schedule, prediction_type="v").prediction_type == "v"


# ---- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize("sampler_class", SAMPLERS, ids=lambda c: c.__name__)
def test_bad_inputs(sampler_class, generator):
    schedule = NoiseSchedule.linear()
    sampler = sampler_class(schedule)
    with pytest.raises(ValueError, match=r"n \(the number of sampling steps\) must be in \[1, 1000\]; got 0"):
        sampler.set_timesteps(0)
    with pytest.raises(ValueError, match=r"n \(the number of sampling steps\) must be in \[1, 1000\]; got 1001"):
        sampler.set_timesteps(1001)
    with pytest.raises(TypeError, match=r"n \(the number of sampling steps\) must be an int"):
        sampler.set_timesteps(50.0)
    assert sampler.num_inference_steps != 0  # a refused n leaves the sampler as it was
    with pytest.raises(ValueError, match=r"prediction_type must be one of \('eps', 'x0', 'v'\); got str 'flow'"):
        sampler_class(schedule, prediction_type="flow")
    with pytest.raises(ValueError, match=r"got str 'v_prediction' \(diffusers' 'v_prediction' is sdedu's 'v'\)"):
        sampler_class(schedule, prediction_type="v_prediction")
    with pytest.raises(TypeError, match="schedule must be a sdedu.schedules.NoiseSchedule; got str"):
        sampler_class("linear")
    for knob in ("eta", "s_churn", "clip_sample"):  # knobs these samplers do not have
        with pytest.raises(TypeError, match=f"unexpected keyword argument '{knob}'"):
            sampler_class(schedule, **{knob: 0.5})
    sampler.set_timesteps(10)
    x_t = torch.randn(SHAPE, generator=generator)
    t = int(sampler.timesteps[0])
    with pytest.raises(
        ValueError, match=r"model_output must have the same shape as x_t \(2, 3, 4, 4\); got \(2, 3, 4\)"
    ):
        sampler.step(x_t[..., 0], t, x_t)
    with pytest.raises(TypeError, match="model_output must be a torch.Tensor"):
        sampler.step(x_t.numpy(), t, x_t)
    with pytest.raises(ValueError, match="x_t must be a floating-point tensor"):
        sampler.step(x_t, t, x_t.long())
    with pytest.raises(ValueError, match=r"t must be one of sampler.timesteps \[.*\].*got 5"):
        sampler.step(x_t, 5, x_t)
    with pytest.raises(TypeError, match="t must be an int.*got float"):
        sampler.step(x_t, float(t), x_t)


def test_ddim_inverse_bad_inputs(generator):
    schedule = NoiseSchedule.linear()
    with pytest.raises(ValueError, match=r"prediction_type must be one of"):
        DDIMInverseSampler(schedule, prediction_type="epsilon")
    with pytest.raises(TypeError, match="schedule must be a sdedu.schedules.NoiseSchedule"):
        DDIMInverseSampler("linear")
    with pytest.raises(ValueError, match="steps_offset must be in"):
        DDIMInverseSampler(schedule, steps_offset=-1)
    sampler = DDIMInverseSampler(schedule)
    with pytest.raises(ValueError, match=r"n \(the number of sampling steps\) must be in \[1, 1000\]; got 0"):
        sampler.set_timesteps(0)
    with pytest.raises(TypeError, match="unexpected keyword argument 'eta'"):
        DDIMInverseSampler(schedule, eta=0.5)  # inversion needs the deterministic ODE
    x_t = torch.randn(SHAPE, generator=generator)
    with pytest.raises(ValueError, match=r"t must be one of sampler.timesteps"):
        sampler.step(x_t, 5, x_t)
