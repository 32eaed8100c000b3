"""The recipe that trains sdedu's tiny Stable Diffusion from scratch on a CPU, in three parts.

    1. VAE            images -> 8x8x4 latents and back; then the latent scale factor
    2. text encoder   contrastive (CLIP-style) pretraining against a tiny image encoder
    3. UNet           eps-prediction on scaled latents, conditioned on the frozen text encoder

This is Stable Diffusion's order: the autoencoder and the text encoder are trained first and
frozen (SD took CLIP ready-made), then the diffusion model learns in their latent space.
`train_all` runs the three, measures each (PSNR, retrieval accuracy, prompt adherence) and
writes safetensors files plus a manifest (`sdedu.weights`) into `<out>/weights`.

Data: the shapes world, drawn fresh for every step from a generator seeded with
(seed, step), with the held-out (colour, shape) pairs excluded. Captions are full with
probability `p_full`, otherwise each attribute is dropped independently with probability
`p_drop`, so partial prompts ("a red shape") are learnt with every shape equally often; then
conditioning dropout replaces a caption by "" with probability `p_uncond` so that one network
learns both eps(z_t, t, cond) and eps(z_t, t, "") for classifier-free guidance (Ho & Salimans 2022).

Small batches, many steps: at a fixed CPU budget, more updates beat bigger batches here. The
VAE reached 36 dB with 3000 steps of 8 images against 29 dB with 800 steps of 32 (the same
images seen), and judged shapes in its reconstructions went from 77% to 99.6% right; the UNet
followed shapes in 99-100% of full prompts with 3000 steps of 64 against 93% with 1300 of 128.

Speed: the UNet never sees pixels. Before it trains, a bank of images is encoded once by the
frozen VAE (means and log-variances); each step draws latents from it (z = mean + std * eps,
a fresh sample each time, as SD samples the posterior) and fresh partial captions.

Where things are: `recipe_config` (the `Recipe` settings, seeded initialisation), `recipe_data`
(images and captions), `parts` (the three training runs), `evaluation` (what is measured);
this module runs them in order and writes the weights (`train_all`).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import torch

from sdedu.models.text_encoder import Tokenizer
from sdedu.training.evaluation import evaluate_generation
from sdedu.training.loop import set_threads
from sdedu.training.parts import encode_bank, train_text_encoder, train_unet, train_vae
from sdedu.training.recipe_config import PARTS, Recipe, per_rank_recipe
from sdedu.training.recipe_data import captions_for, matches
from sdedu.weights import load_component, save_component, update_manifest

__all__ = [
    "PARTS",
    "Recipe",
    "captions_for",
    "encode_bank",
    "evaluate_generation",
    "matches",
    "per_rank_recipe",
    "train_all",
    "train_text_encoder",
    "train_unet",
    "train_vae",
]


def train_all(
    out_dir="runs/tiny-sd",
    recipe: Recipe | None = None,
    resume=False,
    progress=True,
    device="cpu",
    threads: int | None = None,
    evaluate: bool = True,
    parts=PARTS,
    distributed=None,
) -> Path:
    """Run the recipe (or some of its parts), save the weights and manifest in <out_dir>/weights.

    Parts not in `parts` are loaded from <out_dir>/weights (they must have been trained before).
    distributed: a `DistributedContext` (torchrun): each rank trains on its share of every batch
    (the recipe's batch sizes are global), and only rank 0 writes weights, manifest and logs.
    Returns the weights folder, loadable with `sdedu.weights.load_pretrained(path)`.
    """
    recipe = recipe or Recipe()
    threads = set_threads(threads)
    main = distributed is None or distributed.is_main
    world_size = distributed.world_size if distributed is not None else 1
    out_dir = Path(out_dir)
    weights = out_dir / "weights"
    if main:
        update_manifest(
            weights,
            recipe=asdict(recipe),
            seed=recipe.seed,
            threads=threads,
            schedule=recipe.schedule.to_dict(),
            tokenizer={"max_length": recipe.text.max_length},
            torch_version=torch.__version__,
            world_size=world_size,
        )
    recipe = per_rank_recipe(recipe, world_size, parts)  # each rank's share of every batch
    timings, cpu = {}, {}  # wall-clock and CPU seconds per part

    def keep(name, model, info):
        if main:
            save_component(model, name, weights, {"training": info})
        timings[name], cpu[name] = info["train_seconds"], info["cpu_seconds"]
        return model

    frozen = {}  # the VAE and text encoder: trained now, or those in <out_dir>/weights for the UNet
    for part, name, train_part in (("vae", "vae", train_vae), ("text", "text_encoder", train_text_encoder)):
        if part in parts:
            frozen[name] = keep(name, *train_part(recipe, out_dir, resume, progress, device, distributed))
        elif "unet" in parts:
            frozen[name] = load_component(name, weights, device)
    if "unet" in parts:
        vae, text_encoder = frozen["vae"], frozen["text_encoder"]
        unet = keep(
            "unet",
            *train_unet(recipe, vae, text_encoder, out_dir, resume, progress, device, distributed, evaluate=evaluate),
        )
        if evaluate and main:
            from sdedu.pipeline import TinyStableDiffusion

            t0 = time.perf_counter()
            pipe = TinyStableDiffusion(
                Tokenizer(max_length=recipe.text.max_length),
                text_encoder,
                vae,
                unet,
                recipe.schedule.build(),
                device=device,
            )
            update_manifest(weights, metrics=evaluate_generation(pipe), evaluation_seconds=time.perf_counter() - t0)
    if not main:
        return weights
    manifest = update_manifest(weights)
    for key, new in (("training_seconds", timings), ("training_cpu_seconds", cpu)):
        recorded = manifest.get(key, {})
        recorded.update(new)
        recorded["total"] = sum(v for k, v in recorded.items() if k != "total")
        update_manifest(weights, **{key: recorded})
    return weights
