"""Memorisation: does a model regurgitate its training images? The extraction attack, measured.

Carlini et al. 2023 ("Extracting Training Data from Diffusion Models", arXiv 2301.13188; the rule of
their experiments on CIFAR-10 models) generate many images, and call a generation x^ *extracted* when
it is much closer to one training image than to the training images around it:

    l2(a, b)        = sqrt(mean over pixels of (a - b)^2)                      (images in [0, 1])
    score(x^)       = l2(x^, x_1) / (alpha * mean_{y in S} l2(x^, y))          (`extraction_scores`)
    extracted(x^)   = score(x^) < 1

where x_1 is the nearest training image and S the n nearest (n = 50, alpha = 0.5 here, the values
public reimplementations of the rule use; n is capped at the training-set size). The relative
threshold is meant to separate a copy (much closer to one training image than to the others) from an
image that merely looks like its class.

The shapes world is denser than CIFAR-10: 12 000 training images hold about 75 of each full caption,
differing only by a sub-pixel jitter, so a fresh world image (one no model made) usually has a
training twin far closer than its 50 neighbours, and the fixed alpha = 0.5 flags it too. So the
rule is calibrated as membership tests are (Carlini et al. 2022, "Membership inference attacks from
first principles", abstract: report the true-positive rate at low false-positive rates): fresh world
images with the same captions, which cannot be copies, are the control, and a generation counts as
extracted when its score is below the control's 1% quantile (`calibrated_extraction`): 1% false positives.

Here the same shipped recipe trains two UNets (`sdedu.training.memorisation_recipe`): the
shipped one on 12 000 images of the procedural world, and a memorising one on 32 fixed images.
Each is prompted with the captions of its first 32 training images (an attacker who knows the
training captions), and, as a control, fresh world images with the same captions (new jitter of size
and position: images that cannot be copies) go through the same rule: its false-positive rate here.

    memorising_pipeline()                            the 32-image model (shipped, `sdedu/weights/memorise`)
    training_set(recipe)                             the exact images and captions a recipe's UNet saw
    extraction_attack(pipe, recipe, per_caption=8)   generations, scores, the control, as one dict
    memorisation_row(model, recipe, result)          one row of the table: the privacy point
    memorisation_table(shipped, memorising)          the table, both models
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sdedu._checks import check_int_range, check_number_range, describe
from sdedu.data import shapes
from sdedu.training.memorisation_recipe import memorising_recipe
from sdedu.training.recipe_config import Recipe
from sdedu.training.recipe_data import bank_images
from sdedu.weights import SHIPPED, load_component, read_manifest

MEMORISING_WEIGHTS = SHIPPED / "memorise"  # the UNet of `memorising_recipe()`, trained on the shipped VAE and text
NEIGHBOURS = 50  # n of Carlini et al.'s rule
ALPHA = 0.5  # alpha of Carlini et al.'s rule


def _check_images(name: str, images) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] < 1:
        raise ValueError(f"{name} must be a (N >= 1, C, H, W) tensor of images in [0, 1]; got {describe(images)}")
    return images.detach().float().cpu().flatten(1)


def l2_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The rule's l2, as a root mean squared pixel difference, (N, C, H, W) x (M, C, H, W) -> (N, M)."""
    a, b = _check_images("a", a), _check_images("b", b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must be images of the same size; got {a.shape[1]} and {b.shape[1]} values each")
    return torch.cdist(a.double(), b.double()).float() / a.shape[1] ** 0.5


@dataclass
class Extraction:
    """The extraction rule applied to G images: per image, its nearest training image and the verdict."""

    nearest: torch.Tensor  # (G,) index of the nearest training image
    distance: torch.Tensor  # (G,) l2 to it
    score: torch.Tensor  # (G,) l2(x^, x_1) / (alpha * mean l2 to the n nearest)
    extracted: torch.Tensor  # (G,) bool, score < 1

    @property
    def rate(self) -> float:
        """The share of images extracted."""
        return float(self.extracted.float().mean())


def extraction_scores(generated, training, neighbours: int = NEIGHBOURS, alpha: float = ALPHA) -> Extraction:
    """Carlini et al.'s extraction rule for generated (G, C, H, W) against training (N, C, H, W) images."""
    check_int_range("neighbours", neighbours, 1, 10**9)
    check_number_range("alpha", alpha, 0.0, 10.0)
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0; got {alpha}")
    distances = l2_distances(generated, training)  # (G, N)
    near = distances.topk(min(neighbours, distances.shape[1]), dim=1, largest=False)  # ascending
    score = near.values[:, 0] / (alpha * near.values.mean(dim=1)).clamp_min(1e-12)
    return Extraction(near.indices[:, 0], near.values[:, 0], score, score < 1)


def calibrated_threshold(control: Extraction, false_positive_rate: float = 0.01) -> float:
    """The score below which `false_positive_rate` of the control (images that cannot be copies) falls."""
    check_number_range("false_positive_rate", false_positive_rate, 0.0, 1.0)
    return float(torch.quantile(control.score.double(), false_positive_rate))


def calibrated_extraction(attack: Extraction, control: Extraction, false_positive_rate: float = 0.01) -> torch.Tensor:
    """(G,) bool: generations whose score is below `calibrated_threshold` (module docstring)."""
    return attack.score < calibrated_threshold(control, false_positive_rate)


def training_set(recipe: Recipe) -> tuple[torch.Tensor, list[str], list[dict]]:
    """The images the recipe's UNet was trained on (its latent bank, `parts.train_unet`): images, captions, attributes.

    The bank is drawn from seed recipe.seed + 2, as `parts.train_unet` draws it; the UNet saw these
    images (through the VAE) with full or partial captions; the full captions are returned.
    """
    batches = list(bank_images(recipe.latent_bank, recipe.seed + 2))
    attributes = [a for _, attrs in batches for a in attrs]
    return torch.cat([images for images, _ in batches]), [shapes.caption(a) for a in attributes], attributes


def memorising_pipeline(device="cpu", path=None):
    """The shipped pipeline with its UNet replaced by the memorising one (trained on 32 images).

    Raises WeightsError if the folder's manifest names another VAE or text encoder than the shipped ones.
    """
    from sdedu.pipeline import TinyStableDiffusion
    from sdedu.weights import WeightsError

    path = MEMORISING_WEIGHTS if path is None else path
    pipe = TinyStableDiffusion.from_pretrained(device=device)
    shipped, base = read_manifest(SHIPPED)["components"], read_manifest(path).get("base", {})
    for name in ("vae", "text_encoder"):
        if base.get(name, {}).get("sha256") != shipped[name]["sha256"]:
            raise WeightsError(f"{path}: manifest base.{name}.sha256 does not name the shipped {name}")
    pipe.unet = load_component("unet", path, device)
    unet_entry = read_manifest(path)["components"]["unet"]
    pipe.manifest = {  # what provenance metadata names: this UNet's file and sha256
        **pipe.manifest,
        "model": "TinyStableDiffusion (memorising: 32 training images)",
        "components": {**pipe.manifest["components"], "unet": unet_entry},
    }
    return pipe


@torch.no_grad()
def extraction_attack(pipe, recipe: Recipe, prompts_from: int = 32, per_caption: int = 8, steps: int = 25, seed=0):
    """Generate `per_caption` images for each of the first `prompts_from` training captions; apply the rule.

    The control: fresh world images with the same captions (same attributes, new jitter), which cannot be
    copies, scored the same way. Returns a dict: generated (G, 3, 32, 32), prompts, training images and their
    full captions, `Extraction` of the generations ("attack") and of the control ("control").
    """
    check_int_range("prompts_from", prompts_from, 1, 10**6)
    check_int_range("per_caption", per_caption, 1, 10**6)
    training, captions, attributes = training_set(recipe)
    prompts = captions[:prompts_from]
    generated = pipe(prompts, num_inference_steps=steps, seed=seed, num_images_per_prompt=per_caption).cpu()
    fresh_attributes = [a for a in attributes[:prompts_from] for _ in range(per_caption)]  # prompt-major, as above
    fresh = shapes.render(fresh_attributes, generator=torch.Generator().manual_seed(seed + 1))
    return {
        "generated": generated,
        "prompts": [p for p in prompts for _ in range(per_caption)],
        "training": training,
        "training_captions": captions,
        "attack": extraction_scores(generated, training),
        "control": extraction_scores(fresh, training),
    }


def memorisation_row(model: str, recipe: Recipe, result: dict) -> dict:
    """One row of the table for an `extraction_attack` result: the l2 medians, the rule's flags, what is extracted."""
    attack, control = result["attack"], result["control"]
    extracted = calibrated_extraction(attack, control)
    return {
        "model": model,
        "training images": recipe.latent_bank,
        "generations": len(result["generated"]),
        "median l2 to nearest: generations": float(attack.distance.median()),
        "median l2 to nearest: fresh images": float(control.distance.median()),
        "fixed-alpha rule flags: generations": attack.rate,
        "fixed-alpha rule flags: fresh images": control.rate,
        "extracted at 1% false positives": float(extracted.float().mean()),
        "distinct training images extracted": int(attack.nearest[extracted].unique().numel()),
    }


def memorisation_table(shipped_pipe, memorising_pipe, per_caption: int = 8, steps: int = 25, seed=0) -> list[dict]:
    """`memorisation_row` of the shipped and the memorising model, each attacked with its first 32 training captions.

    Each model is compared with all of its own training images (12 000 for the shipped model, 32 for the other).
    """
    models = {
        "shipped (procedural world)": (shipped_pipe, Recipe()),
        "memorising (32 fixed images)": (memorising_pipe, memorising_recipe()),
    }
    prompts = memorising_recipe().latent_bank
    return [
        memorisation_row(name, recipe, extraction_attack(pipe, recipe, prompts, per_caption, steps, seed))
        for name, (pipe, recipe) in models.items()
    ]
