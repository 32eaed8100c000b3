"""A tiny KL-regularised autoencoder: the "latent" in latent diffusion (Rombach et al. 2022).

Diffusion in pixel space spends most of its compute on detail the eye barely sees. Stable
Diffusion first trains an autoencoder that compresses an image 8x per side (512x512x3 ->
64x64x4), then runs diffusion on the latents. Here: 32x32x3 -> 8x8x4 (4x per side, 12x fewer
numbers); notebook 08 (section 7) measures how much cheaper that makes one UNet training step.

Encoder  x (B, 3, 32, 32) in [0, 1] -> mean, logvar (B, 4, 8, 8): a diagonal Gaussian q(z | x)
Decoder  z (B, 4, 8, 8) -> x_hat (B, 3, 32, 32), approximately in [0, 1]

Training loss per image of this VAE (Kingma & Welling 2014, with a small KL weight as in LDM, section 3.1):
    L = mean_pixels (x - x_hat)^2 + kl_weight * KL(q(z|x) || N(0, I)) / num_pixels
    KL = 0.5 * sum(mean^2 + exp(logvar) - 1 - logvar)
    z = mean + exp(logvar / 2) * eps,  eps ~ N(0, I)          (reparameterisation)
The KL term is tiny: it only keeps the latent space from drifting to huge or degenerate values;
reconstruction quality is what matters. This is not Stable Diffusion's full autoencoder loss:
LDM (Rombach et al. 2022, section 3.1 and Appendix G) reconstructs with L1 plus a perceptual
(LPIPS) loss and adds a patch-based GAN discriminator's adversarial loss, which keep natural
images sharp; the shapes world has no texture to lose, so neither is used here. Plain L1 alone
is a poor choice on the shapes world: most pixels are black, and L1's optimum for an uncertain
pixel is its median, black, so small shapes fade. `reconstruction="mse"` is the default for
that reason (`reconstruction="l1"` is kept to compare).

Latent scale factor: the diffusion model expects data of roughly unit variance, so Stable
Diffusion multiplied latents by a constant 1 / std(z) measured once over training data (0.18215
for SD v1). `compute_scale_factor(images)` does the same and stores it in the `scale_factor`
buffer, saved with the weights. The pipeline diffuses `z * scale_factor` and decodes
`vae.decode(z / scale_factor)`, as diffusers does with `vae.config.scaling_factor`.

Internally images are mapped to [-1, 1] (x * 2 - 1) as in Stable Diffusion; `decode` maps back.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sdedu._checks import check_tensor, describe
from sdedu.diffusion import randn_like
from sdedu.nn.blocks import Downsample, ResBlock, Upsample

__all__ = ["VAE", "Decoder", "Encoder", "VAEConfig", "kl_divergence"]


@dataclass
class VAEConfig:
    """Sizes of the tiny VAE.

    channels: feature channels at 32x32, 16x16 and 8x8 (two downsamplings: 32 -> 8).
    latent_channels: channels of z (4, as in Stable Diffusion).
    norm_groups: GroupNorm groups (must divide every channel count).
    kl_weight: weight of the KL term in `loss` (LDM used 1e-6 with a sum-over-pixels loss).
    reconstruction: "mse" or "l1", the per-pixel reconstruction error (see the module docstring).
    """

    in_channels: int = 3
    latent_channels: int = 4
    channels: tuple = (16, 32, 64)
    norm_groups: int = 8
    kl_weight: float = 1e-4
    reconstruction: str = "mse"

    def __post_init__(self):
        self.channels = tuple(int(c) for c in self.channels)
        if len(self.channels) != 3:
            raise ValueError(f"channels must give 3 levels (32x32, 16x16, 8x8); got {self.channels!r}")
        if self.reconstruction not in ("l1", "mse"):
            raise ValueError(f"reconstruction must be 'l1' or 'mse'; got {self.reconstruction!r}")


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) per example, summed over the latent: (B,).

    KL = 0.5 * sum(mean^2 + exp(logvar) - 1 - logvar)   (Kingma & Welling 2014, appendix B)
    """
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(dim=1)


class Encoder(nn.Module):
    """(B, 3, 32, 32) in [-1, 1] -> (B, 2 * latent_channels, 8, 8): mean and logvar stacked."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        c0, c1, c2 = config.channels
        g = config.norm_groups
        self.conv_in = nn.Conv2d(config.in_channels, c0, 3, padding=1)
        self.block0 = ResBlock(c0, c0, norm_groups=g)  # 32x32
        self.down0 = Downsample(c0)
        self.block1 = ResBlock(c0, c1, norm_groups=g)  # 16x16
        self.down1 = Downsample(c1)
        self.block2 = ResBlock(c1, c2, norm_groups=g)  # 8x8
        self.mid = ResBlock(c2, c2, norm_groups=g)
        self.norm_out = nn.GroupNorm(g, c2)
        self.conv_out = nn.Conv2d(c2, 2 * config.latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block0(self.conv_in(x))  # (B, c0, 32, 32)
        h = self.block1(self.down0(h))  # (B, c1, 16, 16)
        h = self.mid(self.block2(self.down1(h)))  # (B, c2, 8, 8)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, 2 * latent_channels, 8, 8)


class Decoder(nn.Module):
    """(B, latent_channels, 8, 8) -> (B, 3, 32, 32) in about [-1, 1]; mirrors the encoder."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        c0, c1, c2 = config.channels
        g = config.norm_groups
        self.conv_in = nn.Conv2d(config.latent_channels, c2, 3, padding=1)
        self.mid = ResBlock(c2, c2, norm_groups=g)
        self.block2 = ResBlock(c2, c1, norm_groups=g)  # 8x8
        self.up1 = Upsample(c1)
        self.block1 = ResBlock(c1, c0, norm_groups=g)  # 16x16
        self.up0 = Upsample(c0)
        self.block0 = ResBlock(c0, c0, norm_groups=g)  # 32x32
        self.norm_out = nn.GroupNorm(g, c0)
        self.conv_out = nn.Conv2d(c0, config.in_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.block2(self.mid(self.conv_in(z)))  # (B, c1, 8, 8)
        h = self.block1(self.up1(h))  # (B, c0, 16, 16)
        h = self.block0(self.up0(h))  # (B, c0, 32, 32)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, 3, 32, 32)


class VAE(nn.Module):
    """The tiny KL autoencoder of sdedu: 32x32x3 images <-> 8x8x4 latents.

    Args:
        config: `VAEConfig`.

    Attributes:
        scale_factor: buffer, 1 / std of latents over training data (1.0 until
            `compute_scale_factor` runs); scaled latents `z * scale_factor` have unit variance.
    """

    def __init__(self, config: VAEConfig | None = None):
        super().__init__()
        self.config = config or VAEConfig()
        self.encoder = Encoder(self.config)
        self.decoder = Decoder(self.config)
        self.register_buffer("scale_factor", torch.tensor(1.0))

    def _check_images(self, images):
        check_tensor("images", images, ndim=4, floating=True)
        expected = (self.config.in_channels, 32, 32)
        if tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"images must have shape (B, {', '.join(map(str, expected))}) in [0, 1]; got {describe(images)}"
            )

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z | x): images (B, 3, 32, 32) in [0, 1] -> mean, logvar, each (B, 4, 8, 8).

        The latents are unscaled: multiply a sample by `scale_factor` before diffusing.
        """
        self._check_images(images)
        # 1. To Stable Diffusion's [-1, 1] range, then the convolutional encoder.
        moments = self.encoder(images * 2.0 - 1.0)  # (B, 2 * latent_channels, 8, 8)
        # 2. Split into the Gaussian's mean and log-variance (clamped as in LDM for stability).
        mean, logvar = moments.chunk(2, dim=1)  # (B, latent_channels, 8, 8) each
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Unscaled latents z (B, 4, 8, 8) -> images (B, 3, 32, 32), approximately in [0, 1]."""
        check_tensor("z", z, ndim=4, floating=True)
        if tuple(z.shape[1:]) != (self.config.latent_channels, 8, 8):
            raise ValueError(f"z must have shape (B, {self.config.latent_channels}, 8, 8); got {describe(z)}")
        return (self.decoder(z) + 1.0) / 2.0  # back from [-1, 1]

    @staticmethod
    def sample_latent(
        mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """z = mean + exp(logvar / 2) * eps, eps ~ N(0, I): the reparameterisation trick.

        eps is drawn on the generator's device (`sdedu.diffusion.randn_like`), so a CPU generator
        gives the same latents on any device.
        """
        eps = randn_like(mean, generator)
        return mean + torch.exp(0.5 * logvar) * eps

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None):
        """Encode, sample z, decode: returns (reconstruction, mean, logvar)."""
        mean, logvar = self.encode(images)
        z = self.sample_latent(mean, logvar, generator)
        return self.decode(z), mean, logvar

    def loss(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean squared reconstruction error plus the (small) KL term, averaged over the batch."""
        # 1. Reconstruct through a sampled latent.
        recon, mean, logvar = self(images, generator)
        # 2. Per-pixel reconstruction error and per-pixel share of the KL.
        if self.config.reconstruction == "l1":
            error = F.l1_loss(recon, images)
        else:
            error = F.mse_loss(recon, images)
        kl = kl_divergence(mean, logvar).mean() / images[0].numel()
        return error + self.config.kl_weight * kl

    @torch.no_grad()
    def compute_scale_factor(self, images: torch.Tensor, generator: torch.Generator | None = None) -> float:
        """Set `scale_factor` = 1 / std(z) over sampled latents of `images` (as for SD v1).

        Args:
            images: (N, 3, 32, 32) training images in [0, 1] (a few thousand are plenty).
        Returns:
            the new scale factor as a float.
        """
        mean, logvar = self.encode(images)
        z = self.sample_latent(mean, logvar, generator)
        self.scale_factor.fill_(1.0 / z.float().std().item())
        return float(self.scale_factor)
