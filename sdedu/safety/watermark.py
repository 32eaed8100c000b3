"""Tree-Ring watermarks (Wen et al. 2023, "Tree-Ring Watermarks: Fingerprints for Diffusion Images
that are Invisible and Robust"): a key written into the initial noise, found again by DDIM inversion.

Writing (their section 3.2, eq. 2): the key lives in the centred 2-D Fourier transform of one channel
of the initial latent z_T,

    Z = fftshift(fft2(z_T[c]))                         (8, 8) complex, the zero frequency at (4, 4)
    Z[M] = K[M]                                        M: the key's rings, K: one real value per ring
    z_T[c] = ifft2(ifftshift(Z))                       real, since K is constant on rings (see below)

"Tree-Ring_Rings" (section 3.3): K is constant on each ring |f| in (j - 1, j], j = 0..radius (ring 0: the zero
frequency), so the key survives rotations, and being real and even (K(-f) = K(f)) it keeps z_T real.
The transform is orthonormal (norm="ortho"), so the Fourier coefficients of white N(0, 1) noise are
N(0, 1) too (complex) and the key values are drawn N(0, 1), as the coefficients they replace. The
rest of z_T is the seeded noise.

Detecting (their section 3.4, eqs. 4-6): invert the image to z_T' with DDIM and the empty prompt (the detector
does not know the prompt; section 4.1), take Y = fftshift(fft2(z_T'[c])) and test H0 "no key": the coefficients
of unwatermarked noise are complex Gaussian, y ~ N(0, sigma^2), so

    sigma^2 = 1/|M| sum_{i in M} |y_i|^2
    eta     = 1/sigma^2 sum_{i in M} |k_i - y_i|^2       (the statistic: `watermark_statistic`)
    lambda  = 1/sigma^2 sum_{i in M} |k_i|^2
    p       = P(chi^2_{|M|}(lambda) <= eta)              noncentral chi-squared, |M| degrees of freedom

a small eta (y close to the key) gives a small p. |M| degrees of freedom although y is complex: M is
symmetric about the centre and y_{-f} = conj(y_f) for a real z, so M holds (|M| - 1) / 2 independent
complex coefficients, 2 real numbers each of variance sigma^2 / 2, counted twice in eta, and the real
zero frequency, 1 number of variance sigma^2: |M| in all.

Choices for the tiny model (measured on the shipped weights; `python -m sdedu.bench --sections safety`):
- radius 3: the largest disc inside the 8x8 spectrum (|M| = 29 of 64 coefficients), as the inverted
  noise keeps little of each coefficient (below), so the test needs as many as it can get;
- channel 0: of the four, the one whose key the detector found best (on 24 + 24 images, the median
  score -log10 p of marked minus clean images: channel 0 +0.32, 1 +0.15, 2 +0.25, 3 -0.02; Tree-Ring's
  own choice for SD, the last channel (`--w_channel 3` in their code's scripts/tree_ring.sh), did worst here);
- 10 inversion steps: 10, 25 and 50 steps recover z_T from images equally badly (correlation of
  z_T with the inverted noise 0.04-0.12 per channel, 24 images), so the cheapest.

What limits it here: the VAE round trip. DDIM inversion of the generated latent z_0 itself gives back
noise correlated 0.77-0.89 with z_T (25 steps, prompt unknown, guidance 1), but z_0 -> image -> encoder mean
changes z_0 by about 9% of its norm (correlation 0.995), and inversion, which undoes the sampler's strong
contraction of z_T (z_0 is correlated only ~0.1-0.26 with z_T), amplifies that to noise correlated ~0.06-0.1
with z_T. White noise of the same size costs far less: the encoder's error is structured, like a change of
content, which the model responds to (`sdedu.safety.watermark_curves` measures both curves). Neither leaving
the decoder's output unclamped nor fitting z_0 to the image by gradient descent on the decoder (the decoder
inversion of Hong et al. 2024, "On Exact Inversion of DPM-Solvers") helped; nor (session 9, 50 + 50 images, TPR
at 1% FPR from images 0.02-0.10 for each) inverting with the image's own prompt (guidance 1 or 2), a key on
rings up to radius 1 or 2, keys in all four channels, or stopping the inversion part-way and matching the key's
average trace at that level (the mean
spectrum of 50 marked minus 50 clean trajectories; 1.00 on the true trajectories from level 10 of 25 on, 0.02-0.04
from images). Tree-Ring needs the image to carry z_T's detail; a shapes-world image is nearly a
function of its prompt's four attributes.

A stronger key is found, at the price of the content: `strength` scales the key's values (N(0, strength^2));
on 200 + 200 images, TPR at 1% FPR from images / the judge's adherence: strength 1 0.025 / 1.000, 2 0.105 /
0.975, 3 0.940 / 0.525, 4 1.000 / 0.000 (`sdedu.safety.watermark_curves.strength_tradeoff`). Tree-Ring's key is
strength 1: in distribution, invisible, and here not found; the default stays 1, as no strength gives both.
"""

from __future__ import annotations

import math

import torch

from sdedu._checks import check_int_range, check_number_range, check_tensor, describe

__all__ = [
    "CHANNEL",
    "INVERSION_STEPS",
    "RADIUS",
    "WatermarkKey",
    "detect_watermark",
    "fourier",
    "inverse_fourier",
    "noncentral_chi2_logcdf",
    "ring_index",
    "detect_in_noise",
    "watermark_statistic",
]

CHANNEL = 0  # the latent channel holding the key (measured: see the module docstring)
RADIUS = 3  # rings j = 0..RADIUS around the zero frequency; on an 8x8 latent, 29 coefficients
INVERSION_STEPS = 10  # DDIM steps of the detector's inversion (measured: more steps found the key no better)


def fourier(z: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2-D Fourier transform over the last two axes: (..., h, w) real -> complex."""
    return torch.fft.fftshift(torch.fft.fft2(z, norm="ortho"), dim=(-2, -1))


def inverse_fourier(spectrum: torch.Tensor) -> torch.Tensor:
    """The inverse of `fourier`, real part: (..., h, w) complex -> real."""
    return torch.fft.ifft2(torch.fft.ifftshift(spectrum, dim=(-2, -1)), norm="ortho").real


def ring_index(size: int) -> torch.Tensor:
    """(size, size) int64: the ring j of each centred frequency, |f| in (j - 1, j] (0 at the zero frequency)."""
    f = torch.arange(size, dtype=torch.float64) - size // 2
    distance = (f[:, None] ** 2 + f[None, :] ** 2).sqrt()
    return distance.ceil().long()


class WatermarkKey:
    """A Tree-Ring key: one real N(0, 1) value per ring, written into channel `channel` of z_T's spectrum.

    Args:
        seed: the key's seed (the key is a secret: whoever knows it can detect and forge the mark).
        latent_shape: (C, h, w) of the pipeline's latents, `pipe.latent_shape`, (4, 8, 8) shipped.
        channel: the latent channel holding the key.
        radius: the rings j = 0..radius, 1 <= radius < min(h, w) / 2 (the rings stay inside the spectrum).
        strength: the key's values are N(0, strength^2); 1 (Tree-Ring's): like the coefficients they replace.
    Attributes:
        mask: (h, w) bool, the key's region M.  pattern: (h, w) complex, K on M and 0 elsewhere.
    """

    def __init__(
        self, seed: int = 0, latent_shape=(4, 8, 8), channel: int = CHANNEL, radius: int = RADIUS, strength: float = 1.0
    ):
        check_int_range("seed", seed, 0, 2**63 - 1)
        shape = tuple(latent_shape) if isinstance(latent_shape, (tuple, list)) else None
        if shape is None or len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape):
            raise ValueError(f"latent_shape must be (C, h, w) of positive ints; got {describe(latent_shape)}")
        if shape[1] != shape[2]:
            raise ValueError(f"latent_shape must be square (h == w); got {shape}")
        self.seed, self.latent_shape = seed, shape
        self.channel = check_int_range("channel", channel, 0, shape[0] - 1)
        self.radius = check_int_range("radius", radius, 1, (shape[1] - 1) // 2)
        rings = ring_index(shape[1])  # (h, w)
        self.strength = check_number_range("strength", strength, 1e-6)
        values = self.strength * torch.randn(self.radius + 1, generator=torch.Generator().manual_seed(seed))  # rings
        self.mask = rings <= self.radius  # (h, w): the disc |f| <= radius, the zero frequency included
        pattern = torch.zeros(shape[1:], dtype=torch.complex64)
        pattern[self.mask] = values[rings[self.mask]].to(torch.complex64)
        self.pattern = pattern

    def check_latents(self, name: str, z) -> torch.Tensor:
        """Require latents (B, C, h, w) of this key's latent shape."""
        check_tensor(name, z, ndim=4, floating=True)
        if tuple(z.shape[1:]) != self.latent_shape:
            raise ValueError(
                f"{name} must be latents (B, {', '.join(map(str, self.latent_shape))}), the shape this key was made"
                f" for (WatermarkKey(latent_shape=...)); got {describe(z)}"
            )
        return z

    def apply(self, z: torch.Tensor) -> torch.Tensor:
        """z_T (B, C, h, w) -> z_T with the key in channel `channel`'s centred spectrum (a new tensor)."""
        z = self.check_latents("z", z)
        spectrum = fourier(z[:, self.channel].double())  # (B, h, w)
        spectrum[:, self.mask.to(z.device)] = self.pattern[self.mask].to(spectrum)
        out = z.clone()
        out[:, self.channel] = inverse_fourier(spectrum).to(z.dtype)
        return out

    def __repr__(self) -> str:
        strength = "" if self.strength == 1 else f", strength={self.strength:g}"
        return (
            f"WatermarkKey(seed={self.seed}, latent_shape={self.latent_shape}, channel={self.channel}, "
            f"radius={self.radius}{strength}, |M|={int(self.mask.sum())})"
        )


def watermark_statistic(z_T: torch.Tensor, key: WatermarkKey) -> tuple[torch.Tensor, torch.Tensor]:
    """Tree-Ring's test statistic eta and the noncentrality lambda of its null law (module docstring).

    Args:
        z_T: (B, C, h, w) inverted noise.
        key: the WatermarkKey to test for.
    Returns:
        eta (B,) and lambda (B,), float64: under H0, eta ~ chi^2_{|M|}(lambda); small eta means the key is there.
    """
    z_T = key.check_latents("z_T", z_T)
    y = fourier(z_T[:, key.channel].double())[:, key.mask.to(z_T.device)]  # (B, |M|) complex
    k = key.pattern[key.mask].to(y)  # (|M|,)
    sigma2 = (y.abs() ** 2).mean(dim=1)  # (B,)
    eta = ((k - y).abs() ** 2).sum(dim=1) / sigma2
    lam = (k.abs() ** 2).sum() / sigma2
    return eta, lam


def noncentral_chi2_logcdf(x: torch.Tensor, df: int, nc: torch.Tensor) -> torch.Tensor:
    """log P(chi^2_df(nc) <= x), elementwise (float64), as the Poisson mixture of central chi-squares:

    P = sum_j Poisson(j; nc / 2) P(chi^2_{df + 2j} <= x),  P(chi^2_nu <= x) = gammainc(nu / 2, x / 2).
    """
    x, nc = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(nc, dtype=torch.float64)
    x, nc = torch.broadcast_tensors(x, nc)
    terms = int(float(nc.max()) / 2 + 12 * math.sqrt(float(nc.max()) / 2 + 1) + 40)  # the Poisson's mass
    j = torch.arange(terms, dtype=torch.float64).reshape(-1, *[1] * x.ndim)  # (J, ...)
    half = nc / 2
    log_poisson = j * torch.log(half.clamp_min(1e-300)) - half - torch.lgamma(j + 1)
    log_poisson = torch.where(half > 0, log_poisson, torch.where(j == 0, 0.0, -math.inf))
    log_chi2 = torch.log(torch.special.gammainc(df / 2 + j, (x / 2).clamp_min(0)).clamp_min(1e-300))
    return torch.logsumexp(log_poisson + log_chi2, dim=0).clamp_max(0.0)


@torch.no_grad()
def detect_watermark(pipe, images, key: WatermarkKey, num_inference_steps: int = INVERSION_STEPS):
    """Test images for the key: DDIM-invert them with the empty prompt, then Tree-Ring's chi-squared test.

    Args:
        pipe: the TinyStableDiffusion that made the images (its UNet inverts them).
        images: (B, 3, 32, 32) or (3, 32, 32) in [0, 1].
        key: the WatermarkKey to test for; made for `pipe.latent_shape`.
        num_inference_steps: DDIM inversion steps.
    Returns:
        scores (B,): -log10 p, larger = more evidence of the key; p_values (B,): P(eta <= observed | no key).
    """
    if not isinstance(key, WatermarkKey):
        raise TypeError(f"key must be a sdedu.safety.WatermarkKey; got {describe(key)}")
    if key.latent_shape != tuple(pipe.latent_shape):
        raise ValueError(
            f"key must be made for the pipeline's latents {tuple(pipe.latent_shape)}"
            f" (WatermarkKey(latent_shape=pipe.latent_shape)); got a key for {key.latent_shape}"
        )
    z_T = pipe.invert(images, "", num_inference_steps=num_inference_steps, guidance_scale=1.0).cpu()
    return detect_in_noise(z_T, key)


def detect_in_noise(z_T: torch.Tensor, key: WatermarkKey) -> tuple[torch.Tensor, torch.Tensor]:
    """Tree-Ring's test on noise latents z_T (B, C, h, w) already inverted: (scores, p_values), as `detect_watermark`."""
    eta, lam = watermark_statistic(z_T, key)
    log_p = noncentral_chi2_logcdf(eta, int(key.mask.sum()), lam)
    return (-log_p / math.log(10)).float(), log_p.exp().float()
