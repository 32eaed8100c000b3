"""What the shipped model does: adherence, diversity, held-out pairs, speed, the VAE.

adherence   full prompts, 25 DDIM steps, default guidance, 200 images: colour, shape,
            position and size read off by the judge (`sdedu.metrics`)
diversity   the partial prompt "a red shape": how often each shape appears
held_out    adherence on the (colour, shape) pairs never seen in training
speed       seconds for 16 images x 25 steps with guidance (median of several repeats)
vae         reconstruction PSNR of the VAE on images it never saw
"""

from __future__ import annotations

import os
import statistics
import time

import torch

from sdedu import metrics
from sdedu.bench.report import STEPS, Context, Row
from sdedu.data import shapes


def _at_least(section, metric, value, floor, unit="") -> Row:
    return Row(section, metric, float(value), f">= {floor:g}", bool(value >= floor), unit)


def adherence_section(ctx: Context) -> list[Row]:
    """Full prompts for attributes drawn from the training distribution (held-out pairs excluded)."""
    n = ctx.n(200, 48)
    attributes = shapes.sample_attributes(n, torch.Generator().manual_seed(ctx.seed + 1), exclude_held_out=True)
    prompts = [shapes.caption(a) for a in attributes]
    scores = metrics.adherence(ctx.generate(prompts), attributes)
    floors = {"color": 0.98, "shape": 0.95, "position": 0.95, "size": 0.95}
    rows = [_at_least("adherence", name, scores[name], floor) for name, floor in floors.items()]
    rows.append(Row("adherence", "all four", scores["all"], extra={"n": n}))
    return rows


def diversity_section(ctx: Context) -> list[Row]:
    """The partial prompt "a red shape": each shape should appear at least 20% of the time."""
    n = ctx.n(200, 48)
    prompt = "a red shape"
    verdicts = metrics.judge(ctx.generate([prompt] * n))
    split = metrics.diversity(verdicts, "shape")
    rows = [_at_least("diversity", f'"{prompt}": {s}', split["fractions"][s], 0.2) for s in shapes.SHAPES]
    rows.append(Row("diversity", f'"{prompt}": colour red', metrics.adherence(verdicts, [prompt] * n)["color"]))
    rows.append(
        Row(
            "diversity",
            f'"{prompt}": shape entropy / log2(3)',
            split["normalized_entropy"],
            extra={"counts": split["counts"], "n": n},
        )
    )
    return rows


def held_out_section(ctx: Context) -> list[Row]:
    """Compositional generalisation: full prompts for (colour, shape) pairs never trained on."""
    n = ctx.n(100, 24)
    rows = []
    gen = torch.Generator().manual_seed(ctx.seed + 2)
    for color, shape in shapes.HELD_OUT:
        attributes = [{**a, "color": color, "shape": shape} for a in shapes.sample_attributes(n, gen)]
        scores = metrics.adherence(ctx.generate([shapes.caption(a) for a in attributes]), attributes)
        for name in ("color", "shape", "all"):
            rows.append(Row("held_out", f"{color} {shape}: {name}", scores[name], extra={"n": n}))
    return rows


def speed_section(ctx: Context) -> list[Row]:
    """Seconds for 16 images x 25 DDIM steps with guidance, median of several repeats."""
    repeats = ctx.n(7, 3)
    prompts = [shapes.caption(a) for a in shapes.sample_attributes(16, torch.Generator().manual_seed(0))]
    ctx.pipe(prompts, num_inference_steps=STEPS)  # warm-up
    times = []
    for _ in range(repeats):
        if ctx.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        ctx.pipe(prompts, num_inference_steps=STEPS)
        if ctx.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return [
        Row(
            "speed",
            "16 images x 25 steps, guided",
            median,
            "<= 1",
            median <= 1.0,
            "s",
            extra={
                "repeats": times,
                "threads": torch.get_num_threads(),
                "device": str(ctx.device),
                # Other processes on the machine slow this down; the load says how busy it was.
                "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            },
        )
    ]


def vae_section(ctx: Context) -> list[Row]:
    """VAE reconstruction PSNR (dB) on fresh images, and on the held-out pairs in particular."""
    n = ctx.n(1000, 200)
    images, _, attributes = shapes.sample(n, seed=987_654_321)
    held = torch.tensor([(a["color"], a["shape"]) in shapes.HELD_OUT for a in attributes])
    with torch.no_grad():
        recon = torch.cat(
            [ctx.pipe.decode_latents(ctx.pipe.encode_images(images[i : i + 250])).cpu() for i in range(0, n, 250)]
        )
    values = metrics.psnr(recon, images)
    return [
        _at_least("vae", "reconstruction PSNR", values.mean().item(), 25, "dB"),
        Row(
            "vae",
            "reconstruction PSNR, held-out pairs",
            values[held].mean().item(),
            unit="dB",
            extra={"n": int(held.sum())},
        ),
    ]
