"""The recipe for the safety checker's image embedding: an image tower trained against the *frozen* text tower.

Stable Diffusion's safety checker (diffusers, pipelines/stable_diffusion/safety_checker.py) embeds an
image with CLIP's vision tower and compares it, by cosine, with the embeddings of a list of concepts:
image and concepts live in one joint space because CLIP trained both towers together. sdedu has no
CLIP, but it has half of one: the shipped text encoder was pretrained contrastively (`text_encoder.py`)
and its pooled, projected <end> state is a point in a 64-d joint space. This recipe trains a fresh
`ImageEncoder` into that space with the same multi-positive CLIP loss (`ContrastiveModel.loss`) while
the text tower stays frozen (LiT, Zhai et al. 2022, locks one tower and tunes the other; here the
locked one is the text tower, so every concept a teacher can type already has its embedding).

Images: fresh shapes-world images, and with probability `p_vae` per batch the same images round-tripped
through the shipped VAE (encode, decode the posterior mean), because generated images are VAE decodes:
softer edges and rounded corners. The course judge is never used: labels come from the renderer.

    python -m sdedu.train checker      # writes runs/checker/weights/{image_encoder.safetensors, manifest.json}
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

from sdedu._checks import check_int_range, check_number_range
from sdedu.models.text_encoder import ContrastiveModel, Tokenizer
from sdedu.training.loop import TrainConfig, train
from sdedu.training.recipe_config import build_seeded
from sdedu.training.recipe_data import captions_for, draw_images, matches
from sdedu.training.recipe_run import record_run, run_folders, training_info
from sdedu.weights import SHIPPED, load_component, save_component

#: Where the shipped checker embedding lives (beside the shipped SD and SD3 weights).
CHECKER_WEIGHTS = SHIPPED / "safety_checker"


@dataclass
class CheckerRecipe:
    """Settings of the image tower's training run.

    steps, batch_size, lr: the optimisation (AdamW, warm-up then cosine, EMA as in `TrainConfig`).
    channels: the tower's first conv width.   p_vae: share of batches round-tripped through the VAE.
    p_full, p_drop: caption sampling, as in the main recipe (`captions_for`).   seed: everything's seed.
    """

    steps: int = 300
    batch_size: int = 64
    lr: float = 2e-3
    channels: int = 32
    p_vae: float = 0.5
    p_full: float = 0.3
    p_drop: float = 0.5
    seed: int = 0

    def __post_init__(self):
        check_int_range("steps", self.steps, 1, 10**7)
        check_int_range("batch_size", self.batch_size, 2, 10**5)
        check_number_range("lr", self.lr, 0.0)
        check_int_range("channels", self.channels, 1, 4096)
        for name in ("p_vae", "p_full", "p_drop"):
            check_number_range(name, getattr(self, name), 0.0, 1.0)


@torch.no_grad()
def vae_round_trip(vae, images: torch.Tensor) -> torch.Tensor:
    """images (B, 3, 32, 32) in [0, 1] -> the VAE's decode of their posterior means, clamped to [0, 1]."""
    mean, _ = vae.encode(images)
    return vae.decode(mean).clamp(0.0, 1.0)


def train_checker_encoder(
    out_dir="runs/checker", recipe: CheckerRecipe | None = None, base=None, progress=True, threads: int | None = None
):
    """Train the image tower against the frozen text encoder of `base`; write it to <out_dir>/weights.

    Args:
        out_dir: run folder (loss.csv, checkpoint, weights/).
        recipe: `CheckerRecipe` (default settings when None).
        base: the weights folder whose text encoder and VAE are used (None: the shipped ones).
        progress: show a progress bar.
        threads: torch CPU threads (None: $SDEDU_THREADS, else $OMP_NUM_THREADS, else 1).
    Returns:
        the weights folder, loadable with `sdedu.safety.checker.load_image_encoder(path)`.
    """
    recipe = recipe or CheckerRecipe()
    out_dir, weights, base, threads = run_folders(out_dir, base, threads)
    text_encoder = load_component("text_encoder", base).requires_grad_(False)
    vae = load_component("vae", base).requires_grad_(False)
    tokenizer = Tokenizer(max_length=text_encoder.config.max_length)
    model = build_seeded(lambda: ContrastiveModel(text_encoder, recipe.channels), recipe.seed, "checker")

    def loss_fn(model, generator):
        images, attributes = draw_images(recipe.batch_size, generator)
        if torch.rand((), generator=generator) < recipe.p_vae:
            images = vae_round_trip(vae, images)
        captions, named = captions_for(attributes, generator, recipe.p_full, recipe.p_drop)
        return model.loss(images, tokenizer(captions), matches(attributes, named))

    config = TrainConfig(steps=recipe.steps, lr=recipe.lr, warmup_steps=min(50, recipe.steps // 10), seed=recipe.seed)
    t0 = time.perf_counter()
    run = train(
        model,
        loss_fn,
        config,
        out_dir / "checker",
        desc="checker image tower",
        progress=progress,
        parameters=[*model.image_encoder.parameters(), model.logit_scale],
        settings={"checker": asdict(recipe)},
    )
    command = f"OMP_NUM_THREADS=1 python -m sdedu.train checker --seed {recipe.seed}"
    record_run(weights, recipe, base, ("text_encoder", "vae"), threads, command=command)
    info = {
        **training_info(run),
        "logit_scale": float(run.ema_model.logit_scale.exp()),
        "wall_seconds": time.perf_counter() - t0,
    }
    save_component(run.ema_model.image_encoder.eval(), "image_encoder", weights, {"training": info})
    return weights
