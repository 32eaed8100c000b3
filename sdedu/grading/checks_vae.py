"""Check for exercise 03's fourth item: the VAE's reparameterised sample and its KL to N(0, I).

The right answer is the library's: `VAE.sample_latent(mean, logvar, generator)` for z (the noise
eps handed to the learner is what that generator draws) and `kl_divergence(mean, logvar).mean()`
for the KL term of `VAE.loss` before its per-pixel scaling (Kingma & Welling 2014, section 2.4
and appendix B):

    z  = mean + exp(logvar / 2) * eps,   eps ~ N(0, I)
    KL = 0.5 * sum over the latent's entries of (mean^2 + exp(logvar) - 1 - logvar), averaged over the batch

The cases have latents of the tiny VAE's shape and others, log-variances of both signs (where
sigma = logvar, exp(logvar) or a missing 1/2 all differ), and batch sizes above 2 (where a sum
over the batch differs from its mean and from twice it). The known wrong versions are written below.
"""

from __future__ import annotations

import torch

from sdedu.diffusion import randn_like
from sdedu.grading.errors import describe, fail
from sdedu.grading.expect import expect_tensor
from sdedu.grading.registry import register
from sdedu.grading.trial import Trial
from sdedu.models.vae import VAE, kl_divergence

ITEM = "vae_sample_and_kl"


def z_mistakes(mean, logvar, eps):
    """Known wrong versions of z on one case: [(make_result, hint), ...]."""
    return [
        (lambda: mean + logvar * eps, "logvar is log(sigma^2), not sigma: sigma = exp(logvar / 2)."),
        (
            lambda: mean + logvar.exp() * eps,
            "exp(logvar) is the variance sigma^2; scale eps by sigma = exp(logvar / 2).",
        ),
        (lambda: mean + logvar.sqrt() * eps, "logvar is log(sigma^2), not sigma^2: sigma = exp(logvar / 2)."),
        (lambda: mean + eps, "eps must be scaled by the standard deviation sigma = exp(logvar / 2)."),
        (lambda: mean.clone(), "z is a sample: add the scaled noise exp(logvar / 2) * eps to the mean."),
        (lambda: logvar.mul(0.5).exp() * eps, "z = mean + sigma * eps: the mean is missing."),
    ]


def _kl_terms(mean, logvar):
    return mean.pow(2) + logvar.exp() - 1 - logvar  # (B, C, H, W)


def kl_mistakes(mean, logvar):
    """Known wrong versions of the KL on one case: [(make_result, hint), ...]."""
    per_image = kl_divergence(mean, logvar)  # (B,)
    return [
        (lambda: -per_image.mean(), "the sign is wrong: a KL divergence is never negative (0 only for N(0, I))."),
        (lambda: 2 * per_image.mean(), "the factor 1/2 is missing: KL = 0.5 * sum(mean^2 + exp(logvar) - 1 - logvar)."),
        (
            lambda: per_image.sum(),
            "the KL is summed over the batch: sum over each image's latent entries, then average over the batch.",
        ),
        (
            lambda: 0.5 * _kl_terms(mean, logvar).mean(),
            "this averages over every latent entry: the KL of an image is a sum over its latent entries "
            "(they are independent dimensions of one Gaussian); only the batch is averaged.",
        ),
        (
            lambda: 0.5 * (mean.pow(2) + logvar.mul(0.5).exp() - 1 - logvar).flatten(1).sum(1).mean(),
            "the KL uses the variance sigma^2 = exp(logvar), not the standard deviation exp(logvar / 2).",
        ),
        (
            lambda: 0.5 * (mean.pow(2) + logvar.exp() - logvar).flatten(1).sum(1).mean(),
            "the - 1 inside the sum is missing: KL(N(0, I) || N(0, I)) must be 0.",
        ),
        (
            lambda: 0.5 * (mean.pow(2) + logvar.exp() - 1 + logvar).flatten(1).sum(1).mean(),
            "the sign of logvar: KL = 0.5 * sum(mean^2 + exp(logvar) - 1 - logvar).",
        ),
    ]


def _cases(trial: Trial):
    g = trial.generator(4)
    specs = [
        ("a batch of 3 latents of the tiny VAE's shape", (3, 4, 8, 8)),
        ("a batch of 5 small latents", (5, 4, 2, 2)),
        ("a batch of 4 latents with one channel", (4, 1, 3, 5)),
    ]
    for k, (what, shape) in enumerate(specs, start=1):
        mean = torch.randn(shape, generator=g)
        logvar = torch.rand(shape, generator=g) * 4 - 3  # in [-3, 1]: sigma from 0.22 to 1.65
        seed = int(torch.randint(0, 2**31 - 1, (), generator=g))
        yield f"{k} ({what} {shape})", mean, logvar, seed


@register(
    ITEM,
    "sample_and_kl(mean, logvar, eps) -> (z, kl): the reparameterised latent and its KL to N(0, I)",
    "03_unet_parts",
)
def check_vae_sample_and_kl(sample_and_kl, trial: Trial) -> str:
    count = 0
    for case, mean, logvar, seed in _cases(trial):
        with trial.case(case):
            eps = randn_like(mean, torch.Generator().manual_seed(seed))  # what sample_latent draws
            args = [("mean", mean), ("logvar", logvar), ("eps", eps)]
            out = trial.call(ITEM, sample_and_kl, args, case=case, name="sample_and_kl")
            if not (isinstance(out, tuple) and len(out) == 2):
                fail(ITEM, case, f"sample_and_kl should return a pair (z, kl); got {describe(out)}.", "return z, kl")
            z, kl = out
            expect_tensor(
                ITEM,
                case,
                z,
                VAE.sample_latent(mean, logvar, torch.Generator().manual_seed(seed)),
                name="z",
                mistakes=z_mistakes(mean, logvar, eps),
                default_hint="z = mean + sigma * eps with sigma = exp(logvar / 2) (Kingma & Welling 2014, section 2.4).",
            )
            expect_tensor(
                ITEM,
                case,
                kl,
                kl_divergence(mean, logvar).mean(),
                name="kl",
                mistakes=kl_mistakes(mean, logvar),
                shape_hint="kl is one number (a 0-dimensional tensor): the per-image KL (a sum over the latent's "
                "entries) averaged over the batch.",
                default_hint="KL = 0.5 * sum(mean^2 + exp(logvar) - 1 - logvar) over each image's latent "
                "(Kingma & Welling 2014, appendix B), then the mean over the batch.",
            )
            count += 1
    return f"{count} cases"
