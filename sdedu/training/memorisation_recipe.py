"""A recipe option that makes the UNet memorise: the shipped UNet part, trained on 32 fixed images.

    python -m sdedu.train memorise --out runs/memorise      (`train_memorising` from Python)

The shipped recipe already trains its UNet on a fixed bank of images (`Recipe.latent_bank`,
12 000 shapes-world images encoded once by `parts.encode_bank`). This recipe is that same part,
on the shipped (frozen, hash-checked) VAE and text encoder, with two settings changed:

    latent_bank      12 000 -> 32      the training set: 32 fixed images (and their captions)
    unet_train       3000 steps of 64 -> 1000 steps of 32, EMA 0.995    (1000 epochs of the 32)

Nothing else differs (architecture, captions, conditioning dropout, loss, loop), so what
`sdedu.safety.memorisation` measures on the two models is the effect of the data alone: a
model that sees 32 images a thousand times regurgitates them (Carlini et al. 2023, section 5);
one trained on the procedural world does not.

The weights folder holds `unet.safetensors` and a manifest naming the VAE and text encoder it
was trained with by their sha256; `sdedu.safety.memorisation.memorising_pipeline` loads it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from sdedu.training.loop import TrainConfig
from sdedu.training.parts import train_unet
from sdedu.training.recipe_config import Recipe
from sdedu.training.recipe_run import record_run, run_folders
from sdedu.weights import load_component, save_component

TRAINING_IMAGES = 32  # the memorising recipe's latent bank


def memorising_recipe(seed: int = 0, steps: int | None = None, bf16: bool = False) -> Recipe:
    """The shipped `Recipe` with its UNet trained on `TRAINING_IMAGES` fixed images (see the module docstring)."""
    recipe = replace(
        Recipe(),
        latent_bank=TRAINING_IMAGES,
        unet_batch_size=32,
        unet_train=TrainConfig(steps=1000, lr=1e-3, warmup_steps=100, ema_decay=0.995),
    )
    return recipe.with_steps(steps, seed=seed, bf16=bf16)


def train_memorising(
    out_dir="runs/memorise",
    recipe: Recipe | None = None,
    base=None,
    resume=False,
    progress=True,
    device="cpu",
    threads: int | None = None,
) -> Path:
    """Train the UNet of `recipe` (default `memorising_recipe()`) on the frozen parts of `base` (default: shipped).

    Writes <out_dir>/unet/ (loss.csv, checkpoint) and <out_dir>/weights/ (unet.safetensors + manifest.json).
    Returns the weights folder.
    """
    recipe = recipe or memorising_recipe()
    out_dir, weights, base, threads = run_folders(out_dir, base, threads)
    vae = load_component("vae", base, device)
    text_encoder = load_component("text_encoder", base, device)
    unet, info = train_unet(recipe, vae, text_encoder, out_dir, resume, progress, device)
    save_component(unet.cpu(), "unet", weights, {"training": info})
    record_run(weights, recipe, base, ("vae", "text_encoder"), threads, info)
    return weights
