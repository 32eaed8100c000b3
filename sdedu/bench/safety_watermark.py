"""safety, Tree-Ring watermark (issue 19.1): detection by DDIM inversion, clean and attacked, and its cost.

n prompts (200; quick 16) with attributes (held-out pairs excluded) are generated twice with the
same seeds, without and with the key `WatermarkKey(seed=WATERMARK_SEED)`; both sets go through
`detect_watermark` unchanged and after each attack of `sdedu.safety.attacks.ATTACKS` (both sets
attacked alike, as Wen et al. do). Reported:

- the true-positive rate at a 1% false-positive rate: the threshold is the 99th percentile of the
  clean images' scores under the same attack (empirical, so it holds whatever the p-values' calibration);
- the share of clean images with p < 0.01 (what the chi-squared test's own 1% means on real images);
- the judge's adherence (all four attributes) without and with the key: the watermark's cost;
- a diagnostic: the TPR when the detector inverts the generated latents z_0 themselves, skipping the
  VAE round trip z_0 -> image -> encoder (what limits detection here: see `sdedu.safety.watermark`).
- the two curves of `sdedu.safety.watermark_curves` (`curve_rows`): key strength -> TPR from images and
  adherence; relative change of z_0 (white noise, or the VAE's error direction) -> correlation of the inverted
  noise with z_T.

Measured (shipped weights, 200 + 200 images, key seed 7, channel 0, radius 3, 10 inversion steps; 1360 s
on one thread of the shared 2-core machine under heavy contention): TPR at 1% FPR 0.060 without attack,
0.020 after the blur, 0.020 the noise, 0.020 JPEG 75, 0.015 the shift, 0.015 img2img 0.3: from images
barely above chance (0.01); 0.995 from the latents z_0. Clean images with p < 0.01: 0.000 (the
plug-in sigma^2 makes the test conservative). Adherence 1.000 without the key, 0.995 with it (1 image
of 200).

The two curves (`curve_rows`, `sdedu.safety.watermark_curves`; shipped weights, 471 s on one thread under
contention). Key strength -> TPR at 1% FPR from images / adherence, 200 + 200 images (no key: adherence 1.000):
1: 0.025 / 1.000, 1.5: 0.055 / 0.995, 2: 0.105 / 0.975, 3: 0.940 / 0.525, 4: 1.000 / 0.000: no strength gives
both. Relative change of z_0 -> correlation of the inverted noise with z_T (100 images, 10 inversion steps),
white noise / the VAE round trip's error direction: 0: 0.606 / 0.606, 0.1%: 0.606 / 0.603, 0.3%: 0.606 / 0.598,
1%: 0.604 / 0.576, 3%: 0.588 / 0.496, 10%: 0.461 / 0.020; the round trip itself: 9.4%, inverted from the
image 0.073.
"""

from __future__ import annotations

import torch

from sdedu import metrics
from sdedu.bench.common import bench_row, sample_prompts
from sdedu.bench.report import STEPS, Context, Row
from sdedu.safety.attacks import ATTACKS
from sdedu.safety.watermark import INVERSION_STEPS, WatermarkKey, detect_in_noise, detect_watermark
from sdedu.safety.watermark_curves import FPR, inversion_amplification, invert_latents, strength_tradeoff, tpr_at_fpr

WATERMARK_SEED = 7
STRENGTHS = (1, 1.5, 2, 3, 4)  # the key's standard deviation; 1 is Tree-Ring's
SIZES = (0, 0.001, 0.003, 0.01, 0.03, 0.1)  # relative changes of z_0; the VAE round trip's is ~0.09


def _detect(pipe, images, key, batch_size=100):
    return _cat(detect_watermark(pipe, images[i : i + batch_size], key) for i in range(0, len(images), batch_size))


def _cat(pairs):
    first, second = zip(*pairs)
    return torch.cat(first), torch.cat(second)


def _generate(ctx: Context, prompts, key, batch_size=100):
    """Images and their final latents z_0 (image k: seed + k), with the key or without (key None)."""
    trajectories = [
        ctx.pipe(
            prompts[i : i + batch_size],
            num_inference_steps=STEPS,
            seed=ctx.seed + i,
            watermark=key,
            return_trajectory=True,
        )
        for i in range(0, len(prompts), batch_size)
    ]
    return torch.cat([t.images.cpu() for t in trajectories]), torch.cat([t.latents[-1] for t in trajectories])


def _detect_from_latents(pipe, z0, key):
    """The detector without the VAE round trip: inversion started from z_0 itself (a diagnostic)."""
    return detect_in_noise(invert_latents(pipe, z0), key)


def curve_rows(ctx: Context) -> list[Row]:
    """The two curves of `sdedu.safety.watermark_curves`: key strength -> TPR and adherence; z_0 change -> z_T."""
    n = ctx.n(200, 8)
    prompts, _ = sample_prompts(n, seed=ctx.seed + 2)
    tradeoff = strength_tradeoff(ctx.pipe, prompts, STRENGTHS, seed=ctx.seed, key_seed=WATERMARK_SEED)
    rows = [bench_row("safety", "watermark curve: adherence, no key", tradeoff["clean_adherence"], n=n)]
    for r in tradeoff["rows"]:
        s = r["strength"]
        rows.append(bench_row("safety", f"watermark curve: strength {s:g}, TPR@1%FPR from images", r["tpr"], n=n))
        rows.append(bench_row("safety", f"watermark curve: strength {s:g}, adherence", r["adherence"], n=n))
    n = ctx.n(100, 4)
    prompts, _ = sample_prompts(n, seed=ctx.seed + 3)
    amp = inversion_amplification(ctx.pipe, prompts, SIZES, seed=ctx.seed)
    detail = {"n": n, "inversion_steps": INVERSION_STEPS}
    for direction in ("random", "vae"):
        for size, corr in zip(amp["sizes"], amp[direction]):
            metric = f"watermark curve: corr(z_T, inverted), z_0 changed {size:.1%} {direction}"
            rows.append(bench_row("safety", metric, corr, **detail))
    rows.append(bench_row("safety", "watermark curve: VAE round trip's relative change of z_0", amp["vae_size"], n=n))
    rows.append(
        bench_row("safety", "watermark curve: corr(z_T, inverted), from the image", amp["from_image"], **detail)
    )
    return rows


def watermark_rows(ctx: Context) -> list[Row]:
    """Detection clean and under each attack, calibration of the p-values, adherence cost (module docstring)."""
    n = ctx.n(200, 16)
    key = WatermarkKey(seed=WATERMARK_SEED, latent_shape=ctx.pipe.latent_shape)
    prompts, attributes = sample_prompts(n, seed=ctx.seed + 1)
    (clean, clean_z0), (marked, marked_z0) = _generate(ctx, prompts, None), _generate(ctx, prompts, key)
    images = {"clean": clean, "marked": marked}
    detail = {"n": n, "key": repr(key), "inversion_steps": INVERSION_STEPS}
    rows = []
    for attack in [None, *ATTACKS]:
        attacked = {k: v if attack is None else ATTACKS[attack](v, ctx.pipe, prompts) for k, v in images.items()}
        (marked_scores, _), (clean_scores, clean_p) = (_detect(ctx.pipe, attacked[k], key) for k in ("marked", "clean"))
        name = "no attack" if attack is None else attack
        rows.append(
            bench_row("safety", f"watermark TPR@1%FPR, {name}", tpr_at_fpr(marked_scores, clean_scores), **detail)
        )
        if attack is None:
            rows.append(
                bench_row(
                    "safety",
                    "watermark: clean with p < 0.01",
                    float((clean_p < FPR).double().mean()),
                    target=f"~{FPR:g}",
                    **detail,
                )
            )
    (marked_scores, _), (clean_scores, _) = (_detect_from_latents(ctx.pipe, z0, key) for z0 in (marked_z0, clean_z0))
    tpr = tpr_at_fpr(marked_scores, clean_scores)
    rows.append(bench_row("safety", "watermark TPR@1%FPR, from latents z_0", tpr, **detail))
    adherence = {k: metrics.adherence(v, attributes)["all"] for k, v in images.items()}
    rows.append(bench_row("safety", "watermark: adherence, no key", adherence["clean"], n=n))
    rows.append(
        bench_row(
            "safety",
            "watermark: adherence, key",
            adherence["marked"],
            target=f">= {adherence['clean'] - 0.02:.3f}",
            passed=adherence["marked"] >= adherence["clean"] - 0.02,
            n=n,
        )
    )
    return rows
