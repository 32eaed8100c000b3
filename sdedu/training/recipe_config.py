"""Every setting of the from-scratch recipe, one typed field each (recorded in the weights manifest).

The recipe's seed is the only source of randomness: each part's initial weights come from
`build_seeded(make, seed, part)`, each training step's data and noise from the loop's
`step_generator(seed, step)`, the latent bank and the scale-factor images from seed + 2 and seed + 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from sdedu._checks import check_int_range, check_number_range
from sdedu.models.text_encoder import TextEncoderConfig
from sdedu.models.unet import UNetConfig
from sdedu.models.vae import VAEConfig
from sdedu.schedules import ScheduleConfig
from sdedu.training.distributed import local_batch_size
from sdedu.training.loop import TrainConfig
from sdedu.training.recipe_run import run_config

EVAL_SEED = 10_000  # evaluation images come from seeds no training step uses
# Each part's initial weights: seed * 1_000_003 + offset (sd3: the tiny SD3's MM-DiT, sdedu.training.sd3_recipe;
# controlnet: the ControlNet's condition network, sdedu.training.controlnet_recipe).
INIT_SEED_OFFSETS = {"vae": 101, "text": 102, "unet": 103, "sd3": 104, "controlnet": 105, "checker": 107}
PARTS = ("vae", "text", "unet")  # in the order they train


@dataclass
class Recipe:
    """Every setting of the from-scratch recipe (recorded in the weights manifest)."""

    seed: int = 0
    # 1. VAE
    vae: VAEConfig = field(default_factory=VAEConfig)
    vae_train: TrainConfig = field(
        default_factory=lambda: TrainConfig(steps=3000, lr=2e-3, warmup_steps=50, ema_decay=0.995)
    )
    vae_batch_size: int = 8
    scale_factor_images: int = 2000
    # 2. text encoder
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    text_train: TrainConfig = field(
        default_factory=lambda: TrainConfig(steps=300, lr=2e-3, warmup_steps=30, ema_decay=0.0)
    )
    text_batch_size: int = 256
    # 3. UNet
    unet: UNetConfig = field(default_factory=UNetConfig)
    unet_train: TrainConfig = field(
        default_factory=lambda: TrainConfig(steps=3000, lr=1e-3, warmup_steps=100, ema_decay=0.999)
    )
    unet_batch_size: int = 64
    latent_bank: int = 12_000
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    # captions
    p_full: float = 0.5
    p_drop: float = 0.5
    p_uncond: float = 0.1

    def __post_init__(self):
        check_int_range("recipe.seed", self.seed, 0, 2**40)
        if self.unet.num_train_timesteps != self.schedule.T:
            raise ValueError(
                f"recipe.unet.num_train_timesteps ({self.unet.num_train_timesteps}) must equal recipe.schedule.T "
                f"({self.schedule.T}): the UNet embeds the timesteps of the schedule it is trained on"
            )
        if self.unet.context_dim != self.text.width:
            raise ValueError(
                f"recipe.unet.context_dim ({self.unet.context_dim}) must equal recipe.text.width ({self.text.width}): "
                "the UNet cross-attends to the text encoder's token embeddings"
            )
        check_int_range("recipe.vae_batch_size", self.vae_batch_size, 1, 10**9)
        check_int_range("recipe.scale_factor_images", self.scale_factor_images, 1, 10**9)
        check_int_range("recipe.text_batch_size", self.text_batch_size, 1, 10**9)
        check_int_range("recipe.unet_batch_size", self.unet_batch_size, 1, 10**9)
        check_int_range("recipe.latent_bank", self.latent_bank, 1, 10**9)
        check_number_range("recipe.p_full", self.p_full, 0.0, 1.0)
        check_number_range("recipe.p_drop", self.p_drop, 0.0, 1.0)
        check_number_range("recipe.p_uncond", self.p_uncond, 0.0, 1.0)

    def with_steps(self, steps: int | None = None, seed: int | None = None, bf16: bool = False) -> Recipe:
        """A copy with every part's step count set to `steps` (for smoke runs), seed and bf16 set."""
        seed = self.seed if seed is None else seed
        return replace(
            self,
            seed=seed,
            vae_train=run_config(self.vae_train, steps, seed, bf16),
            text_train=run_config(self.text_train, steps, seed, bf16),
            unet_train=run_config(self.unet_train, steps, seed, bf16),
        )


def per_rank_recipe(recipe: Recipe, world_size: int, parts=PARTS) -> Recipe:
    """The recipe each of `world_size` data-parallel ranks runs: the batches of `parts` divided by it.

    Raises ValueError when the world size does not divide a global batch size.
    """
    if world_size == 1:
        return recipe

    def share(batch_size: int, name: str, part: str) -> int:
        return local_batch_size(batch_size, world_size, name) if part in parts else batch_size

    return replace(
        recipe,
        vae_batch_size=share(recipe.vae_batch_size, "vae_batch_size", "vae"),
        text_batch_size=share(recipe.text_batch_size, "text_batch_size", "text"),
        unet_batch_size=share(recipe.unet_batch_size, "unet_batch_size", "unet"),
    )


def build_seeded(make, seed: int, part: str):
    """`make()` run under torch's global RNG seeded from (seed, part), then the RNG restored.

    Module constructors draw their initial weights from the global RNG; seeding it here (on the
    CPU, before the module moves to its device) makes a part's initialisation depend only on the
    recipe's seed, whatever ran before and whatever the device.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed) * 1_000_003 + INIT_SEED_OFFSETS[part])
        return make()
