"""The pipeline's argument checks: prompts, images, masks, latents and settings.

Each fails with a message naming the argument, what was expected and what was given. Images and
latents may be any floating dtype (they are converted to float32) but must be finite; numpy
arrays are refused by name (convert them with `torch.from_numpy`).
"""

from __future__ import annotations

import torch

from sdedu._checks import check_finite, check_int_range, check_number_range, check_tensor, describe


def check_prompts(prompt) -> list[str]:
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, (list, tuple)) and prompt and all(isinstance(p, str) for p in prompt):
        return list(prompt)
    raise TypeError(f"prompt must be a str or a non-empty list of str; got {describe(prompt)}")


def check_negative_prompt(negative_prompt, batch: int) -> list[str] | None:
    """None, a str (for every prompt) or a list of `batch` str (one per prompt) -> None or `batch` str.

    As diffusers' `encode_prompt`: a list must match the prompts one to one.
    """
    if negative_prompt is None:
        return None
    if isinstance(negative_prompt, str):
        return [negative_prompt] * batch
    if not (isinstance(negative_prompt, (list, tuple)) and all(isinstance(p, str) for p in negative_prompt)):
        raise TypeError(f"negative_prompt must be None, a str or a list of str; got {describe(negative_prompt)}")
    if len(negative_prompt) != batch:
        raise ValueError(
            f"negative_prompt must be one str or one per prompt ({batch}); got {len(negative_prompt)} negative prompts"
        )
    return list(negative_prompt)


def tokenize_with_negatives(tokenizer, prompts: list[str], negatives: list[str] | None, device) -> torch.Tensor:
    """Ids of the B prompts, then of the unconditional branch: "" once (negatives None) or the B negatives.

    Returns (B + 1, L) or (2B, L); a negative prompt with unknown words fails naming negative_prompt.
    """
    if negatives is None:
        return tokenizer(prompts + [""], device=device)
    try:
        negative_ids = tokenizer(negatives, device=device)  # (B, L)
    except ValueError as error:
        raise ValueError(f"negative_prompt: {error}") from None
    return torch.cat([tokenizer(prompts, device=device), negative_ids])


def repeat_prompts(prompts: list[str], n: int) -> list[str]:
    """Each prompt n times, prompt-major."""
    check_int_range("num_images_per_prompt", n, 1, 10_000)
    return [p for p in prompts for _ in range(n)]


def check_batch(name: str, value, shape: tuple, unit: str) -> torch.Tensor:
    """A finite float32 tensor (B, *shape) with B >= 1; a single (*shape) gets a batch dimension."""
    check_tensor(name, value, floating=True)
    if value.ndim == len(shape):
        value = value.unsqueeze(0)
    expected = ", ".join(str(s) for s in shape)
    if value.ndim != len(shape) + 1 or tuple(value.shape[1:]) != tuple(shape):
        raise ValueError(f"{name} must have shape (B, {expected}) or ({expected}) ({unit}); got {describe(value)}")
    if value.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one {unit} (B >= 1); got {describe(value)}")
    check_finite(name, value)
    return value.float()


def check_latents(latents, shape: tuple, batch: int, device) -> torch.Tensor:
    """Given starting latents z_T: a finite float tensor (batch, *shape) (one (*shape) is a batch of 1)."""
    latents = check_batch("latents", latents, shape, "latent")
    if latents.shape[0] != batch:
        raise ValueError(f"latents must hold one latent per image ({batch}); got {describe(latents)}")
    return latents.to(device)


def check_images(name: str, images, channels: int, size: int) -> torch.Tensor:
    """Images (B, channels, size, size) or (channels, size, size) in [0, 1] -> float32 (B, ...)."""
    images = check_batch(name, images, (channels, size, size), "image")
    low, high = float(images.min()), float(images.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(f"{name} must have values in [0, 1]; got values in [{low:.3g}, {high:.3g}]")
    return images


def check_mask(mask, size: int) -> torch.Tensor:
    """A mask (B, 1, H, W), (1, H, W) or (H, W) in [0, 1], any dtype -> float32 (B, 1, H, W)."""
    check_tensor("mask", mask)
    if not mask.is_floating_point():
        mask = mask.float()
    if mask.ndim == 2:
        mask = mask[None, None]
    return check_images("mask", mask, channels=1, size=size)


def match_batch(images: torch.Tensor, prompts: list[str]):
    """Broadcast one image to many prompts or one prompt to many images."""
    if images.shape[0] == len(prompts):
        return images, prompts
    if images.shape[0] == 1:
        return images.expand(len(prompts), -1, -1, -1), prompts
    if len(prompts) == 1:
        return images, prompts * images.shape[0]
    raise ValueError(f"prompt must be one str or one per image ({images.shape[0]}); got {len(prompts)} prompts")


def check_settings(num_inference_steps, guidance_scale, seed, T: int) -> tuple[int, float, int]:
    """(num_inference_steps, guidance_scale, seed), checked.

    The step count's upper rule is the sampler's own (`set_timesteps`): DDPM runs all T steps,
    DDIM with its offset at most T - 1.
    """
    num_inference_steps = check_int_range("num_inference_steps", num_inference_steps, 1, T)
    guidance_scale = check_number_range("guidance_scale", guidance_scale, 0.0)
    seed = check_int_range("seed", seed, 0, 2**63 - 1)
    return num_inference_steps, guidance_scale, seed
