"""What sampling costs (ddim_vs_ddpm, latent_vs_pixel, scaling): DDIM vs DDPM, latent vs pixel, batch and steps."""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from sdedu import optimize
from sdedu.bench.common import IMAGES, STEPS, adherence_of, bench_row, is_trained, sample_prompts
from sdedu.bench.measure import median_time
from sdedu.models.unet import UNet
from sdedu.pipeline import DEFAULT_GUIDANCE_SCALE, denoise, make_sampler


def ddim_vs_ddpm_section(ctx) -> list:
    """Time of n images with DDIM at 10/25/50 steps and DDPM at 1000, and adherence when trained."""
    pipe, device = ctx.pipe, ctx.device
    n_images = ctx.n(IMAGES, 4)
    prompts = sample_prompts(n_images)[0]
    settings = [("ddim", 10), ("ddim", 25), ("ddim", 50), ("ddpm", pipe.schedule.T)]
    trained = is_trained(pipe)
    n_judged = ctx.n(64, 8)
    rows, times, adherence = [], {}, {}
    for sampler, steps in settings:
        repeats = 1 if sampler == "ddpm" else ctx.n(5, 2)
        run = lambda: pipe(prompts, num_inference_steps=steps, sampler=sampler, seed=ctx.seed)  # noqa: E731
        times[(sampler, steps)] = median_time(run, repeats, 0 if sampler == "ddpm" else 1, device)[0]
        extra = {}
        if trained:
            extra = adherence_of(pipe, n_judged, seed=ctx.seed, sampler=sampler, steps=steps, batch_size=n_judged)
            adherence[(sampler, steps)] = extra["all"]
        label = f"{sampler.upper()}-{steps}"
        rows.append(
            bench_row(
                "ddim_ddpm",
                f"{label}: {n_images} images",
                times[(sampler, steps)],
                unit="s",
                adherence=extra.get("all"),
                adherence_detail=extra or "skipped (random weights)",
            )
        )
        if trained:
            rows.append(bench_row("ddim_ddpm", f"{label}: adherence (all four)", extra["all"], n=n_judged))
    speedup = times[("ddpm", pipe.schedule.T)] / times[("ddim", 25)]
    rows.append(
        bench_row("ddim_ddpm", f"DDPM-{pipe.schedule.T} time / DDIM-25 time", speedup, ">= 30", speedup >= 30, "x")
    )
    if trained:
        ddim25, ddpm = adherence[("ddim", 25)], adherence[("ddpm", pipe.schedule.T)]
        rows.append(
            bench_row(
                "ddim_ddpm",
                "adherence (all four): DDIM-25 - DDPM-1000",
                ddim25 - ddpm,
                ">= -0.05",
                ddim25 - ddpm >= -0.05,
                n=n_judged,
            )
        )
    return rows


def _training_step(model, x0, cond, schedule, optimizer):
    t = torch.randint(0, schedule.T, (x0.shape[0],), device=x0.device)
    eps = torch.randn_like(x0)
    alpha_bar = schedule.alpha_bar[t].view(-1, 1, 1, 1)
    x_t = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * eps  # Ho et al. 2020, eq. 4
    loss = F.mse_loss(model(x_t, t, cond), eps)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@torch.no_grad()
def _sample(unet, shape, cond, uncond, schedule, steps):
    """Guided DDIM from noise with any UNet (latent or pixel): the pipeline's one loop, no decoding."""
    sampler = make_sampler("ddim", schedule)
    sampler.set_timesteps(steps)
    z = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(cond.device)
    return denoise(unet, sampler, z, cond, uncond, DEFAULT_GUIDANCE_SCALE)


def latent_vs_pixel_section(ctx) -> list:
    """The same UNet on 8x8x4 latents (with the VAE decode) and on 32x32x3 pixels."""
    pipe, device = ctx.pipe, ctx.device
    config = optimize.unwrap(pipe.unet).config
    batch, n_images, repeats = ctx.n(64, 4), ctx.n(IMAGES, 2), ctx.n(3, 1)
    steps = ctx.n(STEPS, 3)
    schedule = pipe.schedule
    g = torch.Generator().manual_seed(0)
    seconds = {}
    for space, size, channels in (("latent", 8, 4), ("pixel", 32, 3)):
        model = UNet(replace(config, in_channels=channels, sample_size=size)).to(device)  # same layers, other input
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        x0 = torch.randn(batch, channels, size, size, generator=g).to(device)
        cond = torch.randn(batch, 12, config.context_dim, generator=g).to(device)
        seconds[space, "train"] = median_time(
            lambda: _training_step(model, x0, cond, schedule, optimizer), repeats, 1, device
        )[0]
        model.eval()
        c, u = pipe.encode_prompt(sample_prompts(n_images)[0])

        def sample():
            z = _sample(model, (n_images, channels, size, size), c, u, schedule, steps)
            return pipe.decode_latents(z) if space == "latent" else z

        seconds[space, "sample"] = median_time(sample, repeats, 1 if space == "latent" else 0, device)[0]
    train_ratio = seconds["pixel", "train"] / seconds["latent", "train"]
    sample_ratio = seconds["pixel", "sample"] / seconds["latent", "sample"]
    return [
        bench_row("latent", f"training step, batch {batch}: latent 8x8x4", seconds["latent", "train"], unit="s"),
        bench_row("latent", f"training step, batch {batch}: pixel 32x32x3", seconds["pixel", "train"], unit="s"),
        bench_row("latent", "training step: pixel / latent", train_ratio, unit="x"),
        bench_row(
            "latent", f"{n_images} images x {steps} steps: latent (+ VAE decode)", seconds["latent", "sample"], unit="s"
        ),
        bench_row("latent", f"{n_images} images x {steps} steps: pixel", seconds["pixel", "sample"], unit="s"),
        bench_row("latent", "sampling: pixel / latent", sample_ratio, unit="x"),
    ]


def scaling_section(ctx) -> list:
    """Sampling time against batch size (at 25 steps) and against steps (at 16 images), guided."""
    repeats = ctx.n(3, 1)
    rows = []
    batches = ctx.n((1, 4, 16, 64), (1, 4))
    base = None
    for n in batches:
        prompts = sample_prompts(n)[0]
        seconds = median_time(lambda: ctx.pipe(prompts, num_inference_steps=ctx.n(STEPS, 3)), repeats, 1, ctx.device)[0]
        base = base or seconds
        rows.append(
            bench_row(
                "scaling",
                f"{n} images x {ctx.n(STEPS, 3)} steps",
                seconds,
                unit="s",
                per_image_s=seconds / n,
                relative_to_one_image=seconds / base,
            )
        )
    n_images = ctx.n(IMAGES, 2)
    prompts = sample_prompts(n_images)[0]
    for steps in ctx.n((10, 25, 50), (2, 4)):
        seconds = median_time(lambda: ctx.pipe(prompts, num_inference_steps=steps), repeats, 1, ctx.device)[0]
        rows.append(
            bench_row("scaling", f"{n_images} images x {steps} steps", seconds, unit="s", per_step_s=seconds / steps)
        )
    return rows
