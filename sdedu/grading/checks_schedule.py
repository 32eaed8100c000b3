"""Check for exercise 01's second item: the cosine schedule's alpha_bar from its formula.

The right answer is the library's `NoiseSchedule.cosine(T, s, max_beta).alpha_bar` (Nichol &
Dhariwal 2021, eq. 17, with the betas clipped at max_beta as in their section 3.2):

    f(u) = cos((u + s) / (1 + s) * pi / 2)^2,   beta_t = min(1 - f((t + 1) / T) / f(t / T), max_beta)
    alpha_bar_t = prod_{i <= t} (1 - beta_i)     (= f((t + 1) / T) / f(0) wherever no beta is clipped)

in code indices t = 0 .. T-1 (code t is the paper's step t + 1). The cases use the paper's
settings (T = 1000, s = 0.008, max_beta = 0.999), a short chain whose last beta is clipped, and
a large offset with a low cap, where forgetting f(0) or the clipping changes every value. Their
T and s are drawn from the trial's generator, so hidden cases differ from the public ones. The
known wrong versions are written with `cosine_variant` below.
"""

from __future__ import annotations

import math

import torch

from sdedu.grading.expect import expect_tensor
from sdedu.grading.registry import register
from sdedu.grading.trial import Trial
from sdedu.schedules import NoiseSchedule

ITEM = "cosine_schedule"


def cosine_variant(
    T, s, max_beta, *, square=True, offset=True, divide=True, normalise=True, clip="betas", shift=1, product="alphas"
):
    """alpha_bar (T,) float32 of the cosine schedule; the keyword arguments build the known wrong versions.

    clip: "betas" (right), "none" (alpha_bar = f(t / T) / f(0) directly) or "below" (max instead of min).
    shift: 1 (right: alpha_bar[t] belongs to paper step t + 1) or 0 (alpha_bar[0] = 1, clean data).
    product: "alphas" (right) or "betas" (the cumulative product of the betas).
    """
    s = s if offset else 0.0

    def f(u: float) -> float:
        angle = (u + s) / (1 + s) * math.pi / 2 if divide else (u + s) * math.pi / 2
        return math.cos(angle) ** 2 if square else math.cos(angle)

    f0 = f(0.0) if normalise else 1.0
    if clip == "none":
        return torch.tensor([f((t + shift) / T) / f0 for t in range(T)], dtype=torch.float32)
    betas = [1 - f((t + 1) / T) / f(t / T) for t in range(T)]
    betas = [min(b, max_beta) if clip == "betas" else max(b, max_beta) for b in betas]
    factors = torch.tensor([1 - b if product == "alphas" else b for b in betas], dtype=torch.float64)
    alpha_bar = torch.cumprod(factors, 0)
    if shift == 0:
        alpha_bar = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
    return alpha_bar.to(torch.float32)


def cosine_mistakes(T, s, max_beta):
    """Known wrong versions of cosine_alpha_bar on one case: [(make_result, hint), ...]."""
    args = (T, s, max_beta)
    return [
        (
            lambda: cosine_variant(*args, clip="none", normalise=False),
            "alpha_bar is not normalised by f(0): alpha_bar_t = f(t / T) / f(0), so that the chain starts from "
            "alpha_bar = 1 (clean data); with an offset s > 0, f(0) < 1.",
        ),
        (
            lambda: cosine_variant(*args, square=False),
            "f(u) is the *squared* cosine, cos((u + s) / (1 + s) * pi / 2)^2: alpha_bar is a variance, "
            "sqrt(alpha_bar) is the cosine itself.",
        ),
        (
            lambda: cosine_variant(*args, offset=False),
            "the offset s is missing: f(u) = cos((u + s) / (1 + s) * pi / 2)^2 with s = 0.008 in the paper, "
            "which keeps beta_t from being tiny near t = 0.",
        ),
        (
            lambda: cosine_variant(*args, divide=False),
            "the angle is (u + s) / (1 + s) * pi / 2: divide by (1 + s), so that it reaches exactly pi / 2 at u = 1.",
        ),
        (
            lambda: cosine_variant(*args, shift=0),
            "off by one: code t is the paper's step t + 1, so alpha_bar[0] = f(1 / T) / f(0) (one step of "
            "noise), not f(0) / f(0) = 1, and alpha_bar[T - 1] = f(1) / f(0).",
        ),
        (
            lambda: cosine_variant(*args, clip="none", shift=0),
            "off by one: code t is the paper's step t + 1, so alpha_bar[0] = f(1 / T) / f(0) (one step of "
            "noise), not f(0) / f(0) = 1, and alpha_bar[T - 1] = f(1) / f(0).",
        ),
        (
            lambda: cosine_variant(*args, clip="none"),
            "the betas are not clipped: beta_t = min(1 - alpha_bar_t / alpha_bar_{t-1}, max_beta) (Nichol & "
            "Dhariwal, section 3.2: near t = T the ratio tends to 0 and beta_t to 1). Clip the betas, then "
            "alpha_bar is the cumulative product of 1 - beta_t.",
        ),
        (
            lambda: cosine_variant(*args, clip="below"),
            "the clip caps the betas from above: beta_t = min(..., max_beta), not max(...).",
        ),
        (
            lambda: cosine_variant(*args, product="betas"),
            "alpha_bar is the cumulative product of alpha_t = 1 - beta_t, not of the betas.",
        ),
        (
            lambda: torch.tensor([min(1 - a / b, max_beta) for a, b in _ratios(T, s)], dtype=torch.float32),
            "these are the betas: return alpha_bar, the cumulative product of 1 - beta_t.",
        ),
    ]


def _ratios(T, s):
    def f(u):
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    return [(f((t + 1) / T), f(t / T)) for t in range(T)]


def _cases(trial: Trial):
    g = trial.generator(2)
    # (what the case shows, base T, extra T drawn in [0, spread), s, max_beta)
    specs = [
        ("the paper's settings", 1000, 1, 0.008, 0.999),
        ("a short chain: the last beta is clipped", 10, 4, 0.008, 0.999),
        ("a large offset s and a low cap max_beta = 0.5", 8, 4, 0.2, 0.5),
        ("a medium chain, cap 0.3", 40, 20, 0.05, 0.3),
    ]
    for k, (what, base, spread, s, max_beta) in enumerate(specs, start=1):
        T = base + int(torch.randint(0, spread, (), generator=g))
        s = round(s * (1 + 0.5 * float(torch.rand((), generator=g))), 4) if trial.hidden else s
        yield f"{k} ({what}: T = {T}, s = {s}, max_beta = {max_beta})", T, s, max_beta


@register(
    ITEM,
    "cosine_alpha_bar(T, s, max_beta): the cosine schedule (Nichol & Dhariwal 2021, eq. 17)",
    "01_forward_diffusion",
)
def check_cosine_schedule(cosine_alpha_bar, trial: Trial) -> str:
    count = 0
    for case, T, s, max_beta in _cases(trial):
        with trial.case(case):
            args = [("T", T), ("s", s), ("max_beta", max_beta)]
            errors = {
                "math domain error": "a square root or log of a negative number: f(u) is a squared cosine, never "
                "negative, and 1 - beta_t must stay positive.",
            }
            got = trial.call(ITEM, cosine_alpha_bar, args, case=case, name="cosine_alpha_bar", error_hints=errors)
            expect_tensor(
                ITEM,
                case,
                got,
                NoiseSchedule.cosine(T, s, max_beta).alpha_bar,
                name="alpha_bar",
                check_dtype=False,
                mistakes=cosine_mistakes(T, s, max_beta),
                shape_hint="alpha_bar has one value per code timestep t = 0 .. T-1: shape (T,).",
                default_hint="compute f(u) for u = t / T, t = 0 .. T; beta_t = min(1 - f((t + 1) / T) / f(t / T), "
                "max_beta); alpha_bar = cumulative product of 1 - beta_t.",
            )
            count += 1
    return f"{count} cases"
