"""Checks for exercises 01 (forward diffusion) and 02 (one reverse DDPM step).

Each check runs the learner's function on a few cases chosen to expose the usual mistakes
(t = 0, t = T-1, a batch of different timesteps, a batch size equal to the image width so that a
missing reshape broadcasts silently, a short schedule where beta_t and beta tilde differ), and
compares with the closed form. When a result is wrong, the known wrong implementations listed
here are evaluated on the same case; the one that matches names the mistake in the hint.

The reference formulas (Ho et al. 2020, notation of `sdedu.schedules`):
    forward:  x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps                   (eq. 4)
    reverse:  x_{t-1} = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_pred) + sigma_t z,
              sigma_t^2 = beta_t, z = 0 at the last step t = 0                        (Algorithm 2)
"""

from __future__ import annotations

import torch

from sdedu.grading.errors import fail
from sdedu.grading.expect import expect_tensor
from sdedu.grading.registry import register
from sdedu.grading.trial import Trial
from sdedu.schedules import NoiseSchedule

BROADCAST_HINT = (
    "alpha_bar[t] has shape (B,), one value per image: reshape it to (B, 1, 1, 1) so that it "
    "broadcasts over the channels and pixels of each image (as written it broadcasts along the last axis)."
)


def expect_deterministic(item, case, first, second) -> None:
    if (
        isinstance(first, torch.Tensor)
        and isinstance(second, torch.Tensor)
        and first.shape == second.shape
        and not torch.equal(first.nan_to_num(), second.nan_to_num())
    ):
        fail(
            item,
            case,
            "two calls with the same inputs gave different results.",
            "use the `noise` argument instead of drawing new random noise.",
        )


def _per_image(values: torch.Tensor) -> torch.Tensor:
    return values.reshape(-1, 1, 1, 1)  # (B, 1, 1, 1)


# ---- 01: forward diffusion ---------------------------------------------------------------------


def forward_reference(x0, t, alpha_bar, noise):
    ab = _per_image(alpha_bar[t])
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def forward_mistakes(x0, t, alpha_bar, noise):
    """Known wrong versions of q_sample on one case: [(make_result, hint), ...]."""
    ab = _per_image(alpha_bar[t])
    return [
        (
            lambda: ab * x0 + (1 - ab) * noise,
            "alpha_bar_t and 1 - alpha_bar_t are variances; x_0 and the noise are scaled by standard "
            "deviations. Both coefficients need a square root.",
        ),
        (
            lambda: ab.sqrt() * x0 + (1 - ab) * noise,
            "the noise coefficient is missing its square root: the noise's variance is 1 - alpha_bar_t.",
        ),
        (
            lambda: ab * x0 + (1 - ab).sqrt() * noise,
            "the coefficient of x_0 is missing its square root: the signal's variance is alpha_bar_t.",
        ),
        (
            lambda: (1 - ab).sqrt() * x0 + ab.sqrt() * noise,
            "the two coefficients are swapped: at t = 0 (alpha_bar close to 1) x_t must be almost x_0.",
        ),
        (
            lambda: ab.sqrt() * x0 - (1 - ab).sqrt() * noise,
            "check the sign in front of the noise term: the forward process adds noise.",
        ),
        (
            lambda: forward_reference(x0, t - 1, alpha_bar, noise),
            "off by one: index alpha_bar with t itself (code t = 0 is the first noisy step, alpha_bar[0] "
            "already includes one step of noise).",
        ),
        (
            lambda: forward_reference(x0, t + 1, alpha_bar, noise),
            "off by one: index alpha_bar with t itself (code t runs from 0 to T-1).",
        ),
        (
            lambda: forward_reference(x0, t[:1].expand_as(t), alpha_bar, noise),
            "every image in the batch has its own timestep t[i]: use all of t, not t[0].",
        ),
        (lambda: alpha_bar[t].sqrt() * x0 + (1 - alpha_bar[t]).sqrt() * noise, BROADCAST_HINT),
        (
            lambda: alpha_bar[-1].sqrt() * x0 + (1 - alpha_bar[-1]).sqrt() * noise,
            "use alpha_bar at the timesteps t, not its last value.",
        ),
    ]


def _forward_cases(trial: Trial):
    g = trial.generator(0)
    linear = NoiseSchedule.linear(1000).alpha_bar
    cosine = NoiseSchedule.cosine(1000).alpha_bar
    short = NoiseSchedule.linear(10, 0.05, 0.5).alpha_bar
    specs = [
        ("1 (one image (1, 3, 4, 4) at t = [7], linear schedule T = 1000)", (1, 3, 4, 4), [7], linear),
        (
            "2 (a batch (4, 3, 4, 4) with t = [0, 10, 500, 999], linear schedule)",
            (4, 3, 4, 4),
            [0, 10, 500, 999],
            linear,
        ),
        ("3 (a batch (3, 1, 5, 6) with t = [999, 0, 250], cosine schedule)", (3, 1, 5, 6), [999, 0, 250], cosine),
        ("4 (a batch (2, 4, 8, 8) with t = [9, 3], short schedule T = 10)", (2, 4, 8, 8), [9, 3], short),
    ]
    for name, shape, t, alpha_bar in specs:
        x0 = torch.rand(shape, generator=g) * 2 - 1
        noise = torch.randn(shape, generator=g)
        yield name, x0, torch.tensor(t, dtype=torch.int64), alpha_bar, noise


@register(
    "forward_diffusion", "q_sample(x0, t, alpha_bar, noise): the forward process in one jump", "01_forward_diffusion"
)
def check_forward_diffusion(q_sample, trial: Trial) -> str:
    item = "forward_diffusion"
    count = 0
    for case, x0, t, alpha_bar, noise in _forward_cases(trial):
        with trial.case(case):
            args = [("x0", x0), ("t", t), ("alpha_bar", alpha_bar), ("noise", noise)]
            errors = {
                "must match the size": BROADCAST_HINT,
                "out of bounds": "off by one: t is already a valid index into alpha_bar (values 0 .. T-1).",
                "IndexError": "off by one: t is already a valid index into alpha_bar.",
            }
            got = trial.call(item, q_sample, args, case=case, name="q_sample", error_hints=errors)
            expect_deterministic(item, case, got, trial.call(item, q_sample, args, case=case, name="q_sample"))
            expect_tensor(
                item,
                case,
                got,
                forward_reference(x0, t, alpha_bar, noise),
                name="x_t",
                mistakes=forward_mistakes(x0, t, alpha_bar, noise),
                default_hint="x_t = (coefficient) * x0 + (coefficient) * noise, with both coefficients "
                "read from alpha_bar at each image's own t.",
            )
            count += 1
    return f"{count} cases"


# ---- 02: one reverse (DDPM) step -----------------------------------------------------------------


def reverse_reference(
    x_t,
    t,
    eps_pred,
    betas,
    alpha_bar,
    noise,
    *,
    variance=None,
    t_index=None,
    alpha_in_scale=None,
    coef=None,
    noise_at_zero=False,
    sign=-1.0,
):
    """One DDPM step; the keyword arguments build the known wrong versions."""
    i = t if t_index is None else t_index
    beta = betas[i]
    alpha = 1 - beta
    ab = alpha_bar[i]
    scale = alpha if alpha_in_scale is None else alpha_in_scale
    c = beta / (1 - ab).sqrt() if coef is None else coef
    mean = (x_t + sign * c * eps_pred) / scale.sqrt()
    if t == 0 and not noise_at_zero:
        return mean
    var = beta if variance is None else variance
    return mean + var.sqrt() * noise


def reverse_mistakes(x_t, t, eps_pred, betas, alpha_bar, noise):
    args = (x_t, t, eps_pred, betas, alpha_bar, noise)
    beta, ab = betas[t], alpha_bar[t]
    ab_prev = alpha_bar[t - 1] if t > 0 else torch.ones(())
    beta_tilde = (1 - ab_prev) / (1 - ab) * beta
    return [
        (
            lambda: reverse_reference(*args, noise_at_zero=True),
            "the last step (t == 0) must return the mean without adding noise (Algorithm 2: z = 0 when t = 1, i.e. code t = 0).",
        ),
        (
            lambda: reverse_reference(*args, variance=torch.zeros(())),
            "for t > 0 a DDPM step adds fresh noise sigma_t * noise (use the `noise` argument).",
        ),
        (
            lambda: reverse_reference(*args, variance=beta_tilde),
            "this exercise asks for the variance sigma_t^2 = beta_t (Ho et al. section 3.2, first choice), "
            "not the posterior variance beta tilde.",
        ),
        (
            lambda: reverse_reference(*args, variance=beta**2),
            "sigma_t is a standard deviation: the noise is scaled by the square root of the variance beta_t.",
        ),
        (
            lambda: reverse_reference(*args, alpha_in_scale=ab),
            "the factor 1/sqrt(alpha_t) uses one step's alpha_t = 1 - beta_t, not alpha_bar_t.",
        ),
        (
            lambda: reverse_reference(*args, coef=beta / beta.sqrt()),
            "the eps coefficient beta_t / sqrt(1 - alpha_bar_t) uses alpha_bar_t (the cumulative product), not alpha_t.",
        ),
        (
            lambda: reverse_reference(*args, coef=beta / (1 - ab)),
            "the eps coefficient divides by sqrt(1 - alpha_bar_t), a standard deviation: a square root is missing.",
        ),
        (lambda: reverse_reference(*args, sign=+1.0), "check the sign: the step removes the predicted noise from x_t."),
        (
            lambda: reverse_reference(*args, alpha_in_scale=torch.ones(())),
            "the mean is scaled by 1/sqrt(alpha_t) after removing the predicted noise.",
        ),
        (
            lambda: reverse_reference(*args, t_index=t - 1),
            "off by one: betas[t] and alpha_bar[t] belong to the step from x_t (code t is already an index).",
        ),
        (
            lambda: reverse_reference(*args, t_index=t + 1),
            "off by one: betas[t] and alpha_bar[t] belong to the step from x_t (code t is already an index).",
        ),
    ]


def _reverse_cases(trial: Trial):
    g = trial.generator(1)
    linear = NoiseSchedule.linear(1000)
    short = NoiseSchedule.linear(10, 0.05, 0.5)
    specs = [
        ("1 (t = 500 of T = 1000, batch (2, 3, 4, 4))", 500, linear, (2, 3, 4, 4)),
        ("2 (t = 0, the last step, T = 1000, batch (2, 3, 4, 4))", 0, linear, (2, 3, 4, 4)),
        ("3 (t = 1 of a short schedule T = 10, batch (3, 2, 5, 5))", 1, short, (3, 2, 5, 5)),
        ("4 (t = 5 of T = 10, batch (1, 1, 6, 4))", 5, short, (1, 1, 6, 4)),
        ("5 (t = 0 of T = 10, batch (2, 1, 3, 3))", 0, short, (2, 1, 3, 3)),
        ("6 (t = 9 = T - 1 of T = 10, batch (2, 3, 4, 4))", 9, short, (2, 3, 4, 4)),
    ]
    for name, t, schedule, shape in specs:
        x_t = torch.randn(shape, generator=g)
        eps_pred = torch.randn(shape, generator=g)
        noise = torch.randn(shape, generator=g)
        yield name, x_t, t, eps_pred, schedule.betas, schedule.alpha_bar, noise


@register(
    "reverse_diffusion",
    "ddpm_step(x_t, t, eps_pred, betas, alpha_bar, noise): one DDPM ancestral step",
    "02_reverse_diffusion",
)
def check_reverse_diffusion(ddpm_step, trial: Trial) -> str:
    item = "reverse_diffusion"
    count = 0
    for case, x_t, t, eps_pred, betas, alpha_bar, noise in _reverse_cases(trial):
        with trial.case(case):
            args = [
                ("x_t", x_t),
                ("t", t),
                ("eps_pred", eps_pred),
                ("betas", betas),
                ("alpha_bar", alpha_bar),
                ("noise", noise),
            ]
            errors = {
                "out of bounds": "off by one: t is already a valid index into betas and alpha_bar (0 .. T-1).",
                "IndexError": "off by one: t is already a valid index into betas and alpha_bar (0 .. T-1).",
            }
            got = trial.call(item, ddpm_step, args, case=case, name="ddpm_step", error_hints=errors)
            expect_deterministic(item, case, got, trial.call(item, ddpm_step, args, case=case, name="ddpm_step"))
            expect_tensor(
                item,
                case,
                got,
                reverse_reference(x_t, t, eps_pred, betas, alpha_bar, noise),
                name="x_{t-1}",
                mistakes=reverse_mistakes(x_t, t, eps_pred, betas, alpha_bar, noise),
                default_hint="compare your line with Algorithm 2 of Ho et al. 2020 term by term: which "
                "quantities are one step's (alpha_t, beta_t) and which are cumulative (alpha_bar_t)?",
            )
            count += 1
    return f"{count} cases"
