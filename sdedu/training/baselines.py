"""Training loops of the baselines diffusion is compared with (`sdedu.models.baselines`), and of the
2-D diffusion model with the same budget, for `sdedu.compare`.

Each takes a point cloud (N, D), runs `steps` optimiser steps on batches drawn with replacement
from `generator`, and returns the trained model in eval mode with the per-step losses:
- `train_gan`: one discriminator step, then one generator step (Goodfellow et al. 2014,
  Algorithm 1, with the non-saturating generator loss), Adam with beta1 = 0.5 as in DCGAN.
- `train_vae`: Adam on the negative ELBO, `ToyVAE.loss`.
- `train_diffusion`: the toy denoiser's own loop (`sdedu.training.toy.train_toy_denoiser`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from sdedu._checks import check_tensor
from sdedu.models.baselines import GAN, ToyVAE
from sdedu.models.mlp import MLPDenoiser
from sdedu.schedules import NoiseSchedule
from sdedu.training.toy import train_toy_denoiser

__all__ = ["train_gan", "train_vae", "train_diffusion"]


def train_gan(
    points: torch.Tensor,
    steps: int = 2000,
    batch_size: int = 256,
    lr: float = 1e-3,
    hidden: int = 128,
    layers: int = 3,
    generator: torch.Generator | None = None,
    progress: bool = True,
) -> tuple[GAN, list[float]]:
    """Alternate one discriminator and one generator step (Goodfellow et al. 2014, Algorithm 1,
    with the non-saturating generator loss). Adam with beta1 = 0.5 as in DCGAN (Radford et al. 2016).

    Returns:
        (GAN in eval mode, generator losses per step).
    """
    check_tensor("points", points, ndim=2, floating=True)
    gan = GAN(points.shape[1], 2, hidden, layers)
    opt_d = torch.optim.Adam(gan.discriminator.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(gan.generator.parameters(), lr=lr, betas=(0.5, 0.999))
    ones, zeros = torch.ones(batch_size, 1), torch.zeros(batch_size, 1)
    losses = []
    for _ in tqdm(range(steps), desc="training the GAN", disable=not progress):
        # 1. Discriminator: real -> 1, fake -> 0 (binary cross-entropy on logits).
        real = points[torch.randint(points.shape[0], (batch_size,), generator=generator)]
        fake = gan.generator(torch.randn(batch_size, gan.latent_dim, generator=generator))
        loss_d = F.binary_cross_entropy_with_logits(gan.discriminator(real), ones) + F.binary_cross_entropy_with_logits(
            gan.discriminator(fake.detach()), zeros
        )
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        # 2. Generator: make D say 1 on fakes (the non-saturating loss -log D(G(z))).
        loss_g = F.binary_cross_entropy_with_logits(gan.discriminator(fake), ones)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        losses.append(loss_g.item())
    return gan.eval(), losses


def train_vae(
    points: torch.Tensor,
    steps: int = 2000,
    batch_size: int = 256,
    lr: float = 1e-3,
    hidden: int = 128,
    layers: int = 3,
    generator: torch.Generator | None = None,
    progress: bool = True,
) -> tuple[ToyVAE, list[float]]:
    """Minimise the negative ELBO with Adam. Returns (ToyVAE in eval mode, losses per step)."""
    check_tensor("points", points, ndim=2, floating=True)
    vae = ToyVAE(points.shape[1], 2, hidden, layers)
    optimizer = torch.optim.Adam(vae.parameters(), lr=lr)
    losses = []
    for _ in tqdm(range(steps), desc="training the VAE", disable=not progress):
        x = points[torch.randint(points.shape[0], (batch_size,), generator=generator)]
        loss = vae.loss(x, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return vae.eval(), losses


def train_diffusion(
    points: torch.Tensor,
    steps: int = 2000,
    batch_size: int = 256,
    lr: float = 3e-3,
    generator: torch.Generator | None = None,
    progress: bool = True,
) -> tuple[MLPDenoiser, NoiseSchedule, list[float]]:
    """The course's 2-D diffusion model with a linear schedule, T = 1000: `train_toy_denoiser`, whose
    loss is `noise_prediction_loss` (Ho et al. 2020, Algorithm 1), with the baselines' defaults.

    Returns:
        (model, schedule, losses).
    """
    schedule = NoiseSchedule.linear()
    model, losses = train_toy_denoiser(
        points, schedule, steps=steps, batch_size=batch_size, lr=lr, generator=generator, progress=progress
    )
    return model, schedule, losses
