"""The recipe that trains a ControlNet on the shipped model, conditioned on the shape's mask.

    python -m sdedu.train controlnet --out runs/controlnet       (`train_controlnet` from Python)

As Zhang et al. (2023, section 3.2) do for Stable Diffusion, the whole model stays frozen (VAE,
text encoder, UNet: `sdedu/weights`, loaded hash-checked); only the ControlNet trains: its encoder
copy starts as the UNet's, its condition network from the recipe's seed, its zero convolutions at
zero (`sdedu.models.controlnet`). One step:

    images, attributes from the shapes world (a bank drawn and encoded once, as the UNet's)
    masks = the images' shape masks (B, 1, 32, 32)              (`sdedu.metrics.masks.shape_mask`)
    z_0 = scale_factor * (mean + std * noise)
    captions full or partial, then "" with p_uncond             (`recipe_data.captions_for`)
    loss = || eps - UNet(z_t, t, cond, ControlNet(z_t, t, cond, masks)) ||^2     (Ho et al. 2020, eq. 14)

The loss is `sdedu.diffusion.noise_prediction_loss` on `ControlledUNet`, the same module the pipeline
runs; the training loop is `loop.train` (seeded per step, resumable). The weights folder holds
`controlnet.safetensors` and a manifest naming the UNet it was trained for by its sha256.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from sdedu._checks import check_int_range, check_number_range
from sdedu.diffusion import noise_prediction_loss
from sdedu.metrics.masks import shape_mask
from sdedu.models.controlnet import ControlledUNet, ControlNetModel
from sdedu.training.loop import TrainConfig, train
from sdedu.training.recipe_config import build_seeded
from sdedu.training.recipe_data import LatentBank, draw_images
from sdedu.training.recipe_run import record_run, run_config, run_folders, training_info
from sdedu.weights import load_pretrained, save_component

MODEL_NAME = "ControlNet"  # the manifest's "model" field


@dataclass
class ControlNetRecipe:
    """Every setting of the ControlNet's recipe (recorded in its weights manifest)."""

    seed: int = 0
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(steps=1000, lr=1e-3, warmup_steps=30, ema_decay=0.0, checkpoint_every=100)
    )
    batch_size: int = 32
    bank: int = 4000
    p_full: float = 0.5
    p_drop: float = 0.5
    p_uncond: float = 0.1

    def __post_init__(self):
        check_int_range("recipe.seed", self.seed, 0, 2**40)
        check_int_range("recipe.batch_size", self.batch_size, 1, 10**9)
        check_int_range("recipe.bank", self.bank, 1, 10**9)
        for name in ("p_full", "p_drop", "p_uncond"):
            check_number_range(f"recipe.{name}", getattr(self, name), 0.0, 1.0)

    def with_steps(self, steps: int | None = None, seed: int | None = None, bf16: bool = False) -> ControlNetRecipe:
        """A copy with the step count (smoke runs), seed and bf16 set, as `Recipe.with_steps`."""
        seed = self.seed if seed is None else seed
        return replace(self, seed=seed, train=run_config(self.train, steps, seed, bf16))


@torch.no_grad()
def encode_bank_with_masks(vae, n: int, seed: int, device, batch_size: int = 500):
    """n fresh training images encoded once: means, logvars (n, 4, 8, 8), masks (n, 1, 32, 32), attributes."""
    generator = torch.Generator().manual_seed(seed)
    means, logvars, masks, attributes = [], [], [], []
    for start in range(0, n, batch_size):
        images, attrs = draw_images(min(batch_size, n - start), generator)
        mean, logvar = vae.encode(images.to(device))
        means.append(mean)
        logvars.append(logvar)
        masks.append(shape_mask(images).to(device))
        attributes += attrs
    return torch.cat(means), torch.cat(logvars), torch.cat(masks), attributes


def train_controlnet(
    out_dir="runs/controlnet",
    recipe: ControlNetRecipe | None = None,
    base=None,
    resume=False,
    progress=True,
    device="cpu",
    threads: int | None = None,
) -> Path:
    """Train a ControlNet for the model in `base` (default: the shipped one), all of which stays frozen.

    Writes <out_dir>/controlnet/ (loss.csv, checkpoint) and <out_dir>/weights/ (controlnet.safetensors +
    manifest.json, loadable with `ControlNet.from_pretrained(<out_dir>/weights)`). Returns the weights folder.
    """
    recipe = recipe or ControlNetRecipe()
    out_dir, weights, base, threads = run_folders(out_dir, base, threads)
    device = torch.device(device)
    t0, cpu0 = time.perf_counter(), time.process_time()
    # 1. The frozen model, hash-checked, and a bank of latents with their masks, encoded once.
    frozen = load_pretrained(base, device=device)
    unet = frozen.unet.requires_grad_(False)
    text_encoder = frozen.text_encoder.requires_grad_(False)
    means, logvars, masks, attributes = encode_bank_with_masks(frozen.vae, recipe.bank, recipe.seed + 2, device)
    bank = LatentBank(means, torch.exp(0.5 * logvars), attributes, float(frozen.vae.scale_factor))
    bank_seconds, bank_cpu_seconds = time.perf_counter() - t0, time.process_time() - cpu0
    # 2. The ControlNet: the UNet's encoder copied, the condition network seeded by the recipe.
    controlnet = build_seeded(lambda: ControlNetModel.from_unet(unet), recipe.seed, "controlnet").to(device)

    def loss_fn(model, generator):
        # 1-2. Latents z_0 (B, 4, 8, 8) of random bank images (masks[index] are theirs); captions, some "".
        index, z0, captions = bank.batch(recipe.batch_size, generator, recipe.p_full, recipe.p_drop, recipe.p_uncond)
        with torch.no_grad():
            cond = text_encoder(frozen.tokenizer(captions, device=device))  # (B, L, D), frozen
        # 3. The noise-prediction loss of the frozen UNet steered by the ControlNet.
        return noise_prediction_loss(
            ControlledUNet(unet, model, masks[index]), z0, frozen.schedule, generator, cond=cond
        )

    run = train(
        controlnet,
        loss_fn,
        recipe.train,
        out_dir / "controlnet",
        resume=resume,
        desc="ControlNet",
        progress=progress,
        settings={k: v for k, v in asdict(recipe).items() if k != "train"},
    )
    info = {**training_info(run, bank_seconds, bank_cpu_seconds), "bank_seconds": bank_seconds}
    save_component(run.ema_model, "controlnet", weights, {"training": info})
    record_run(weights, recipe, base, ("unet",), threads, info, model=MODEL_NAME)
    return weights
