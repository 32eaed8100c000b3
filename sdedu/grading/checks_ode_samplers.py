"""Checks for exercise 12 (samplers as ODE solvers): one Euler step and one DPM-Solver++(2M) step.

The right answer is the library's own sampler (`sdedu.samplers.EulerSampler`,
`sdedu.samplers.DPMSolverMultistepSampler`) stepped at the same timestep; the cases are the first
step (t = T - 1; DPM-Solver++ has no previous x0_pred there), a middle step, and the last step
(t_next = -1: clean data, alpha_bar = 1, sigma = 0), on a long and a short schedule. The known
wrong versions below are written in closed form (notation of `sdedu.samplers.sigmas` and
`sdedu.samplers.dpm_solver`):

    Euler (Karras et al. 2022, Algorithm 1, lines 4-5), sigma(t) = sqrt((1 - alpha_bar_t) / alpha_bar_t):
        x = x_t / sqrt(alpha_bar_t),  x' = x + (sigma(t_next) - sigma(t)) eps_pred,  x_next = x' sqrt(alpha_bar_next)
    DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2), sqrt(alpha_bar) and std = sqrt(1 - alpha_bar) (Lu et al.'s
    alpha_t and sigma_t: the mean factor and standard deviation of x_t), lambda = log(sqrt(alpha_bar) / std):
        h = lambda_next - lambda_t, r = (lambda_t - lambda_prev) / h, D = (1 + 1/(2r)) x0_pred - 1/(2r) x0_pred_prev
        x_next = (std_next / std_t) x_t - sqrt(alpha_bar_next) (e^{-h} - 1) D;  D = x0_pred at the first step;
        x0_pred at the last
"""

from __future__ import annotations

import torch

from sdedu.grading.errors import fail
from sdedu.grading.expect import expect_tensor
from sdedu.grading.registry import register
from sdedu.grading.trial import Trial
from sdedu.samplers.dpm_solver import DPMSolverMultistepSampler
from sdedu.samplers.euler import EulerSampler
from sdedu.samplers.sigmas import CLEAN, next_timestep
from sdedu.schedules import NoiseSchedule

NOTEBOOK = "12_ode_samplers"
LAST_STEP_HINT = (
    "t_next = -1 is not an index: it means clean data, alpha_bar = 1 and sigma = 0 (alpha_bar[-1] is the "
    "noisiest value of the schedule). The last step must land on the denoised estimate x0_pred."
)
SIGMA_HINT = (
    "sigma vs alpha_bar: Karras et al.'s noise level is sigma(t) = sqrt((1 - alpha_bar_t) / alpha_bar_t), the noise "
    "of x = x_t / sqrt(alpha_bar_t) = x_0 + sigma eps; sqrt(1 - alpha_bar_t) is the noise of x_t itself."
)


def _alpha_bar_at(alpha_bar: torch.Tensor, t: int, *, wrap: bool = False) -> torch.Tensor:
    """alpha_bar_t as a 0-d tensor; t = -1 is clean data (1) unless `wrap` (the mistake alpha_bar[-1])."""
    return alpha_bar[t] if t != CLEAN or wrap else torch.ones((), dtype=alpha_bar.dtype)


def _cases(trial: Trial, public_seed: int):
    g = trial.generator(public_seed)
    linear, short = NoiseSchedule.linear(1000), NoiseSchedule.linear(10, 0.05, 0.5)
    specs = [
        ("1 (the first step, t = 999 of T = 1000, 10 steps, batch (2, 3, 4, 4))", linear, 10, 0, (2, 3, 4, 4)),
        ("2 (a middle step of T = 1000, 10 steps, batch (2, 3, 4, 4))", linear, 10, 4, (2, 3, 4, 4)),
        ("3 (the last step, t_next = -1, T = 1000, 10 steps, batch (2, 3, 4, 4))", linear, 10, 9, (2, 3, 4, 4)),
        ("4 (the second step of a short schedule T = 10, 5 steps, batch (3, 1, 5, 5))", short, 5, 1, (3, 1, 5, 5)),
        ("5 (the last step of T = 10, 5 steps, batch (1, 2, 3, 3))", short, 5, 4, (1, 2, 3, 3)),
    ]
    for name, schedule, n, i, shape in specs:
        sampler = EulerSampler(schedule)
        sampler.set_timesteps(n)
        timesteps = sampler.timesteps
        t = int(timesteps[i])
        t_prev = int(timesteps[i - 1]) if i > 0 else None
        tensors = [torch.randn(shape, generator=g) for _ in range(3)]
        yield name, schedule, n, t_prev, t, next_timestep(timesteps, t), tensors


# ---- Euler ----------------------------------------------------------------------------------------


def euler_closed_form(x_t, t, t_next, eps_pred, alpha_bar, *, std=False, scale=True, back=True, wrap=False, sign=1):
    """One Euler step in closed form; the keyword arguments build the known wrong versions."""
    ab, ab_next = _alpha_bar_at(alpha_bar, t), _alpha_bar_at(alpha_bar, t_next, wrap=wrap)
    sigma = (1 - ab).sqrt() if std else ((1 - ab) / ab).sqrt()
    sigma_next = (1 - ab_next).sqrt() if std else ((1 - ab_next) / ab_next).sqrt()
    x = x_t / ab.sqrt() if scale else x_t
    x_next = x + sign * (sigma_next - sigma) * eps_pred
    return x_next * ab_next.sqrt() if scale and back else x_next


def euler_mistakes(x_t, t, t_next, eps_pred, alpha_bar):
    args = (x_t, t, t_next, eps_pred, alpha_bar)
    return [
        (lambda: euler_closed_form(*args, std=True), SIGMA_HINT),
        (lambda: euler_closed_form(*args, std=True, scale=False), SIGMA_HINT),
        (
            lambda: euler_closed_form(*args, scale=False),
            "the missing input scaling: the ODE dx = eps dsigma holds for x = x_t / sqrt(alpha_bar_t), not for x_t. "
            "Divide by sqrt(alpha_bar_t) before the step and multiply by sqrt(alpha_bar_next) after it.",
        ),
        (
            lambda: euler_closed_form(*args, back=False),
            "the step is taken in x = x_t / sqrt(alpha_bar_t), but the result must be the sample the model sees at "
            "t_next: multiply by sqrt(alpha_bar_next) at the end.",
        ),
        (lambda: euler_closed_form(*args, wrap=True), LAST_STEP_HINT),
        (
            lambda: euler_closed_form(*args, sign=-1),
            "check the sign: sigma(t_next) < sigma(t), so (sigma(t_next) - sigma(t)) eps_pred removes noise.",
        ),
    ]


@register(
    "euler_step",
    "euler_step(x_t, t, t_next, eps_pred, alpha_bar): one Euler step of the probability-flow ODE",
    NOTEBOOK,
)
def check_euler_step(euler_step, trial: Trial) -> str:
    item = "euler_step"
    count = 0
    for case, schedule, n, _, t, t_next, (x_t, eps_pred, _) in _cases(trial, 12):
        with trial.case(case):
            args = [
                ("x_t", x_t),
                ("t", t),
                ("t_next", t_next),
                ("eps_pred", eps_pred),
                ("alpha_bar", schedule.alpha_bar),
            ]
            got = trial.call(item, euler_step, args, case=case, name="euler_step")
            sampler = EulerSampler(schedule)
            sampler.set_timesteps(n)
            expected = sampler.step(eps_pred, t, x_t).x_prev
            default = LAST_STEP_HINT if t_next == CLEAN else None
            expect_tensor(
                item,
                case,
                got,
                expected,
                name="x_next",
                mistakes=euler_mistakes(x_t, t, t_next, eps_pred, schedule.alpha_bar),
                default_hint=default
                or "write the three moves one by one: x = x_t / sqrt(alpha_bar_t); x + (sigma(t_next) - sigma(t)) eps_pred; "
                "times sqrt(alpha_bar_next).",
            )
            count += 1
    return f"{count} cases"


# ---- DPM-Solver++(2M) -----------------------------------------------------------------------------


def dpmpp_closed_form(
    x_t, t, t_next, x0_pred, alpha_bar, t_prev, x0_pred_prev, *, karras_ratio=False, std_lambda=False,
    no_alpha=False, first_order=False, inverted_r=False, wrap=False,
):  # fmt: skip
    """One DPM-Solver++(2M) step in closed form; the keyword arguments build the known wrong versions."""
    if t_next == CLEAN and not wrap:
        return x0_pred

    def terms(step):
        ab = _alpha_bar_at(alpha_bar, step, wrap=wrap)
        std = (1 - ab).sqrt()  # Lu et al.'s sigma_t: the standard deviation of x_t
        return ab.sqrt(), std, -std.log() if std_lambda else (ab.sqrt() / std).log()

    sqrt_ab, std, lam = terms(t)
    sqrt_ab_next, std_next, lam_next = terms(t_next)
    h = lam_next - lam
    ratio = (std_next / sqrt_ab_next) / (std / sqrt_ab) if karras_ratio else std_next / std
    D = x0_pred
    if t_prev is not None and not first_order:
        r = (lam - terms(t_prev)[2]) / h
        r = 1 / r if inverted_r else r
        D = (1 + 1 / (2 * r)) * x0_pred - (1 / (2 * r)) * x0_pred_prev
    return ratio * x_t - (1 if no_alpha else sqrt_ab_next) * (torch.exp(-h) - 1) * D


def dpmpp_mistakes(*args):
    return [
        (
            lambda: dpmpp_closed_form(*args, karras_ratio=True),
            "sigma vs alpha_bar: the ratio of DPM-Solver++ is sqrt(1 - alpha_bar_next) / sqrt(1 - alpha_bar_t), of the "
            "standard deviations of x_t (Lu et al.'s sigma_t), not of Karras et al.'s sigma = sqrt((1 - alpha_bar) / "
            "alpha_bar).",
        ),
        (
            lambda: dpmpp_closed_form(*args, std_lambda=True),
            "sigma vs alpha_bar: lambda_t = log(sqrt(alpha_bar_t) / sqrt(1 - alpha_bar_t)) (Lu et al.'s log(alpha_t / "
            "sigma_t)), half the log-SNR; the sqrt(alpha_bar_t) in it is missing.",
        ),
        (
            lambda: dpmpp_closed_form(*args, no_alpha=True),
            "the missing input scaling: the x0_pred term is scaled by sqrt(alpha_bar_next) (Lu et al.'s alpha_next), the signal "
            "coefficient of x_t at t_next.",
        ),
        (
            lambda: dpmpp_closed_form(*args, first_order=True),
            "this is the first-order step (DDIM) at every step: after the first step, D extrapolates through the "
            "previous x0_pred, D = (1 + 1/(2r)) x0_pred - 1/(2r) x0_pred_prev.",
        ),
        (
            lambda: dpmpp_closed_form(*args, inverted_r=True),
            "r = h_last / h: the previous step's lambda increment over this step's, not the other way round.",
        ),
        (lambda: dpmpp_closed_form(*args, wrap=True), LAST_STEP_HINT),
    ]


FIRST_STEP_HINT = (
    "at the first step there is no previous x0_pred (t_prev and x0_pred_prev are None): take the first-order step, "
    "D = x0_pred (Lu et al. 2022, Algorithm 2, line 3)."
)


@register(
    "dpmpp_2m_step",
    "dpmpp_2m_step(x_t, t, t_next, x0_pred, alpha_bar, t_prev, x0_pred_prev): one DPM-Solver++(2M) step",
    NOTEBOOK,
)
def check_dpmpp_2m_step(dpmpp_2m_step, trial: Trial) -> str:
    item = "dpmpp_2m_step"
    count = 0
    for case, schedule, n, t_prev, t, t_next, (x_t, x0_pred, x0_prev) in _cases(trial, 13):
        with trial.case(case):
            x0_pred_prev = None if t_prev is None else x0_prev
            alpha_bar = schedule.alpha_bar
            args = [
                ("x_t", x_t),
                ("t", t),
                ("t_next", t_next),
                ("x0_pred", x0_pred),
                ("alpha_bar", alpha_bar),
                ("t_prev", t_prev),
                ("x0_pred_prev", x0_pred_prev),
            ]
            errors = {"NoneType": FIRST_STEP_HINT}
            if t_next == CLEAN:
                errors.update({"ZeroDivisionError": LAST_STEP_HINT, "math domain error": LAST_STEP_HINT})
            got = trial.call(item, dpmpp_2m_step, args, case=case, name="dpmpp_2m_step", error_hints=errors)
            sampler = DPMSolverMultistepSampler(schedule, prediction_type="x0")
            sampler.set_timesteps(n)
            if t_prev is not None:
                sampler.step(x0_prev, t_prev, x_t)  # the sampler remembers the previous step's x0_pred
            expected = sampler.step(x0_pred, t, x_t).x_prev
            if t_next == CLEAN and isinstance(got, torch.Tensor) and not torch.isfinite(got).all():
                fail(item, case, "x_next contains NaN/inf values at the last step.", LAST_STEP_HINT)
            expect_tensor(
                item,
                case,
                got,
                expected,
                name="x_next",
                mistakes=dpmpp_mistakes(x_t, t, t_next, x0_pred, alpha_bar, t_prev, x0_pred_prev),
                default_hint=LAST_STEP_HINT
                if t_next == CLEAN
                else FIRST_STEP_HINT
                if t_prev is None
                else "compare each factor with Algorithm 2: h, r, D, then x_next = (sqrt(1 - alpha_bar_next) / "
                "sqrt(1 - alpha_bar_t)) x_t - sqrt(alpha_bar_next) (e^{-h} - 1) D (Lu et al.'s alpha = sqrt(alpha_bar), "
                "sigma = sqrt(1 - alpha_bar)).",
            )
            count += 1
    return f"{count} cases"
