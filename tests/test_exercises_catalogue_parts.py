"""The four exercises on Stable Diffusion's other parts reject every typical wrong answer with a useful hint.

The cosine schedule (01), the DDIM step (02), the VAE's reparameterised sample and KL (03) and
SDEdit's timesteps (05). Each entry: a wrong answer written the way a learner would, and a
keyword its hint must contain. The right answers are checked too, so that a check that rejects
everything cannot pass here.
"""

import math

import torch
from exercise_catalogue import assert_passes, assert_rejected, mutants, right_answers, wrong_answers

# ---- 01 the cosine schedule -------------------------------------------------------------------------


def cosine_alpha_bar(T, s=0.008, max_beta=0.999, *, square=2, offset=True, divide=True, clip=min, factors="alphas"):
    s = s if offset else 0.0

    def f(u):
        return math.cos((u + s) / ((1 + s) if divide else 1) * math.pi / 2) ** square

    betas = torch.tensor([clip(1 - f((t + 1) / T) / f(t / T), max_beta) for t in range(T)], dtype=torch.float64)
    return torch.cumprod(1 - betas if factors == "alphas" else betas, 0).float()


def _f(T, s):
    return [math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2 for t in range(T + 1)]


COSINE_WRONG = {
    "cos not squared": (lambda *a: cosine_alpha_bar(*a, square=1), "squared"),
    "no offset s": (lambda *a: cosine_alpha_bar(*a, offset=False), "offset s"),
    "no division by 1 + s": (lambda *a: cosine_alpha_bar(*a, divide=False), "(1 + s)"),
    "not normalised by f(0)": (lambda T, s, m: torch.tensor(_f(T, s)[1:]), "f(0)"),
    "betas not clipped": (lambda T, s, m: torch.tensor(_f(T, s)[1:]) / _f(T, s)[0], "clip"),
    "alpha_bar[0] = 1": (lambda T, s, m: torch.tensor(_f(T, s)[:-1]) / _f(T, s)[0], "off by one"),
    "max instead of min": (lambda *a: cosine_alpha_bar(*a, clip=max), "min("),
    "product of the betas": (lambda *a: cosine_alpha_bar(*a, factors="betas"), "alpha_t = 1 - beta_t"),
    "returns the betas": (
        lambda T, s, m: torch.tensor([min(1 - b / a, m) for a, b in zip(_f(T, s), _f(T, s)[1:])]),
        "betas",
    ),
    "T + 1 values": (lambda T, s, m: torch.tensor(_f(T, s)) / _f(T, s)[0], "shape (T,)"),
}

# ---- 02 the DDIM step -----------------------------------------------------------------------------


def ddim_step(
    x_t, eps_pred, alpha_bar_t, alpha_bar_prev, eta, noise, clip_sample=False,
    *, root=True, ratio=True, subtract=True, std=True, clip=None, clip_eps=False, fresh=False,
):  # fmt: skip
    ab, ab_prev = alpha_bar_t, alpha_bar_prev
    sq = torch.sqrt if root else (lambda v: v)
    x0_pred = (x_t - sq(1 - ab) * eps_pred) / sq(ab)
    if clip_sample if clip is None else clip:
        x0_pred = x0_pred.clamp(-1, 1)
        if clip_eps:
            eps_pred = (x_t - ab.sqrt() * x0_pred) / (1 - ab).sqrt()
    variance = (1 - ab_prev) / (1 - ab) * ((1 - ab / ab_prev) if ratio else 1)
    sigma = eta * (variance.sqrt() if std else variance)
    x_prev = sq(ab_prev) * x0_pred + (1 - ab_prev - (sigma**2 if subtract else 0)).sqrt() * eps_pred
    return x_prev + sigma * (torch.randn_like(x_t) if fresh else noise)


DDIM_WRONG = {
    "alpha_bar for sqrt(alpha_bar)": (lambda *a: ddim_step(*a, root=False), "standard deviation"),
    "sigma without (1 - a_t / a_prev)": (lambda *a: ddim_step(*a, ratio=False), "1 - alpha_bar_t / alpha_bar_prev"),
    "direction without - sigma^2": (lambda *a: ddim_step(*a, subtract=False), "sigma_t^2"),
    "sigma as a variance": (lambda *a: ddim_step(*a, std=False), "standard deviation"),
    "alpha_bars swapped": (lambda x, e, ab, abp, *r: ddim_step(x, e, abp, ab, *r), "swapped"),
    "never clips": (lambda *a: ddim_step(*a, clip=False), "clip_sample"),
    "always clips": (lambda *a: ddim_step(*a, clip=True), "clip_sample"),
    "eps recomputed from the clipped x0": (lambda *a: ddim_step(*a, clip_eps=True), "eps_pred"),
    "no noise for eta > 0": (lambda x, e, ab, abp, eta, n, c: ddim_step(x, e, ab, abp, eta, 0 * n, c), "noise"),
    "fresh noise": (lambda *a: ddim_step(*a, fresh=True), "noise"),
    "eta ignored": (lambda x, e, ab, abp, eta, n, c: ddim_step(x, e, ab, abp, float(eta > 0), n, c), "eta"),
}

# ---- 03 the VAE's sample and KL -----------------------------------------------------------------------


def sample_and_kl(mean, logvar, eps, *, sigma=lambda lv: (0.5 * lv).exp(), half=0.5, reduce="batch mean", sign=1):
    z = mean + sigma(logvar) * eps
    per_entry = sign * half * (mean**2 + logvar.exp() - 1 - logvar)  # (B, C, H, W)
    per_image = per_entry.flatten(1).sum(1)  # (B,)
    kl = {
        "batch mean": per_image.mean(),
        "batch sum": per_image.sum(),
        "all mean": per_entry.mean(),
        "per image": per_image,
    }[reduce]
    return z, kl


VAE_WRONG = {
    "sigma = logvar": (lambda *a: sample_and_kl(*a, sigma=lambda lv: lv), "exp(logvar / 2)"),
    "sigma = exp(logvar)": (lambda *a: sample_and_kl(*a, sigma=torch.exp), "variance"),
    "no sigma": (lambda *a: sample_and_kl(*a, sigma=lambda lv: 1), "standard deviation"),
    "KL with the wrong sign": (lambda *a: sample_and_kl(*a, sign=-1), "sign"),
    "KL without 1/2": (lambda *a: sample_and_kl(*a, half=1.0), "1/2"),
    "KL summed over the batch": (lambda *a: sample_and_kl(*a, reduce="batch sum"), "average over the batch"),
    "KL averaged over every entry": (lambda *a: sample_and_kl(*a, reduce="all mean"), "sum over its latent"),
    "KL per image": (lambda *a: sample_and_kl(*a, reduce="per image"), "averaged over the batch"),
    "returns z only": (lambda m, lv, e: m + (0.5 * lv).exp() * e, "(z, kl)"),
}

# ---- 05 SDEdit's timesteps ------------------------------------------------------------------------------


def sdedit_timesteps(timesteps, strength, *, count=round, shift=0):
    n = len(timesteps)
    return timesteps[n - count(strength * n) + shift :]


SDEDIT_WRONG = {
    "strength inverted": (lambda ts, s: sdedit_timesteps(ts, 1 - s), "inverted"),
    "the first steps": (lambda ts, s: ts[: round(s * len(ts))], "last"),
    "timesteps[-kept:]": (lambda ts, s: ts[-round(s * len(ts)) :], "timesteps[-0:]"),
    "int, as diffusers": (lambda ts, s: sdedit_timesteps(ts, s, count=int), "round"),
    "ceil": (lambda ts, s: sdedit_timesteps(ts, s, count=math.ceil), "round"),
    "one step too few": (lambda ts, s: sdedit_timesteps(ts, s, shift=1), "off by one"),
    "the index, not the timesteps": (lambda ts, s: len(ts) - round(s * len(ts)), "torch.Tensor"),
}

RIGHT = [
    ("cosine_schedule", cosine_alpha_bar),
    ("ddim_step", ddim_step),
    ("vae_sample_and_kl", sample_and_kl),
    ("sdedit_timesteps", sdedit_timesteps),
]
WRONG = {"cosine_schedule": COSINE_WRONG, "ddim_step": DDIM_WRONG, "vae_sample_and_kl": VAE_WRONG}
WRONG["sdedit_timesteps"] = SDEDIT_WRONG
CATALOGUE = mutants(WRONG)


@right_answers(RIGHT)
def test_right_answers_pass(item, answer, capsys):
    assert_passes(item, answer, capsys)


@wrong_answers(CATALOGUE)
def test_wrong_answers_are_rejected_with_a_useful_hint(item, name, answer, keyword):
    assert_rejected(item, name, answer, keyword)
