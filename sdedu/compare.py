"""Diffusion vs a GAN vs a VAE on the same 2-D data, and the distances that tell them apart.

Three ways to learn a distribution p(x) from samples, each given the same data, a similar
MLP and a similar budget of optimiser steps:

- **GAN** (Goodfellow et al. 2014): a generator G(z) and a discriminator D(x) play a game; G is
  trained to make D call its samples real (the "non-saturating" loss, section 3):
      L_D = -log D(x) - log(1 - D(G(z))),     L_G = -log D(G(z))
  Sharp samples, one network call each; but nothing rewards covering *every* mode, so G may
  drop some (mode collapse) and training can oscillate.
- **VAE** (Kingma & Welling 2014): an encoder q(z|x) and a decoder p(x|z) = N(mu(z), sigma^2 I)
  trained on the evidence lower bound
      L = E_q[ ||x - mu(z)||^2 / (2 sigma^2) + D log sigma ] + KL(q(z|x) || N(0, I))
  Covers every mode (every x must be reconstructed), but one Gaussian per z blurs: points land
  between the modes.
- **Diffusion** (Ho et al. 2020): the same MLP predicts noise at every level (`sdedu.training.toy`);
  sampling takes many network calls, but it covers the modes *and* keeps them sharp.

Distances between two point clouds X (n, D) and Y (m, D), none of which needs a density:
- `mmd_rbf`: squared maximum mean discrepancy with Gaussian kernels (Gretton et al. 2012),
      MMD^2 = mean k(x, x') + mean k(y, y') - 2 mean k(x, y),   k(a, b) = exp(-||a - b||^2 / (2 h^2))
  summed over a few bandwidths h (0 when the distributions are equal).
- `sliced_wasserstein`: project both clouds on random unit directions and average the 1-D
  Wasserstein-1 distances, which sorting computes exactly (Rabin et al. 2011; Bonneel et al. 2015).
- `frechet_distance`: FID's formula (Heusel et al. 2017) on any features: fit a Gaussian to each
  cloud and compare, ||mu_x - mu_y||^2 + Tr(S_x + S_y - 2 (S_x S_y)^(1/2)). Blind to everything
  but the first two moments: two clouds with equal means and covariances score 0.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from sdedu._checks import check_int_range, check_tensor, describe

__all__ = [
    "mmd_rbf",
    "sliced_wasserstein",
    "frechet_distance",
    "distances",
    "MLP",
    "GAN",
    "train_gan",
    "ToyVAE",
    "train_vae",
    "train_diffusion",
    "ModelResult",
    "compare_generative_models",
    "mode_coverage",
]


# ---- distances -------------------------------------------------------------------------------


def _check_clouds(x, y) -> tuple[torch.Tensor, torch.Tensor]:
    check_tensor("x", x, ndim=2, floating=True)
    check_tensor("y", y, ndim=2, floating=True)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same number of features; got {describe(x)} and {describe(y)}")
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError(f"x and y must hold at least 2 points each; got {describe(x)} and {describe(y)}")
    return x.detach().double(), y.detach().double()


def mmd_rbf(x: torch.Tensor, y: torch.Tensor, bandwidths=(0.1, 0.2, 0.5, 1.0, 2.0)) -> float:
    """Squared MMD between the clouds x (n, D) and y (m, D) with a sum of Gaussian kernels.

    The biased (V-statistic) estimate of Gretton et al. 2012, eq. 5: never negative, 0 for
    identical clouds, and small (of order 1/n) for two samples of the same distribution.
    """
    x, y = _check_clouds(x, y)
    xy = torch.cat([x, y])  # (n + m, D)
    sq = torch.cdist(xy, xy).pow(2)  # (n + m, n + m)
    kernel = sum(torch.exp(-sq / (2.0 * h * h)) for h in bandwidths)
    n = x.shape[0]
    k_xx, k_yy, k_xy = kernel[:n, :n].mean(), kernel[n:, n:].mean(), kernel[:n, n:].mean()
    return float(k_xx + k_yy - 2.0 * k_xy)


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, num_projections: int = 256, seed: int = 0) -> float:
    """Mean over random unit directions theta of W1(theta . x, theta . y).

    In 1-D the optimal transport pairs the sorted values, so W1 is the mean absolute difference
    of matching quantiles (computed at max(n, m) evenly spaced levels when n != m).
    """
    x, y = _check_clouds(x, y)
    check_int_range("num_projections", num_projections, 1, 100_000)
    generator = torch.Generator().manual_seed(seed)
    # 1. Random directions on the unit sphere.
    theta = torch.randn(x.shape[1], num_projections, generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)  # (D, P)
    # 2. Project and sort: each column is a 1-D distribution.
    px, py = (x @ theta).sort(dim=0).values, (y @ theta).sort(dim=0).values  # (n, P), (m, P)
    # 3. Compare quantiles at the same levels.
    k = max(px.shape[0], py.shape[0])
    levels = torch.linspace(0, 1, k, dtype=torch.float64)
    qx = torch.quantile(px, levels, dim=0) if px.shape[0] != k else px  # (k, P)
    qy = torch.quantile(py, levels, dim=0) if py.shape[0] != k else py
    return float((qx - qy).abs().mean())


def frechet_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """||mu_x - mu_y||^2 + Tr(S_x + S_y - 2 (S_x S_y)^(1/2)) of Gaussians fitted to x and y (FID's formula).

    The trace of the matrix square root is the sum of the square roots of the eigenvalues of
    S_x S_y (real and >= 0 for covariance matrices), so no matrix square root is formed.
    """
    x, y = _check_clouds(x, y)
    mu_x, mu_y = x.mean(0), y.mean(0)
    cov_x, cov_y = torch.cov(x.T).reshape(x.shape[1], -1), torch.cov(y.T).reshape(y.shape[1], -1)  # (D, D)
    eigenvalues = torch.linalg.eigvals(cov_x @ cov_y).real.clamp(min=0)
    return float((mu_x - mu_y).pow(2).sum() + torch.trace(cov_x) + torch.trace(cov_y) - 2 * eigenvalues.sqrt().sum())


def distances(x: torch.Tensor, y: torch.Tensor) -> dict:
    """All three distances between clouds x and y: {"mmd": ..., "sliced_w1": ..., "frechet": ...}."""
    return {"mmd": mmd_rbf(x, y), "sliced_w1": sliced_wasserstein(x, y), "frechet": frechet_distance(x, y)}


def mode_coverage(points: torch.Tensor, centres: torch.Tensor, radius: float) -> dict:
    """For mixtures: how many points sit within `radius` of each centre, and how many modes are hit.

    Args:
        points: (n, D) samples.
        centres: (K, D) the mixture's means.
        radius: a point counts for its nearest centre if it is closer than this.
    Returns:
        {"counts": [K ints], "modes_covered": modes with at least 1% of the points,
         "off_mode_fraction": the fraction of points near no centre}.
    """
    check_tensor("points", points, ndim=2, floating=True)
    check_tensor("centres", centres, ndim=2, floating=True)
    d = torch.cdist(points.double(), centres.double())  # (n, K)
    nearest, index = d.min(dim=1)
    on_mode = nearest < radius
    counts = torch.bincount(index[on_mode], minlength=centres.shape[0])
    return {
        "counts": counts.tolist(),
        "modes_covered": int((counts >= max(1, 0.01 * points.shape[0])).sum()),
        "off_mode_fraction": float(1.0 - on_mode.float().mean()),
    }


# ---- the models ------------------------------------------------------------------------------


class MLP(nn.Sequential):
    """in_dim -> [Linear, SiLU] x layers -> out_dim."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 128, layers: int = 3):
        parts, width = [], in_dim
        for _ in range(layers):
            parts += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        super().__init__(*parts, nn.Linear(width, out_dim))


class GAN(nn.Module):
    """A generator G: z (B, latent_dim) ~ N(0, I) -> x (B, data_dim), and a discriminator D: x -> logit."""

    def __init__(self, data_dim: int = 2, latent_dim: int = 2, hidden: int = 128, layers: int = 3):
        super().__init__()
        self.latent_dim = latent_dim
        self.generator = MLP(latent_dim, data_dim, hidden, layers)
        self.discriminator = MLP(data_dim, 1, hidden, layers)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n samples G(z), z ~ N(0, I): one network call."""
        z = torch.randn(n, self.latent_dim, generator=generator)
        return self.generator(z.to(next(self.parameters()).device))


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
        fake = gan.generator(torch.randn(batch_size, 2, generator=generator))
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


class ToyVAE(nn.Module):
    """Encoder x -> (mean, logvar) of q(z|x); decoder z -> mu(z); one learned noise std sigma."""

    def __init__(self, data_dim: int = 2, latent_dim: int = 2, hidden: int = 128, layers: int = 3):
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = MLP(data_dim, 2 * latent_dim, hidden, layers)
        self.decoder = MLP(latent_dim, data_dim, hidden, layers)
        self.log_sigma = nn.Parameter(torch.tensor(-1.0))

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The negative ELBO per point (module docstring), averaged over the batch."""
        # 1. q(z | x) and a reparameterised sample z = mean + std * eps.
        mean, logvar = self.encoder(x).chunk(2, dim=1)  # (B, latent) each
        z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=generator)
        # 2. Gaussian reconstruction term with the learned sigma.
        sigma2 = torch.exp(2 * self.log_sigma)
        recon = ((x - self.decoder(z)) ** 2).sum(1) / (2 * sigma2) + x.shape[1] * self.log_sigma
        # 3. KL(q(z|x) || N(0, I)) in closed form.
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)
        return (recon + kl).mean()

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, with_noise: bool = True) -> torch.Tensor:
        """x = mu(z) + sigma * eps with z ~ N(0, I) (with_noise=False: the decoder means mu(z))."""
        z = torch.randn(n, self.latent_dim, generator=generator)
        mean = self.decoder(z)
        if not with_noise:
            return mean
        return mean + torch.exp(self.log_sigma) * torch.randn(mean.shape, generator=generator)


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
):
    """The course's 2-D diffusion model (`sdedu.training.toy`) with a linear schedule, T = 1000.

    Returns:
        (model, schedule, losses).
    """
    from sdedu.schedules import NoiseSchedule
    from sdedu.training.toy import train_toy_denoiser

    schedule = NoiseSchedule.linear()
    model, losses = train_toy_denoiser(
        points, schedule, steps=steps, batch_size=batch_size, lr=lr, generator=generator, progress=progress
    )
    return model, schedule, losses


# ---- the comparison --------------------------------------------------------------------------


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
    from sdedu.samplers import DDPMSampler
    from sdedu.training.toy import sample_toy

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
