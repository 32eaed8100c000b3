"""Diffusion vs a GAN vs a VAE on the same 2-D data, scored with the same distances.

`compare_generative_models` gives each model (`sdedu.models.baselines`: GAN, ToyVAE;
`sdedu.models.mlp.MLPDenoiser` for diffusion, Ho et al. 2020) an MLP of the same size, the same
training points and the same number of optimiser steps (`sdedu.training.baselines`), then scores
their samples against held-out points with `sdedu.metrics.distances` (MMD, sliced Wasserstein,
Fréchet distance). Diffusion pays for covering every mode sharply with many network calls per
sample; the GAN and the VAE take one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from sdedu._checks import check_int_range, check_tensor
from sdedu.metrics import distances
from sdedu.samplers import DDPMSampler
from sdedu.training.baselines import train_diffusion, train_gan, train_vae
from sdedu.training.toy import sample_toy

__all__ = ["ModelResult", "compare_generative_models"]


@dataclass
class ModelResult:
    """One model's samples and scores in `compare_generative_models`."""

    name: str
    samples: torch.Tensor
    train_seconds: float
    sample_seconds: float
    network_calls: int
    distances: dict = field(default_factory=dict)
    losses: list = field(default_factory=list)
    model: object = None  # the trained GAN, ToyVAE or MLPDenoiser
    schedule: object = None  # the diffusion model's NoiseSchedule (None for the others)


def compare_generative_models(
    points: torch.Tensor,
    steps: int = 2000,
    n_samples: int | None = None,
    diffusion_steps: int = 100,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Train a GAN, a VAE and a diffusion model on `points` and score their samples.

    Every model gets `steps` optimiser steps on batches of 256 of the same points. The distances
    are measured against a *fresh* sample of reference points, passed in as the second half of
    `points` (the first half trains): this keeps memorising the training points from looking good.

    Args:
        points: (N, 2) data; the first N // 2 train, the last N // 2 are the reference.
        steps: optimiser steps per model.
        n_samples: samples drawn from each model (default N // 2, the reference's size, so that
            every distance has the same small-sample bias as the baseline).
        diffusion_steps: DDPM steps when sampling the diffusion model.
        seed: seeds training and sampling.
        progress: show progress bars.
    Returns:
        {"reference": (N // 2, 2) points, "baseline": distances between the two halves of the
         data (the floor a perfect model reaches), "results": {name: ModelResult}}.
    """
    check_tensor("points", points, ndim=2, floating=True)
    check_int_range("steps", steps, 1, 10_000_000)
    check_int_range("diffusion_steps", diffusion_steps, 1, 1000)
    half = points.shape[0] // 2
    n_samples = half if n_samples is None else check_int_range("n_samples", n_samples, 2, 10_000_000)
    train_points, reference = points[:half], points[half:]
    results = {}

    def timed(fn):
        start = time.perf_counter()
        out = fn()
        return out, time.perf_counter() - start

    def seeded(offset=0):
        return torch.Generator().manual_seed(seed + offset)

    # 1. GAN and VAE: train, then one network call per sample.
    (gan, gan_losses), t_gan = timed(lambda: train_gan(train_points, steps, generator=seeded(), progress=progress))
    samples, s_gan = timed(lambda: gan.sample(n_samples, seeded(1)))
    results["GAN"] = ModelResult("GAN", samples, t_gan, s_gan, 1, losses=gan_losses, model=gan)
    (vae, vae_losses), t_vae = timed(lambda: train_vae(train_points, steps, generator=seeded(), progress=progress))
    samples, s_vae = timed(lambda: vae.sample(n_samples, seeded(1)))
    results["VAE"] = ModelResult("VAE", samples, t_vae, s_vae, 1, losses=vae_losses, model=vae)
    # 2. Diffusion: train, then `diffusion_steps` network calls per sample (DDPM, respaced).
    (model, schedule, diff_losses), t_diff = timed(
        lambda: train_diffusion(train_points, steps, generator=seeded(), progress=progress)
    )
    sampler = DDPMSampler(schedule)
    sampler.set_timesteps(int(diffusion_steps))
    samples, s_diff = timed(lambda: sample_toy(model, sampler, n_samples, generator=seeded(1)))
    results["diffusion"] = ModelResult(
        "diffusion", samples, t_diff, s_diff, int(diffusion_steps), losses=diff_losses, model=model, schedule=schedule
    )
    # 3. Every model's samples against the held-out half of the data.
    for result in results.values():
        result.distances = distances(result.samples, reference)
    return {"reference": reference, "baseline": distances(train_points, reference), "results": results}
