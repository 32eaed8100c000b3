"""The generative models diffusion is compared with: a GAN and a VAE for 2-D points, on plain MLPs.

Two ways to learn a distribution p(x) from samples, each on an MLP of the size the toy diffusion
model uses (`sdedu.models.mlp.MLPDenoiser`); their training loops are in
`sdedu.training.baselines`, the comparison in `sdedu.compare`.

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

    GAN      z (B, latent_dim) ──generator MLP──► x (B, data_dim) ──discriminator MLP──► logit (B, 1)
    ToyVAE   x (B, data_dim) ──encoder MLP──► mean, logvar (B, latent_dim) ─sample─► z ──decoder MLP──► mu(z)
"""

from __future__ import annotations

import torch
from torch import nn

from sdedu._checks import check_int_range, check_tensor
from sdedu.models.vae import kl_divergence

__all__ = ["MLP", "GAN", "ToyVAE"]


class MLP(nn.Sequential):
    """in_dim -> [Linear, SiLU] x layers -> out_dim: (B, in_dim) -> (B, out_dim)."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 128, layers: int = 3):
        for name, value in (("in_dim", in_dim), ("out_dim", out_dim), ("hidden", hidden), ("layers", layers)):
            check_int_range(name, value, 1, 1_000_000)
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
        """n samples G(z), z ~ N(0, I): one network call. Returns (n, data_dim)."""
        z = torch.randn(n, self.latent_dim, generator=generator)
        return self.generator(z.to(next(self.parameters()).device))


class ToyVAE(nn.Module):
    """Encoder x -> (mean, logvar) of q(z|x); decoder z -> mu(z); one learned noise std sigma."""

    def __init__(self, data_dim: int = 2, latent_dim: int = 2, hidden: int = 128, layers: int = 3):
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = MLP(data_dim, 2 * latent_dim, hidden, layers)
        self.decoder = MLP(latent_dim, data_dim, hidden, layers)
        self.log_sigma = nn.Parameter(torch.tensor(-1.0))

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The negative ELBO per point (module docstring) of x (B, data_dim), averaged over the batch."""
        check_tensor("x", x, ndim=2, floating=True)
        # 1. q(z | x) and a reparameterised sample z = mean + std * eps.
        mean, logvar = self.encoder(x).chunk(2, dim=1)  # (B, latent_dim) each
        z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=generator)
        # 2. Gaussian reconstruction term with the learned sigma.
        sigma2 = torch.exp(2 * self.log_sigma)
        recon = ((x - self.decoder(z)) ** 2).sum(1) / (2 * sigma2) + x.shape[1] * self.log_sigma  # (B,)
        # 3. KL(q(z|x) || N(0, I)) in closed form, the same term as the image VAE's.
        return (recon + kl_divergence(mean, logvar)).mean()

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, with_noise: bool = True) -> torch.Tensor:
        """x = mu(z) + sigma * eps with z ~ N(0, I) (with_noise=False: the decoder means mu(z)). (n, data_dim)."""
        z = torch.randn(n, self.latent_dim, generator=generator)
        mean = self.decoder(z)
        if not with_noise:
            return mean
        return mean + torch.exp(self.log_sigma) * torch.randn(mean.shape, generator=generator)
