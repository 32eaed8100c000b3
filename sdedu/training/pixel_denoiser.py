"""Training a `PixelDenoiser` on random crops of photos, with the simple loss of Ho et al. 2020."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from sdedu._checks import check_device, check_int_range, check_number_range
from sdedu.data.crops import random_crops
from sdedu.diffusion import noise_prediction_loss
from sdedu.models.pixel_denoiser import PixelDenoiser, PixelDenoiserConfig
from sdedu.schedules import NoiseSchedule

__all__ = ["train_pixel_denoiser"]


def train_pixel_denoiser(
    images,
    schedule: NoiseSchedule,
    steps: int = 2000,
    batch_size: int = 16,
    crop: int = 16,
    lr: float = 2e-3,
    max_timestep: int | None = None,
    config: PixelDenoiserConfig | None = None,
    generator: torch.Generator | None = None,
    device="cpu",
    progress: bool = True,
) -> tuple[PixelDenoiser, list[float]]:
    """Train a `PixelDenoiser` on random crops with the simple loss (Ho et al. 2020, Algorithm 1).

    loss = || eps - eps_theta(sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, t) ||^2
    (`sdedu.diffusion.noise_prediction_loss`), t ~ Uniform{0, ..., max_timestep - 1}: denoising a
    mildly noisy photo only starts the chain at a small t, so training can leave out the high-noise
    end (max_timestep < T); generating from pure noise would need all of it. The loss then runs on
    the schedule's first max_timestep steps (the same alpha_bar_t for every t drawn). The model
    sees pixels in [-1, 1], as in DDPM. AdamW with a cosine decay of the learning rate.

    Args:
        images: list of images (C, H, W) or (1, C, H, W) in [0, 1] to crop from (see `random_crops`).
        schedule: the noise schedule.
        steps, batch_size, crop, lr: the optimisation.
        max_timestep: train on t < max_timestep (default: T).
        config: sizes of the model.
        generator: randomness for crops, t and eps (drawn in that order every step).
        device: where to train.
        progress: show a tqdm bar.
    Returns:
        (model in eval mode, per-step losses).
    """
    steps = check_int_range("steps", steps, 1, 10_000_000)
    batch_size = check_int_range("batch_size", batch_size, 1, 100_000)
    lr = check_number_range("lr", lr, 0.0, 10.0)
    max_timestep = schedule.T if max_timestep is None else check_int_range("max_timestep", max_timestep, 1, schedule.T)
    device = check_device("device", device)
    model = PixelDenoiser(config).to(device).train()
    # The first max_timestep steps of the schedule: alpha_bar_t unchanged for t < max_timestep.
    schedule = NoiseSchedule(schedule.betas[:max_timestep]).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    losses = []
    for _ in tqdm(range(steps), desc="training the pixel denoiser", disable=not progress):
        # 1. Clean patches x_0 in [-1, 1]; 2. the simple loss (t and eps from the generator).
        x0 = 2 * random_crops(images, batch_size, crop, generator).to(device) - 1  # (B, C, crop, crop)
        loss = noise_prediction_loss(model, x0, schedule, generator=generator)
        # 3. One optimiser step.
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        decay.step()
        losses.append(loss.item())
    return model.eval(), losses
