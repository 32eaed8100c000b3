"""Two measured curves that say why Tree-Ring finds little in the shapes world's images, and what finds more.

    tpr_at_fpr(marked, clean)                     the detection rate at a fixed false-positive rate
    strength_tradeoff(pipe, prompts, strengths)   louder key -> TPR@1%FPR from images, and the judge's adherence
    inversion_amplification(pipe, prompts, sizes) how a small change of z_0 grows under DDIM inversion

The second curve is the reason for the first. Tree-Ring's detector (Wen et al. 2023, section 3.4) needs the
inverted noise z_T' to resemble the true z_T (their section 2.1 relies on it, section 5 names it); here
inverting the generated latent z_0 itself gives noise correlated 0.61 with z_T (10 inversion steps, empty
prompt), but the detector never sees z_0: it sees the image, and the VAE encoder returns a z_0' 9.4% away from
z_0 (relative norm; correlation 0.995), from which inversion gives noise correlated 0.07 with z_T. White noise
of that size added to z_0 costs little (0.61 -> 0.46 at 10%); the encoder's own error, scaled to the same
size, takes the correlation to 0.02: it is structured, like a small change of content, and the model's
predictions respond to content, so each inversion step compounds it.
Measured on the shipped weights, 100 images; the strength curve on 200 + 200 (`python -m sdedu.bench
--sections safety`; numbers in `sdedu.bench.safety_watermark`).
"""

from __future__ import annotations

import torch

from sdedu import metrics
from sdedu.pipeline.loop import denoise
from sdedu.safety.watermark import INVERSION_STEPS, WatermarkKey, detect_watermark
from sdedu.samplers import DDIMInverseSampler

__all__ = ["FPR", "correlation", "inversion_amplification", "invert_latents", "strength_tradeoff", "tpr_at_fpr"]

FPR = 0.01


def tpr_at_fpr(marked_scores: torch.Tensor, clean_scores: torch.Tensor, fpr: float = FPR) -> float:
    """Share of marked scores above the (1 - fpr) quantile of the clean scores (larger score: more evidence)."""
    threshold = torch.quantile(clean_scores.double(), 1 - fpr)
    return float((marked_scores.double() > threshold).double().mean())


def correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each pair a[i], b[i] over all their other axes: (B, ...), (B, ...) -> (B,)."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)


@torch.no_grad()
def invert_latents(pipe, z0: torch.Tensor, num_inference_steps: int = INVERSION_STEPS) -> torch.Tensor:
    """DDIM inversion started from latents z_0 (B, 4, 8, 8) instead of an image (no VAE), empty prompt, w = 1."""
    sampler = DDIMInverseSampler(pipe.schedule)
    sampler.set_timesteps(num_inference_steps)
    cond, uncond = pipe.encode_prompt([""] * len(z0))
    return denoise(pipe.unet, sampler, z0.to(pipe.device), cond, uncond, 1.0).cpu()


def _norm(z: torch.Tensor) -> torch.Tensor:
    return z.flatten(1).norm(dim=1).view(-1, *[1] * (z.ndim - 1))


@torch.no_grad()
def strength_tradeoff(pipe, prompts, strengths, seed: int = 0, key_seed: int = 7, num_inference_steps: int = 25):
    """For each strength s: TPR at 1% FPR from images, and the judge's adherence, with `WatermarkKey(strength=s)`.

    The prompts are generated once without a key (the clean images, shared by every s) and once per strength
    with it, image k with seed `seed + k` each time. Returns {"clean_adherence": float, "rows": [{"strength",
    "tpr", "adherence"}, ...]}; adherence is the judge's (all four attributes) against the prompts.
    """
    prompts = list(prompts)
    clean = pipe(prompts, num_inference_steps=num_inference_steps, seed=seed).cpu()
    rows = []
    for strength in strengths:
        key = WatermarkKey(seed=key_seed, latent_shape=pipe.latent_shape, strength=strength)
        marked = pipe(prompts, num_inference_steps=num_inference_steps, seed=seed, watermark=key).cpu()
        tpr = tpr_at_fpr(detect_watermark(pipe, marked, key)[0], detect_watermark(pipe, clean, key)[0])
        rows.append({"strength": strength, "tpr": tpr, "adherence": metrics.adherence(marked, prompts)["all"]})
    return {"clean_adherence": metrics.adherence(clean, prompts)["all"], "rows": rows}


@torch.no_grad()
def inversion_amplification(pipe, prompts, sizes, seed: int = 0, num_inference_steps: int = 25):
    """How well z_T comes back from z_0 changed by a relative amount, in a random direction and in the VAE's.

    The prompts are generated (image k: seed `seed + k`), keeping z_T and z_0. For each size r, z_0 + r |z_0| u
    is inverted (`invert_latents`) and correlated with z_T, u a unit vector per image: random (white noise), or
    the direction of the VAE round trip's error, encoder(decoder(z_0)) - z_0. Returns {"sizes", "random" (mean
    correlation per size), "vae" (the same), "vae_size" (the round trip's own relative size, mean), "from_image"
    (the correlation when inverting encoder(decoder(z_0)) itself)}.
    """
    trajectory = pipe(list(prompts), num_inference_steps=num_inference_steps, seed=seed, return_trajectory=True)
    z_T, z0 = trajectory.latents[0].cpu(), trajectory.latents[-1].cpu()
    round_trip = pipe.encode_images(trajectory.images).cpu()
    error = round_trip - z0
    noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(seed))
    directions = {"random": noise / _norm(noise), "vae": error / _norm(error)}
    out = {"sizes": list(sizes), "vae_size": float((_norm(error) / _norm(z0)).mean())}
    for name, u in directions.items():
        out[name] = [float(correlation(invert_latents(pipe, z0 + r * _norm(z0) * u), z_T).mean()) for r in sizes]
    out["from_image"] = float(correlation(invert_latents(pipe, round_trip), z_T).mean())
    return out
