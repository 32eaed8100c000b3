"""DDPM and DDIM samplers: full-loop parity with diffusers, the edges, every option, bad input."""

import diffusers  # noqa: E402  (a dependency: the test oracle)
import pytest
import torch

from sdedu.diffusion import predict_x0_from_eps, q_posterior, q_sample, velocity
from sdedu.samplers import DDIMSampler, DDPMSampler, SamplerStep
from sdedu.schedules import NoiseSchedule

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


def stand_in_model(x_t, t):
    """A fixed, deterministic noise predictor of x_t and t (no training needed for parity)."""
    t = float(t)
    return torch.tanh(1.5 * x_t) * (0.5 + t / 2000) + 0.1 * torch.sin(x_t * t / 100)


def run_loop(sampler_step, timesteps, seed, step_kwargs=None):
    """The pipeline's loop: x_T from the generator, then one step per timestep, same generator."""
    generator = torch.Generator().manual_seed(seed)
    x = 1.3 * torch.randn(SHAPE, generator=generator)
    for t in timesteps:
        x = sampler_step(stand_in_model(x, t), t, x, generator=generator, **(step_kwargs or {}))
    return x


def ddpm_reference(config, n, clip_sample, prediction_type="eps"):
    ref = diffusers.DDPMScheduler(
        **config,
        variance_type="fixed_small",
        timestep_spacing="leading",
        steps_offset=0,
        prediction_type=DIFFUSERS_PREDICTION[prediction_type],
        clip_sample=clip_sample,
        clip_sample_range=1.0,
        thresholding=False,
    )
    ref.set_timesteps(n)
    return ref


def ddim_reference(config, n, clip_sample, steps_offset=1, prediction_type="eps"):
    ref = diffusers.DDIMScheduler(
        **config,
        timestep_spacing="leading",
        steps_offset=steps_offset,
        set_alpha_to_one=False,
        prediction_type=DIFFUSERS_PREDICTION[prediction_type],
        clip_sample=clip_sample,
        clip_sample_range=1.0,
        thresholding=False,
    )
    ref.set_timesteps(n)
    return ref


# ---- parity with diffusers: full loops, same stand-in model, same generator ---------------


@pytest.mark.parametrize(
    "name, n, clip_sample",
    [(name, 1000, False) for name in SCHEDULES]
    + [("linear", 1000, True), ("scaled_linear", 50, False), ("cosine", 50, True), ("scaled_linear", 7, True)],
)
def test_ddpm_loop_equals_diffusers(name, n, clip_sample):
    make, config = SCHEDULES[name]
    sampler = DDPMSampler(make(), clip_sample=clip_sample)
    sampler.set_timesteps(n)
    ref = ddpm_reference(config, n, clip_sample)
    assert torch.equal(sampler.timesteps, ref.timesteps)
    ours = run_loop(lambda *a, **k: sampler.step(*a, **k).x_prev, sampler.timesteps, seed=0)
    theirs = run_loop(lambda *a, **k: ref.step(*a, **k).prev_sample, ref.timesteps, seed=0)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    # The loop really was stochastic: another seed lands elsewhere.
    other = run_loop(lambda *a, **k: sampler.step(*a, **k).x_prev, sampler.timesteps, seed=1)
    assert (other - ours).abs().max() > 0.01


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize(
    "name, n, clip_sample",
    [(name, 50, False) for name in SCHEDULES]
    + [("linear", 50, True), ("scaled_linear", 7, False), ("cosine", 7, True), ("scaled_linear", 999, False)],
)
def test_ddim_loop_equals_diffusers(name, eta, n, clip_sample):
    make, config = SCHEDULES[name]
    sampler = DDIMSampler(make(), eta=eta, clip_sample=clip_sample)
    sampler.set_timesteps(n)
    ref = ddim_reference(config, n, clip_sample)
    assert torch.equal(sampler.timesteps, ref.timesteps)
    ours = run_loop(lambda *a, **k: sampler.step(*a, **k).x_prev, sampler.timesteps, seed=0)
    theirs = run_loop(lambda *a, **k: ref.step(*a, **k).prev_sample, ref.timesteps, seed=0, step_kwargs={"eta": eta})
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


@pytest.mark.parametrize("prediction_type", ["x0", "v"])
@pytest.mark.parametrize(
    "name, n, clip_sample", [("scaled_linear", 1000, False), ("linear", 50, True), ("cosine", 7, False)]
)
def test_ddpm_loop_with_x0_and_v_models_equals_diffusers(name, n, clip_sample, prediction_type):
    make, config = SCHEDULES[name]
    sampler = DDPMSampler(make(), clip_sample=clip_sample, prediction_type=prediction_type)
    sampler.set_timesteps(n)
    ref = ddpm_reference(config, n, clip_sample, prediction_type=prediction_type)
    ours = run_loop(lambda *a, **k: sampler.step(*a, **k).x_prev, sampler.timesteps, seed=0)
    theirs = run_loop(lambda *a, **k: ref.step(*a, **k).prev_sample, ref.timesteps, seed=0)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


@pytest.mark.parametrize("prediction_type", ["x0", "v"])
@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize(
    "name, n, clip_sample", [("scaled_linear", 50, False), ("linear", 7, True), ("cosine", 50, False)]
)
def test_ddim_loop_with_x0_and_v_models_equals_diffusers(name, n, clip_sample, eta, prediction_type):
    make, config = SCHEDULES[name]
    sampler = DDIMSampler(make(), eta=eta, clip_sample=clip_sample, prediction_type=prediction_type)
    sampler.set_timesteps(n)
    ref = ddim_reference(config, n, clip_sample, prediction_type=prediction_type)
    ours = run_loop(lambda *a, **k: sampler.step(*a, **k).x_prev, sampler.timesteps, seed=0)
    theirs = run_loop(lambda *a, **k: ref.step(*a, **k).prev_sample, ref.timesteps, seed=0, step_kwargs={"eta": eta})
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


@pytest.mark.parametrize("make", [DDPMSampler, DDIMSampler])
def test_eps_x0_and_v_models_that_agree_give_the_same_samples(make):
    # One eps model, read three ways: x0 = predict_x0_from_eps, v = velocity(x0, eps).
    schedule = NoiseSchedule.scaled_linear()
    as_x0 = lambda x, t: predict_x0_from_eps(x, stand_in_model(x, t), int(t), schedule)
    as_v = lambda x, t: velocity(as_x0(x, t), stand_in_model(x, t), int(t), schedule)
    z = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    results = []
    for prediction_type, model in (("eps", stand_in_model), ("x0", as_x0), ("v", as_v)):
        sampler = make(schedule, prediction_type=prediction_type)
        sampler.set_timesteps(10)
        generator, x = torch.Generator().manual_seed(3), z
        for t in sampler.timesteps:
            x = sampler.step(model(x, t), t, x, generator=generator).x_prev
        results.append(x)
    torch.testing.assert_close(results[1], results[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(results[2], results[0], rtol=1e-4, atol=1e-4)


def test_ddim_with_steps_offset_0_and_all_steps_equals_diffusers():
    make, config = SCHEDULES["scaled_linear"]
    sampler = DDIMSampler(make(), eta=1.0, steps_offset=0)
    sampler.set_timesteps(1000)
    ref = ddim_reference(config, 1000, clip_sample=False, steps_offset=0)
    assert torch.equal(sampler.timesteps, torch.arange(999, -1, -1))
    ours = run_loop(lambda *a, **k: sampler.step(*a, **k).x_prev, sampler.timesteps, seed=2)
    theirs = run_loop(lambda *a, **k: ref.step(*a, **k).prev_sample, ref.timesteps, seed=2, step_kwargs={"eta": 1.0})
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


def test_x0_pred_equals_diffusers_pred_original_sample(generator):
    schedule = NoiseSchedule.scaled_linear()
    x_t = torch.randn(SHAPE, generator=generator)
    eps = stand_in_model(x_t, 500)
    ddim = DDIMSampler(schedule, clip_sample=True)
    ref = ddim_reference(SCHEDULES["scaled_linear"][1], 50, clip_sample=True)
    t = int(ddim.timesteps[10])
    torch.testing.assert_close(ddim.step(eps, t, x_t).x0_pred, ref.step(eps, t, x_t).pred_original_sample)


# ---- timesteps ----------------------------------------------------------------------------


def test_timesteps():
    schedule = NoiseSchedule.linear()
    ddpm = DDPMSampler(schedule)
    assert ddpm.timesteps.dtype == torch.int64
    assert torch.equal(ddpm.timesteps, torch.arange(999, -1, -1))  # Ho et al.: all T steps by default
    ddpm.set_timesteps(4)
    assert ddpm.timesteps.tolist() == [750, 500, 250, 0]
    ddim = DDIMSampler(schedule)
    assert len(ddim.timesteps) == 50 and ddim.timesteps[0] == 981 and ddim.timesteps[-1] == 1
    ddim.set_timesteps(4)
    assert ddim.timesteps.tolist() == [751, 501, 251, 1]  # Stable Diffusion's "leading" + offset 1
    # A short schedule gets as many steps as the offset allows.
    assert DDIMSampler(NoiseSchedule.linear(T=10)).timesteps.tolist() == [9, 8, 7, 6, 5, 4, 3, 2, 1]
    for sampler in (ddpm, ddim):
        assert (sampler.timesteps.diff() < 0).all()


def test_docstrings_name_the_diffusers_configuration():
    for cls, words in [
        (DDPMSampler, ["DDPMScheduler", "timestep_spacing", "steps_offset", "variance_type", "clip_sample"]),
        (DDIMSampler, ["DDIMScheduler", "timestep_spacing", "steps_offset", "set_alpha_to_one", "clip_sample"]),
    ]:
        for word in [*words, "prediction_type", "v_prediction"]:
            assert word in cls.__doc__, (cls.__name__, word)


# ---- the edges ----------------------------------------------------------------------------


def test_ddpm_adds_no_noise_on_the_final_step(generator):
    sampler = DDPMSampler(NoiseSchedule.linear())
    x_t = torch.randn(SHAPE, generator=generator)
    eps = stand_in_model(x_t, 0)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    state = g1.get_state()
    a, b = sampler.step(eps, 0, x_t, generator=g1), sampler.step(eps, 0, x_t, generator=g2)
    assert torch.equal(a.x_prev, b.x_prev)
    assert torch.equal(g1.get_state(), state)  # no random numbers were drawn
    torch.testing.assert_close(a.x_prev, a.x0_pred)  # the last step lands on x0_pred
    # ... while any other step does add noise.
    c, d = sampler.step(eps, 1, x_t, generator=g1), sampler.step(eps, 1, x_t, generator=g2)
    assert (c.x_prev - d.x_prev).abs().max() > 1e-3


def test_ddpm_step_is_the_posterior_plus_beta_tilde_noise(generator):
    schedule = NoiseSchedule.linear()
    sampler = DDPMSampler(schedule)
    x_t = torch.randn(SHAPE, generator=generator)
    eps = stand_in_model(x_t, 300)
    out = sampler.step(eps, 300, x_t, generator=torch.Generator().manual_seed(4))
    mean, variance = q_posterior(out.x0_pred, x_t, 300, schedule)
    z = torch.randn(SHAPE, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(out.x_prev, mean + variance.sqrt() * z, rtol=1e-4, atol=1e-5)


def test_ddim_eta_0_is_deterministic(generator):
    sampler = DDIMSampler(NoiseSchedule.scaled_linear(), eta=0.0)
    g = torch.Generator().manual_seed(9)
    state = g.get_state()
    a = run_loop(lambda *a, **k: sampler.step(*a, **k).x_prev, sampler.timesteps, seed=0)
    x = 1.3 * torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    for t in sampler.timesteps:
        x = sampler.step(stand_in_model(x, t), t, x, generator=g).x_prev
    assert torch.equal(a, x)
    assert torch.equal(g.get_state(), state)  # eta = 0 never draws


def test_ddim_with_the_true_noise_recovers_x0(generator):
    # If eps_pred is the noise that made x_t, every step stays on the line through x0 and eps:
    # x0_pred = x0 throughout, and the last step lands on alpha_bar[0] (set_alpha_to_one=False).
    schedule = NoiseSchedule.scaled_linear()
    sampler = DDIMSampler(schedule)
    x0, eps = torch.randn(SHAPE, generator=generator), torch.randn(SHAPE, generator=generator)
    x = q_sample(x0, int(sampler.timesteps[0]), schedule, noise=eps)
    for t in sampler.timesteps:
        x, x0_pred = sampler.step(eps, t, x)
        torch.testing.assert_close(x0_pred, x0, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(x, q_sample(x0, 0, schedule, noise=eps), rtol=1e-4, atol=1e-4)


def test_ddim_eta_1_is_a_ddpm_step(generator):
    # Song et al. 2021: with eta = 1 and the same timesteps, DDIM is DDPM's ancestral step.
    schedule = NoiseSchedule.linear()
    ddim, ddpm = DDIMSampler(schedule, eta=1.0, steps_offset=0), DDPMSampler(schedule)
    ddim.set_timesteps(1000)
    x_t = torch.randn(SHAPE, generator=generator)
    for t in (1, 400, 999):
        eps = stand_in_model(x_t, t)
        a = ddim.step(eps, t, x_t, generator=torch.Generator().manual_seed(t)).x_prev
        b = ddpm.step(eps, t, x_t, generator=torch.Generator().manual_seed(t)).x_prev
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("make", [DDPMSampler, DDIMSampler])
def test_clip_sample_clamps_x0_pred(make, generator):
    sampler = make(NoiseSchedule.linear(), clip_sample=True)
    x_t = 5 * torch.randn(SHAPE, generator=generator)  # far outside [-1, 1]
    t = int(sampler.timesteps[-2])
    clipped = sampler.step(torch.zeros(SHAPE), t, x_t, generator=generator).x0_pred
    free = make(NoiseSchedule.linear()).step(torch.zeros(SHAPE), t, x_t, generator=generator).x0_pred
    assert clipped.abs().max() <= 1 and free.abs().max() > 1
    torch.testing.assert_close(clipped, free.clamp(-1, 1))


@pytest.mark.parametrize(
    "make",
    [
        lambda s: DDPMSampler(s),
        lambda s: DDPMSampler(s, clip_sample=True),
        lambda s: DDIMSampler(s),
        lambda s: DDIMSampler(s, eta=0.5, clip_sample=True),
        lambda s: DDIMSampler(s, eta=1.0),
        lambda s: DDIMSampler(s, steps_offset=0),
    ],
)
@pytest.mark.parametrize("n", [1, 3, 20])
def test_every_option_runs(make, n):
    schedule = NoiseSchedule.cosine(T=20)
    sampler = make(schedule)
    sampler.set_timesteps(n) if n < 20 or getattr(sampler, "steps_offset", 0) == 0 else sampler.set_timesteps(19)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for t in sampler.timesteps:  # 0-dim tensors
        out = sampler.step(stand_in_model(x, t).double(), t, x, generator=torch.Generator().manual_seed(int(t)))
        assert isinstance(out, SamplerStep) and out.x_prev.shape == SHAPE and out.x0_pred.shape == SHAPE
        assert out.x_prev.dtype == torch.float64 and torch.isfinite(out.x_prev).all()
        x = out.x_prev
    assert not isinstance(sampler, torch.nn.Module) and not hasattr(sampler, "parameters")
    assert "steps=" in repr(sampler) and "prediction_type='eps'" in repr(sampler)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("schedule_on_device", [True, False])
def test_a_cpu_generator_gives_the_same_samples_on_every_device(device, schedule_on_device):
    schedule = NoiseSchedule.scaled_linear()
    results = []
    for dev in ("cpu", device):
        sched = schedule.to(dev) if schedule_on_device else schedule
        g = torch.Generator().manual_seed(0)
        x0 = torch.rand(SHAPE, generator=g).to(dev)
        noisy = q_sample(x0, torch.tensor([300, 600], device=dev), sched, generator=g)
        mean, _ = q_posterior(x0, noisy, 300, sched)
        outputs = [noisy, mean]
        for sampler in (DDPMSampler(sched), DDIMSampler(sched, eta=1.0)):
            sampler.set_timesteps(10)
            x = torch.randn(SHAPE, generator=g).to(dev)
            for t in sampler.timesteps:
                x = sampler.step(stand_in_model(x, t), t, x, generator=g).x_prev
            outputs.append(x)
        assert all(out.device.type == torch.device(dev).type for out in outputs)
        results.append([out.cpu() for out in outputs])
    for ours, reference in zip(results[1], results[0]):
        torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4)


# ---- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize("make", [DDPMSampler, DDIMSampler])
def test_bad_inputs(make, generator):
    schedule = NoiseSchedule.linear()
    sampler = make(schedule)
    with pytest.raises(ValueError, match=r"n \(the number of sampling steps\) must be in \[1, 1000\]; got 0"):
        sampler.set_timesteps(0)
    with pytest.raises(ValueError, match=r"n \(the number of sampling steps\) must be in \[1, 1000\]; got 1001"):
        sampler.set_timesteps(1001)
    with pytest.raises(TypeError, match=r"n \(the number of sampling steps\) must be an int"):
        sampler.set_timesteps(50.0)
    sampler.set_timesteps(10)
    x_t = torch.randn(SHAPE, generator=generator)
    t = int(sampler.timesteps[0])
    with pytest.raises(
        ValueError, match=r"model_output must have the same shape as x_t \(2, 3, 4, 4\); got \(2, 3, 4\)"
    ):
        sampler.step(x_t[..., 0], t, x_t)
    with pytest.raises(ValueError, match="x_t must be a floating-point tensor"):
        sampler.step(x_t, t, x_t.long())
    with pytest.raises(TypeError, match="model_output must be a torch.Tensor"):
        sampler.step(x_t.numpy(), t, x_t)
    with pytest.raises(ValueError, match=r"t must be one of sampler.timesteps \[.*\].*got 5"):
        sampler.step(x_t, 5, x_t)
    with pytest.raises(
        TypeError, match="t must be an int, one of sampler.timesteps.*got a torch.int64 tensor of shape \\(2,\\)"
    ):
        sampler.step(x_t, torch.tensor([t, t]), x_t)
    with pytest.raises(TypeError, match="t must be an int.*got float"):
        sampler.step(x_t, float(t), x_t)
    with pytest.raises(TypeError, match="schedule must be a sdedu.schedules.NoiseSchedule; got str"):
        make("linear")
    with pytest.raises(TypeError, match="clip_sample must be a bool; got str"):
        make(schedule, clip_sample="yes")
    with pytest.raises(ValueError, match=r"prediction_type must be one of \('eps', 'x0', 'v'\); got str 'flow'"):
        make(schedule, prediction_type="flow")
    with pytest.raises(ValueError, match=r"got str 'epsilon' \(diffusers' 'epsilon' is sdedu's 'eps'\)"):
        make(schedule, prediction_type="epsilon")


def test_ddim_bad_inputs():
    schedule = NoiseSchedule.linear()
    with pytest.raises(ValueError, match=r"eta must be in \[0.0, 1.0\]; got -0.1"):
        DDIMSampler(schedule, eta=-0.1)
    with pytest.raises(TypeError, match="eta must be a number"):
        DDIMSampler(schedule, eta=None)
    with pytest.raises(ValueError, match="steps_offset must be in"):
        DDIMSampler(schedule, steps_offset=-1)
    with pytest.raises(ValueError, match="first timestep 1000.*steps_offset=0"):
        DDIMSampler(schedule).set_timesteps(1000)
