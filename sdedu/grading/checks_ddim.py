"""Check for exercise 02's second item: one DDIM step, deterministic (eta = 0) and stochastic (eta > 0).

The right answer is the library's `DDIMSampler(schedule, eta, clip_sample).step(eps_pred, t, x_t,
generator)`, the learner receiving alpha_bar at t and where the step lands (the sampler's
`previous_alpha_bar(t)`) and the noise the sampler's generator draws. Song et al. 2021, eq. 12
and 16, with alpha_bar for the paper's alpha:

    x0_pred = (x_t - sqrt(1 - alpha_bar_t) eps_pred) / sqrt(alpha_bar_t)     (clamped to [-1, 1] if clip_sample)
    sigma_t = eta sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_prev)
    x_prev  = sqrt(alpha_bar_prev) x0_pred + sqrt(1 - alpha_bar_prev - sigma_t^2) eps_pred + sigma_t noise

The cases: eta = 0 at a middle step and at the last step, eta = 1 and eta = 0.5 (where a missing
eta or a missing factor of sigma_t shows), and clip_sample at the first steps, where x0_pred is
far outside [-1, 1]. The known wrong versions are written with `ddim_variant` below.
"""

from __future__ import annotations

import torch

from sdedu.diffusion import randn_like
from sdedu.grading.checks_diffusion import expect_deterministic
from sdedu.grading.expect import expect_tensor
from sdedu.grading.registry import register
from sdedu.grading.trial import Trial
from sdedu.samplers.ddim import DDIMSampler
from sdedu.schedules import NoiseSchedule

ITEM = "ddim_step"
CLIP_HINT = (
    "with clip_sample=True, clamp x0_pred to [-1, 1] (the data range) before it is used; the direction term "
    "keeps the model's own eps_pred (as Stable Diffusion's DDIM scheduler does)."
)


def ddim_variant(
    x_t, eps_pred, alpha_bar_t, alpha_bar_prev, eta, noise, clip_sample, *, root=True, ratio=True, spread=True,
    subtract=True, std=True, use_eta=True, add_noise=True, clip=None, clip_eps=False, swap=False,
):  # fmt: skip
    """One DDIM step in closed form; the keyword arguments build the known wrong versions.

    clip: None follows clip_sample; "never", "always" or "x_prev" (clamp the result instead of x0_pred).
    clip_eps: recompute eps from the clipped x0_pred (diffusers' use_clipped_model_output=True).
    """
    ab, ab_prev = (alpha_bar_prev, alpha_bar_t) if swap else (alpha_bar_t, alpha_bar_prev)
    sq = (lambda v: v.sqrt()) if root else (lambda v: v)
    x0_pred = (x_t - sq(1 - ab) * eps_pred) / sq(ab)
    clipping = {None: clip_sample, "never": False, "always": True, "x_prev": False}[clip]
    if clipping:
        x0_pred = x0_pred.clamp(-1.0, 1.0)
        if clip_eps:
            eps_pred = (x_t - ab.sqrt() * x0_pred) / (1 - ab).sqrt()
    variance = ((1 - ab_prev) / (1 - ab) if spread else 1.0) * ((1 - ab / ab_prev) if ratio else 1.0)
    sigma = (eta if use_eta else 1.0) * (variance.sqrt() if std else variance)
    direction = (1 - ab_prev - (sigma**2 if subtract else 0.0)).sqrt() * eps_pred
    x_prev = sq(ab_prev) * x0_pred + direction
    if eta > 0 and add_noise:
        x_prev = x_prev + sigma * noise
    return x_prev.clamp(-1.0, 1.0) if clip == "x_prev" else x_prev


def ddim_mistakes(*args):
    """Known wrong versions of ddim_step on one case: [(make_result, hint), ...]."""
    clip_sample = args[-1]
    mistakes = [
        (
            lambda: ddim_variant(*args, root=False),
            "alpha_bar is a variance; x_0 and the noise are scaled by standard deviations: sqrt(alpha_bar_t) and "
            "sqrt(1 - alpha_bar_t) in x0_pred, sqrt(alpha_bar_prev) in x_prev.",
        ),
        (
            lambda: ddim_variant(*args, ratio=False),
            "sigma_t is missing its factor (1 - alpha_bar_t / alpha_bar_prev): sigma_t = eta sqrt((1 - alpha_bar_prev) "
            "/ (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_prev) (eq. 16).",
        ),
        (
            lambda: ddim_variant(*args, spread=False),
            "sigma_t is missing its factor (1 - alpha_bar_prev) / (1 - alpha_bar_t): sigma_t = eta sqrt((1 - "
            "alpha_bar_prev) / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_prev) (eq. 16).",
        ),
        (
            lambda: ddim_variant(*args, subtract=False),
            "the direction term's coefficient is sqrt(1 - alpha_bar_prev - sigma_t^2): the noise sigma_t adds "
            "takes its variance from the direction term, so that x_prev keeps the right total variance.",
        ),
        (
            lambda: ddim_variant(*args, std=False),
            "sigma_t is a standard deviation: the noise is scaled by the square root of the variance.",
        ),
        (lambda: ddim_variant(*args, use_eta=False), "sigma_t = eta * sqrt(...): eta scales the standard deviation."),
        (
            lambda: ddim_variant(*args, add_noise=False),
            "for eta > 0 the step adds fresh noise sigma_t * noise (use the `noise` argument).",
        ),
        (
            lambda: ddim_variant(*args, swap=True),
            "alpha_bar_t and alpha_bar_prev are swapped: x0_pred comes from x_t with alpha_bar_t; x_prev is built "
            "with alpha_bar_prev, where the step lands (less noise: alpha_bar_prev > alpha_bar_t).",
        ),
        (
            lambda: ddim_variant(*args, clip="x_prev"),
            "clip_sample clamps x0_pred, the estimate of the clean data, not the result x_prev (which is still noisy).",
        ),
    ]
    if clip_sample:
        mistakes += [
            (lambda: ddim_variant(*args, clip="never"), CLIP_HINT),
            (
                lambda: ddim_variant(*args, clip_eps=True),
                "the direction term keeps the model's own eps_pred; do not recompute eps from the clipped x0_pred "
                "(that is diffusers' use_clipped_model_output=True, not what Stable Diffusion's sampler does).",
            ),
        ]
    else:
        mistakes.append(
            (
                lambda: ddim_variant(*args, clip="always"),
                "clamp x0_pred only when clip_sample is True (latents are not confined to [-1, 1]).",
            )
        )
    return mistakes


def _cases(trial: Trial):
    g = trial.generator(3)
    linear, short = NoiseSchedule.linear(1000), NoiseSchedule.linear(10, 0.05, 0.5)
    # (what, schedule, number of steps, index of the step, eta, clip_sample, shape)
    specs = [
        ("a middle step, eta = 0", linear, 10, 4, 0.0, False, (2, 3, 4, 4)),
        ("the last step (it lands on alpha_bar[0]), eta = 0", linear, 10, 9, 0.0, False, (2, 3, 4, 4)),
        ("a middle step, eta = 1", linear, 10, 5, 1.0, False, (2, 3, 4, 4)),
        ("a short schedule T = 10, eta = 0.5", short, 5, 2, 0.5, False, (3, 1, 5, 5)),
        ("the first step with clip_sample, eta = 0", linear, 10, 0, 0.0, True, (2, 3, 4, 4)),
        ("the second step with clip_sample, eta = 0.5", linear, 10, 1, 0.5, True, (1, 2, 6, 4)),
    ]
    for k, (what, schedule, n, i, eta, clip_sample, shape) in enumerate(specs, start=1):
        sampler = DDIMSampler(schedule, eta=eta, clip_sample=clip_sample)
        sampler.set_timesteps(n)
        t = int(sampler.timesteps[i])
        x_t, eps_pred = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
        noise_seed = int(torch.randint(0, 2**31 - 1, (), generator=g))
        name = f"{k} ({what}: t = {t} of T = {schedule.T}, {n} steps, batch {shape})"
        yield name, sampler, t, x_t, eps_pred, noise_seed


@register(
    ITEM,
    "ddim_step(x_t, eps_pred, alpha_bar_t, alpha_bar_prev, eta, noise, clip_sample): one DDIM step (Song et al. 2021)",
    "02_reverse_diffusion",
)
def check_ddim_step(ddim_step, trial: Trial) -> str:
    count = 0
    for case, sampler, t, x_t, eps_pred, noise_seed in _cases(trial):
        with trial.case(case):
            noise = randn_like(x_t, torch.Generator().manual_seed(noise_seed))  # what the sampler will draw
            values = (x_t, eps_pred, sampler.schedule.alpha_bar[t], sampler.previous_alpha_bar(t), sampler.eta, noise)
            names = ("x_t", "eps_pred", "alpha_bar_t", "alpha_bar_prev", "eta", "noise", "clip_sample")
            args = list(zip(names, (*values, sampler.clip_sample)))
            errors = {"NoneType": "return x_prev (did you forget the `return` statement?)."}
            got = trial.call(ITEM, ddim_step, args, case=case, name="ddim_step", error_hints=errors)
            expect_deterministic(ITEM, case, got, trial.call(ITEM, ddim_step, args, case=case, name="ddim_step"))
            expected = sampler.step(eps_pred, t, x_t, torch.Generator().manual_seed(noise_seed)).x_prev
            expect_tensor(
                ITEM,
                case,
                got,
                expected,
                name="x_prev",
                mistakes=ddim_mistakes(*values, sampler.clip_sample),
                default_hint="write the three terms of eq. 12 one by one: sqrt(alpha_bar_prev) x0_pred, "
                "sqrt(1 - alpha_bar_prev - sigma_t^2) eps_pred and sigma_t noise, with x0_pred from eq. 9.",
            )
            count += 1
    return f"{count} cases"
