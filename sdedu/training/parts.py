"""The recipe's three parts, each a `train(...)` call on its own loss (see `sdedu.training.recipes`).

    1. `train_vae`            reconstruction + KL on fresh images; then the latent scale factor
    2. `train_text_encoder`   contrastive (CLIP-style) loss against a tiny image encoder
    3. `train_unet`           eps-prediction on scaled latents, conditioned on the frozen text encoder

Each part builds its network under `build_seeded` (initial weights from the recipe's seed) and
draws every batch, caption and noise from the loop's CPU step generator, on any device. The UNet's
adherence at every checkpoint (`evaluation.AdherenceLog`, evaluate=True, as `train_all` runs it) gives
its training time to `evaluation.ADHERENCE_TARGET`, as the SD3 recipe records it.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import torch

from sdedu.diffusion import noise_prediction_loss
from sdedu.models.text_encoder import ContrastiveModel, TextEncoder, Tokenizer
from sdedu.models.unet import UNet
from sdedu.models.vae import VAE
from sdedu.training.evaluation import (
    CHECKPOINT_PROMPTS,
    AdherenceLog,
    evaluate_generation,
    evaluate_text_encoder,
    evaluate_vae,
    time_to_target,
)
from sdedu.training.loop import train
from sdedu.training.recipe_config import Recipe, build_seeded
from sdedu.training.recipe_data import LatentBank, bank_images, captions_for, draw_images, matches
from sdedu.training.recipe_run import training_info

ADHERENCE_LOG = "adherence.json"  # in <out>/unet/: the EMA UNet's adherence at every checkpoint

# ---- 1. VAE ------------------------------------------------------------------------------------


def train_vae(
    recipe: Recipe, out_dir=None, resume=False, progress=True, device="cpu", distributed=None
) -> tuple[VAE, dict]:
    """Train the KL autoencoder, set its scale factor, measure PSNR. Returns (EMA VAE, info)."""
    device = torch.device(device)
    vae = build_seeded(lambda: VAE(recipe.vae), recipe.seed, "vae").to(device)

    def loss_fn(model, generator):
        images, _ = draw_images(recipe.vae_batch_size, generator)
        return model.loss(images.to(device), generator=generator)  # the CPU step generator, on any device

    run = train(
        vae,
        loss_fn,
        recipe.vae_train,
        _sub(out_dir, "vae"),
        resume=resume,
        desc="VAE",
        progress=progress,
        distributed=distributed,
        settings={"recipe_seed": recipe.seed, "vae": asdict(recipe.vae), "vae_batch_size": recipe.vae_batch_size},
    )
    vae = run.ema_model
    # Latent scale factor, as for SD: 1 / std of sampled latents over training images.
    images, _ = draw_images(recipe.scale_factor_images, torch.Generator().manual_seed(recipe.seed + 1))
    scale = vae.compute_scale_factor(images.to(device), generator=torch.Generator().manual_seed(recipe.seed))
    info = {**training_info(run), "scale_factor": scale, **evaluate_vae(vae, device=device)}
    return vae, info


# ---- 2. text encoder ---------------------------------------------------------------------------


def train_text_encoder(
    recipe: Recipe, out_dir=None, resume=False, progress=True, device="cpu", distributed=None
) -> tuple[TextEncoder, dict]:
    """CLIP-style contrastive pretraining with multi-positive targets. Returns (text encoder, info)."""
    device = torch.device(device)
    tokenizer = Tokenizer(max_length=recipe.text.max_length)
    model = build_seeded(lambda: ContrastiveModel(TextEncoder(recipe.text)), recipe.seed, "text").to(device)

    def loss_fn(model, generator):
        images, attributes = draw_images(recipe.text_batch_size, generator)
        captions, named = captions_for(attributes, generator, recipe.p_full, recipe.p_drop)
        match = matches(attributes, named)  # (B images, B captions)
        return model.loss(images.to(device), tokenizer(captions, device=device), match.to(device))

    run = train(
        model,
        loss_fn,
        recipe.text_train,
        _sub(out_dir, "text"),
        resume=resume,
        desc="text encoder",
        progress=progress,
        distributed=distributed,
        settings={
            "recipe_seed": recipe.seed,
            "text": asdict(recipe.text),
            "text_batch_size": recipe.text_batch_size,
            "p_full": recipe.p_full,
            "p_drop": recipe.p_drop,
        },
    )
    info = {**training_info(run), **evaluate_text_encoder(run.ema_model, tokenizer, device=device)}
    return run.ema_model.text_encoder.eval(), info


# ---- 3. UNet -----------------------------------------------------------------------------------


@torch.no_grad()
def encode_bank(vae: VAE, n: int, seed: int, device="cpu", batch_size: int = 500):
    """Encode n fresh training images once: (means, logvars) (n, 4, 8, 8) each, and attributes."""
    means, logvars, attributes = [], [], []
    for images, attrs in bank_images(n, seed, batch_size):
        mean, logvar = vae.encode(images.to(device))
        means.append(mean)
        logvars.append(logvar)
        attributes += attrs
    return torch.cat(means), torch.cat(logvars), attributes


def latent_bank(vae: VAE, n: int, seed: int, device="cpu") -> LatentBank:
    """`encode_bank`'s n images as the `LatentBank` the UNet and SD3 recipes draw from (means, stds, scale)."""
    means, logvars, attributes = encode_bank(vae, n, seed, device)
    return LatentBank(means, torch.exp(0.5 * logvars), attributes, float(vae.scale_factor))


def train_unet(
    recipe: Recipe,
    vae: VAE,
    text_encoder: TextEncoder,
    out_dir=None,
    resume=False,
    progress=True,
    device="cpu",
    distributed=None,
    evaluate=False,
) -> tuple[UNet, dict]:
    """Train the UNet on scaled latents with the frozen VAE and text encoder. Returns (EMA UNet, info).

    evaluate=True: the EMA UNet's adherence at every checkpoint (`evaluation.AdherenceLog`, in
    <out>/unet/adherence.json) goes into info's "adherence_log", and its first row meeting
    `evaluation.ADHERENCE_TARGET` into "time_to_target"; the weights are those of a run without it.
    """
    device = torch.device(device)
    if recipe.unet.context_dim != text_encoder.config.width:
        raise ValueError(
            f"recipe.unet.context_dim must equal the text encoder's width {text_encoder.config.width}; "
            f"got {recipe.unet.context_dim}"
        )
    t0, cpu0 = time.perf_counter(), time.process_time()
    vae, text_encoder = vae.to(device).eval(), text_encoder.to(device).eval().requires_grad_(False)
    tokenizer = Tokenizer(max_length=text_encoder.config.max_length)
    schedule = recipe.schedule.build().to(device)
    bank = latent_bank(vae, recipe.latent_bank, recipe.seed + 2, device)
    bank_seconds, bank_cpu_seconds = time.perf_counter() - t0, time.process_time() - cpu0
    unet = build_seeded(lambda: UNet(recipe.unet), recipe.seed, "unet").to(device)

    def loss_fn(model, generator):
        # 1-2. Latents z_0 (B, 4, 8, 8) of random bank images; captions, partial or full, some "" (for guidance).
        _, z0, captions = bank.batch(recipe.unet_batch_size, generator, recipe.p_full, recipe.p_drop, recipe.p_uncond)
        with torch.no_grad():
            cond = text_encoder(tokenizer(captions, device=device))  # (B, L, D), frozen
        # 3. Ho et al.'s simple loss on the latents.
        return noise_prediction_loss(model, z0, schedule, generator=generator, cond=cond)

    def measure(model):
        from sdedu.pipeline import TinyStableDiffusion  # the evaluation samples through the pipeline

        pipe = TinyStableDiffusion(tokenizer, text_encoder, vae, model, recipe.schedule.build(), device=device)
        return evaluate_generation(pipe, n=CHECKPOINT_PROMPTS)

    unet_dir = _sub(out_dir, "unet")
    log = AdherenceLog(measure, unet_dir and unet_dir / ADHERENCE_LOG, (bank_seconds, bank_cpu_seconds), resume)
    run = train(
        unet,
        loss_fn,
        recipe.unet_train,
        unet_dir,
        resume=resume,
        desc="UNet",
        progress=progress,
        distributed=distributed,
        settings={
            "recipe_seed": recipe.seed,
            "unet": asdict(recipe.unet),
            "unet_batch_size": recipe.unet_batch_size,
            "latent_bank": recipe.latent_bank,
            "schedule": recipe.schedule.to_dict(),
            "p_full": recipe.p_full,
            "p_drop": recipe.p_drop,
            "p_uncond": recipe.p_uncond,
        },
        on_checkpoint=log if evaluate else None,
    )
    info = {**training_info(run, bank_seconds, bank_cpu_seconds), "latent_bank_seconds": bank_seconds}
    if evaluate:
        info["adherence_log"] = log.rows  # seconds, cpu_seconds: training time up to each checkpoint, the bank included
        info["time_to_target"] = time_to_target(log.rows)
    return run.ema_model, info


def _sub(out_dir, name):
    return None if out_dir is None else Path(out_dir) / name
