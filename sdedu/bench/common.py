"""What the benchmark's performance sections share: their rows, prompts, inputs and pipelines."""

from __future__ import annotations

import torch

from sdedu import optimize
from sdedu.bench.report import STEPS, Row
from sdedu.data import shapes
from sdedu.models.unet import UNet, UNetConfig

IMAGES = 16  # the course's speed target: 16 images x STEPS steps with guidance

__all__ = ["IMAGES", "STEPS", "bench_row", "is_trained", "sample_prompts", "unet_inputs", "adherence_of"]


def bench_row(section, metric, value, target="", passed=None, unit="", **extra):
    """One row of the report (`Row`): `extra` holds the details that go to the JSON only."""
    return Row(section, metric, float(value), target, passed, unit, extra)


def is_trained(pipe) -> bool:
    """True when the pipeline carries trained weights (a manifest), so adherence means something."""
    return bool(getattr(pipe, "manifest", None))


def sample_prompts(n: int, seed: int = 0) -> tuple[list[str], list[dict]]:
    attributes = shapes.sample_attributes(n, torch.Generator().manual_seed(seed), exclude_held_out=True)
    return [shapes.caption(a) for a in attributes], attributes


def unet_inputs(unet, batch_size: int, length: int = 12, size: int = 8, channels=None, device="cpu"):
    config = optimize.unwrap(unet).config
    g = torch.Generator().manual_seed(0)
    z = torch.randn(batch_size, channels or config.in_channels, size, size, generator=g).to(device)
    t = torch.randint(0, config.num_train_timesteps, (batch_size,), generator=g).to(device)
    cond = torch.randn(batch_size, length, config.context_dim, generator=g).to(device)
    return z, t, cond


def adherence_of(pipe, n: int, batch_size: int = 64, seed: int = 0, sampler="ddim", steps=STEPS) -> dict:
    """Judge's adherence on n full prompts (held-out pairs excluded), generated in batches (image k: seed + k)."""
    from sdedu import metrics

    prompts, attributes = sample_prompts(n, seed=seed + 1)
    images = torch.cat(
        [
            pipe(prompts[i : i + batch_size], num_inference_steps=steps, seed=seed + i, sampler=sampler).cpu()
            for i in range(0, n, batch_size)
        ]
    )
    return metrics.adherence(images, attributes)


def compiled_state(module):
    """True/False for a compiled UNet (did it compile?), None when no torch.compile is involved."""
    while isinstance(module, optimize.ModuleWrapper):
        if isinstance(module, optimize.CompiledModule):
            return module.is_compiled
        module = module.module
    return None


@torch.no_grad()
def perturb_zero_layers(model: torch.nn.Module) -> torch.nn.Module:
    """Give the layers that start at zero (residual blocks begin as the identity) small random weights.

    Then every layer affects the output, as after training, and no compiler can fold a zero layer away.
    """
    for p in model.parameters():
        if p.ndim > 1 and not p.any():
            p.normal_(0, 0.02)
    return model


def random_pipeline(size: str = "default", device="cpu", seed: int = 0, T: int = 1000):
    """A TinyStableDiffusion with random weights, for timing before (or without) training.

    size "default" uses the recipe's configs; "tiny" a small UNet for tests. Layers that start
    at zero get small random weights (perturb_zero_layers). T: the schedule's length (tests use
    a short one so that "DDPM with all T steps" stays quick).
    """
    from sdedu.models.text_encoder import TextEncoder, TextEncoderConfig, Tokenizer
    from sdedu.models.vae import VAE, VAEConfig
    from sdedu.pipeline import TinyStableDiffusion
    from sdedu.schedules import NoiseSchedule

    if size not in ("default", "tiny"):
        raise ValueError(f"size must be 'default' or 'tiny'; got {size!r}")
    torch.manual_seed(seed)
    if size == "default":
        text, unet, vae = TextEncoderConfig(), UNetConfig(), VAEConfig()
    else:
        text = TextEncoderConfig(width=32, layers=1, num_heads=2, embed_dim=32)
        unet = UNetConfig(channels=(32, 64), context_dim=32, head_dim=16, norm_groups=8)
        vae = VAEConfig(channels=(8, 16, 16))
    models = TextEncoder(text), VAE(vae), UNet(unet)
    for model in models:
        perturb_zero_layers(model)
    return TinyStableDiffusion(
        Tokenizer(max_length=text.max_length), *models, NoiseSchedule.scaled_linear(T=T), device=device
    )
