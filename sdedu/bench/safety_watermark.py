"""safety, Tree-Ring watermark (issue 19.1): detection by DDIM inversion, clean and attacked, and its cost.

n prompts (200; quick 16) with attributes (held-out pairs excluded) are generated twice with the
same seeds, without and with the key `WatermarkKey(seed=WATERMARK_SEED)`; both sets go through
`detect_watermark` unchanged and after each attack of `sdedu.safety.attacks.ATTACKS` (both sets
attacked alike, as Wen et al. do). Reported:

- the true-positive rate at a 1% false-positive rate: the threshold is the 99th percentile of the
  clean images' scores under the same attack (empirical, so it holds whatever the p-values' calibration);
- the share of clean images with p < 0.01 (what the chi-squared test's own 1% means on real images);
- the judge's adherence (all four attributes) without and with the key: the watermark's cost.
"""

from __future__ import annotations

import torch

from sdedu import metrics
from sdedu.bench.common import bench_row, sample_prompts
from sdedu.bench.report import Context, Row
from sdedu.safety.attacks import ATTACKS
from sdedu.safety.watermark import INVERSION_STEPS, WatermarkKey, detect_watermark

WATERMARK_SEED = 7
FPR = 0.01


def tpr_at_fpr(marked_scores: torch.Tensor, clean_scores: torch.Tensor, fpr: float = FPR) -> float:
    """Share of marked scores above the (1 - fpr) quantile of the clean scores (larger score: more evidence)."""
    threshold = torch.quantile(clean_scores.double(), 1 - fpr)
    return float((marked_scores.double() > threshold).double().mean())


def _detect(pipe, images, key, batch_size=100):
    scores, p_values = zip(
        *(detect_watermark(pipe, images[i : i + batch_size], key) for i in range(0, len(images), batch_size))
    )
    return torch.cat(scores), torch.cat(p_values)


def watermark_rows(ctx: Context) -> list[Row]:
    """Detection clean and under each attack, calibration of the p-values, adherence cost (module docstring)."""
    n = ctx.n(200, 16)
    key = WatermarkKey(seed=WATERMARK_SEED, latent_shape=ctx.pipe.latent_shape)
    prompts, attributes = sample_prompts(n, seed=ctx.seed + 1)
    images = {"clean": ctx.generate(prompts), "marked": ctx.generate(prompts, watermark=key)}
    detail = {"n": n, "key": repr(key), "inversion_steps": INVERSION_STEPS}
    rows = []
    for attack in [None, *ATTACKS]:
        attacked = {k: v if attack is None else ATTACKS[attack](v, ctx.pipe, prompts) for k, v in images.items()}
        (marked, _), (clean, clean_p) = (_detect(ctx.pipe, attacked[k], key) for k in ("marked", "clean"))
        name = "no attack" if attack is None else attack
        rows.append(bench_row("safety", f"watermark TPR@1%FPR, {name}", tpr_at_fpr(marked, clean), **detail))
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
