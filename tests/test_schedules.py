"""NoiseSchedule: closed-form checks, parity with diffusers' betas, bad input."""

import math

import diffusers  # noqa: E402  (a dependency: the test oracle)
import pytest
import torch

import sdedu.schedules
from sdedu.schedules import NoiseSchedule

ALL = {
    "linear": (NoiseSchedule.linear, dict(beta_schedule="linear", beta_start=1e-4, beta_end=0.02)),
    "scaled_linear": (
        NoiseSchedule.scaled_linear,
        dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
    ),
    "cosine": (NoiseSchedule.cosine, dict(beta_schedule="squaredcos_cap_v2")),
}


# ---- parity with diffusers ----------------------------------------------------------------


@pytest.mark.parametrize("name", list(ALL))
@pytest.mark.parametrize("T", [1000, 37])
def test_tables_equal_diffusers(name, T):
    make, config = ALL[name]
    ours = make(T=T)
    ref = diffusers.DDPMScheduler(num_train_timesteps=T, **config)
    torch.testing.assert_close(ours.betas, ref.betas, rtol=0, atol=1e-7)
    torch.testing.assert_close(ours.alphas, ref.alphas, rtol=0, atol=1e-7)
    torch.testing.assert_close(ours.alpha_bar, ref.alphas_cumprod, rtol=1e-6, atol=1e-7)


# ---- closed-form checks -------------------------------------------------------------------


@pytest.mark.parametrize("name", list(ALL))
def test_tables_are_consistent(name):
    s = ALL[name][0]()
    assert s.T == 1000
    for table in (s.betas, s.alphas, s.alpha_bar):
        assert table.dtype == torch.float32 and table.shape == (1000,)
    torch.testing.assert_close(s.alphas, 1 - s.betas)
    # alpha_bar is the running product of the alphas, recomputed in float64 with a plain loop.
    running, expected = 1.0, []
    for beta in s.betas.double().tolist():
        running *= 1 - beta
        expected.append(running)
    torch.testing.assert_close(s.alpha_bar.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-5, atol=1e-7)
    # Noise only grows: alpha_bar strictly decreasing inside (0, 1), SNR decreasing.
    assert (s.alpha_bar[1:] < s.alpha_bar[:-1]).all()
    assert (s.alpha_bar > 0).all() and (s.alpha_bar < 1).all()
    assert (s.snr()[1:] < s.snr()[:-1]).all()
    torch.testing.assert_close(s.snr(), s.alpha_bar / (1 - s.alpha_bar))


def test_paper_values():
    linear = NoiseSchedule.linear()
    assert linear.betas[0].item() == pytest.approx(1e-4) and linear.betas[-1].item() == pytest.approx(0.02)
    # Ho et al.: at T = 1000 the linear schedule leaves almost no signal (alpha_bar_T ~ 4e-5).
    assert linear.alpha_bar[-1].item() == pytest.approx(4.04e-5, rel=0.02)
    # Stable Diffusion's scaled_linear: sqrt(beta) is linear in t.
    sl = NoiseSchedule.scaled_linear()
    steps = sl.betas.sqrt().diff()
    torch.testing.assert_close(steps, torch.full_like(steps, steps.mean().item()), rtol=1e-3, atol=1e-7)
    assert sl.betas[0].item() == pytest.approx(0.00085) and sl.betas[-1].item() == pytest.approx(0.012)
    # Nichol & Dhariwal: alpha_bar_t = f(t/T)/f(0), last beta clipped at 0.999.
    cos = NoiseSchedule.cosine()
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 250, 500, 900):
        assert cos.alpha_bar[t].item() == pytest.approx(f((t + 1) / 1000) / f(0), rel=1e-4)
    assert cos.betas.max().item() == pytest.approx(0.999) and cos.betas[-1].item() == pytest.approx(0.999)


def test_timestep_convention_is_stated_and_holds():
    doc = sdedu.schedules.__doc__
    assert "code t is paper step t+1" in doc
    for name in (
        "betas",
        "alphas",
        "alpha_bar",
        "x0",
        "x_t",
        "x_prev",
        "eps_pred",
        "x0_pred",
        "sigma_t",
        "eta",
        "cond",
        "guidance_scale",
    ):
        assert f"`{name}`" in doc, name
    # Code t = 0 is paper step 1: one step of noise already, alpha_bar_1 = alpha_1 = 1 - beta_1.
    s = NoiseSchedule.linear()
    assert s.alpha_bar[0].item() == pytest.approx(1 - 1e-4)
    assert s.alpha_bar[0].item() < 1
    # Code t = T-1 is paper step T: the product of all T alphas.
    assert s.alpha_bar[-1].item() == pytest.approx(torch.prod(s.alphas.double()).item(), rel=1e-4)


def test_custom_betas_and_device():
    betas = torch.tensor([0.1, 0.2, 0.2, 0.5], dtype=torch.float64)
    s = NoiseSchedule(betas)
    assert s.T == 4 and len(s) == 4 and s.betas.dtype == torch.float32
    torch.testing.assert_close(s.alpha_bar, torch.tensor([0.9, 0.72, 0.576, 0.288]))
    betas[0] = 0.3  # the schedule keeps its own copy
    assert s.betas[0].item() == pytest.approx(0.1)
    moved = s.to("meta")
    assert moved.device.type == "meta" and moved.alpha_bar.device.type == "meta" and moved.T == 4
    assert s.device.type == "cpu"
    back = s.to(torch.device("cpu"))
    torch.testing.assert_close(back.alpha_bar, s.alpha_bar)
    assert "T=4" in repr(s)


# ---- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "betas, error, match",
    [
        ([0.1, 0.2], TypeError, "betas must be a torch.Tensor"),
        (torch.tensor([1, 2]), ValueError, "betas must be a floating-point"),
        (torch.full((2, 3), 0.1), ValueError, "betas must have 1 dimensions"),
        (torch.zeros(0), ValueError, r"at least one value \(T >= 1\)"),
        (torch.tensor([0.0, 0.1]), ValueError, r"open interval \(0, 1\)"),
        (torch.tensor([1.0, 1.0]), ValueError, r"open interval \(0, 1\), except the last.*max 1, last 1, T=2"),
        (torch.tensor([1.0]), ValueError, r"may be 1 \(zero terminal SNR\) when T >= 2; .*T=1"),
        (torch.tensor([0.1, 1.5]), ValueError, r"open interval \(0, 1\)"),
        (torch.tensor([-0.1, 0.1]), ValueError, r"open interval \(0, 1\)"),
        (torch.tensor([0.1, float("nan")]), ValueError, r"open interval \(0, 1\)"),
        (torch.tensor([0.1, 0.3, 0.2]), ValueError, r"non-decreasing.*betas\[1\]=0.3 > betas\[2\]=0.2"),
    ],
)
def test_bad_betas(betas, error, match):
    with pytest.raises(error, match=match):
        NoiseSchedule(betas)


def test_a_last_beta_of_1_is_zero_terminal_snr_and_samplers_in_sigma_see_2_to_the_minus_24():
    zero = NoiseSchedule(torch.tensor([0.1, 0.5, 1.0]))
    assert zero.zero_terminal_snr and zero.alpha_bar[-1] == 0 and zero.snr()[-1] == 0
    assert not NoiseSchedule.linear().zero_terminal_snr
    finite = sdedu.schedules.finite_terminal_snr(zero)
    assert finite.alpha_bar[-1] == 2**-24 and torch.equal(finite.alpha_bar[:-1], zero.alpha_bar[:-1])
    assert torch.equal(finite.betas, zero.betas) and zero.alpha_bar[-1] == 0  # as diffusers: alpha_bar only
    plain = NoiseSchedule.linear()
    assert sdedu.schedules.finite_terminal_snr(plain) is plain
    with pytest.raises(TypeError, match="schedule must be a sdedu.schedules.NoiseSchedule; got str"):
        sdedu.schedules.finite_terminal_snr("linear")


@pytest.mark.parametrize("make", [NoiseSchedule.linear, NoiseSchedule.scaled_linear, NoiseSchedule.cosine])
def test_bad_T(make):
    with pytest.raises(ValueError, match=r"T must be in \[1, .*got 0"):
        make(T=0)
    with pytest.raises(TypeError, match="T must be an int"):
        make(T=10.0)


def test_bad_beta_range():
    with pytest.raises(ValueError, match="beta_start <= beta_end.*got beta_start=0.1, beta_end=0.01"):
        NoiseSchedule.linear(beta_start=0.1, beta_end=0.01)
    with pytest.raises(ValueError, match="beta_start and beta_end"):
        NoiseSchedule.scaled_linear(beta_start=0.0)
    with pytest.raises(ValueError, match=r"beta_end must be in \[0.0, 1.0\]; got 2"):
        NoiseSchedule.linear(beta_end=2)
    with pytest.raises(TypeError, match="beta_start must be a number"):
        NoiseSchedule.linear(beta_start="0.1")
    with pytest.raises(ValueError, match="max_beta"):
        NoiseSchedule.cosine(max_beta=1.0)


# ---- ScheduleConfig: the typed settings a recipe and a manifest hold -------------------------


@pytest.mark.parametrize(
    "config, expected",
    [
        (sdedu.schedules.ScheduleConfig(), NoiseSchedule.scaled_linear()),
        (sdedu.schedules.ScheduleConfig("linear", T=50), NoiseSchedule.linear(T=50)),
        (sdedu.schedules.ScheduleConfig("linear", 20, 1e-3, 0.05), NoiseSchedule.linear(20, 1e-3, 0.05)),
        (sdedu.schedules.ScheduleConfig("cosine", T=30), NoiseSchedule.cosine(T=30)),
    ],
)
def test_schedule_config_builds_the_named_schedule(config, expected):
    torch.testing.assert_close(config.build().betas, expected.betas, rtol=0, atol=0)
    assert sdedu.schedules.ScheduleConfig.from_dict(config.to_dict()) == config


def test_schedule_config_reads_the_short_manifest_form_and_refuses_bad_fields():
    ScheduleConfig = sdedu.schedules.ScheduleConfig
    assert ScheduleConfig.from_dict({"kind": "scaled_linear"}) == ScheduleConfig()
    assert ScheduleConfig().to_dict() == {"kind": "scaled_linear", "T": 1000}
    with pytest.raises(ValueError, match="kind must be one of"):
        ScheduleConfig(kind="sigmoid")
    with pytest.raises(ValueError, match=r"unknown keys \['steps'\]"):
        ScheduleConfig.from_dict({"kind": "linear", "steps": 10})
    with pytest.raises(ValueError, match="cosine schedule has no beta range"):
        ScheduleConfig("cosine", beta_end=0.02)
    with pytest.raises(TypeError, match="T must be an int"):
        ScheduleConfig(T="1000")
