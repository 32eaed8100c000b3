"""The pipeline's editing modes, image to image (SDEdit) and inpainting: `TinyStableDiffusion.img2img`
and `.inpaint` (bound as methods there). Each is a start and a hook on the one loop:

- img2img (Meng et al. 2022): encode the image, noise it with q_sample to the first of the last
  round(strength * n) of the n sampler timesteps, and denoise from there towards the new prompt;
- inpaint (latent blending, as diffusers' legacy inpainting and Avrahami et al. 2023): after every
  step, the latents outside the mask are put back as the original image's latents noised to the
  same timestep, so that only the masked region is generated.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sdedu._checks import check_number_range, describe
from sdedu.diffusion import q_sample, randn_like
from sdedu.pipeline.checks import (
    check_images,
    check_mask,
    check_negative_prompt,
    check_prompts,
    check_settings,
    match_batch,
)
from sdedu.pipeline.loop import DEFAULT_GUIDANCE_SCALE, image_generators, last_timesteps


@torch.no_grad()
def img2img(
    self,
    image: torch.Tensor,
    prompt,
    strength: float = 0.6,
    num_inference_steps: int = 25,
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
    seed: int = 0,
    sampler: str = "ddim",
    eta: float = 0.0,
    return_trajectory: bool = False,
    progress: bool = False,
    negative_prompt=None,
):
    """SDEdit: noise the image part of the way (strength) and denoise it towards the prompt.

    Of the n sampler timesteps only the last round(strength * n) run, starting from
    z_t = q_sample(encode(image), t_start): strength 0 returns the VAE reconstruction of the
    image, strength 1 is text-to-image from (almost) pure noise.

    Args:
        image: (B, 3, 32, 32) or (3, 32, 32) in [0, 1]; one image is used for every prompt.
        prompt: a str or B str (one prompt is used for every image).
        strength: in [0, 1], how much of the chain to run.
        negative_prompt: None, one str, or one per prompt: replaces "" in the unconditional branch.
        other arguments: as for text-to-image.
    Returns:
        images (B, 3, 32, 32) in [0, 1], or a `Trajectory`.
    """
    strength = check_number_range("strength", strength, 0.0, 1.0)
    steps, guidance_scale, seed = check_settings(num_inference_steps, guidance_scale, seed, self.schedule.T)
    image, prompts, negatives = _match(check_images("image", image, 3, self.image_size), prompt, negative_prompt)
    # 1. Timesteps: keep the last round(strength * n) of the n.
    scheduler = self._sampler(sampler, eta, steps)
    timesteps = last_timesteps(scheduler, steps, strength)
    # 2. Encode the image and noise it to the first kept timestep (Ho et al. eq. 4).
    generators = image_generators(seed, len(prompts))
    z = self.encode_images(image)
    if len(timesteps):
        z = q_sample(z, int(timesteps[0]), self.schedule, noise=randn_like(z, generators))
    # 3. Denoise from there; 4. decode.
    return self._run(
        z, scheduler, timesteps, prompts, guidance_scale, generators, return_trajectory, progress, negatives=negatives
    )


@torch.no_grad()
def inpaint(
    self,
    image: torch.Tensor,
    mask: torch.Tensor,
    prompt,
    strength: float = 1.0,
    num_inference_steps: int = 25,
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
    seed: int = 0,
    sampler: str = "ddim",
    eta: float = 0.0,
    keep_unmasked: bool = True,
    return_trajectory: bool = False,
    progress: bool = False,
    negative_prompt=None,
):
    """Repaint the masked region of an image to match the prompt (latent blending).

    A hook after every sampler step to timestep t_prev:
        z = m * z + (1 - m) * q_sample(z0_image, t_prev)        (m: the mask at 8x8)
    so the unmasked latents follow the original image's noisy trajectory and the model fills
    in the rest consistently with them.

    Args:
        image: (B, 3, 32, 32) or (3, 32, 32) in [0, 1].
        mask: (B, 1, 32, 32), (1, 32, 32) or (32, 32) in [0, 1]; 1 = repaint, 0 = keep. A latent
            is repainted when any pixel of its 4x4 patch is.
        prompt: a str or B str: what to paint in the mask.
        strength: in [0, 1], how much of the chain to run (1: the masked region starts as noise).
        keep_unmasked: paste the original pixels outside the mask into the result (the
            latent round trip otherwise blurs them slightly).
        negative_prompt: None, one str, or one per prompt: replaces "" in the unconditional branch.
        other arguments: as for text-to-image.
    Returns:
        images (B, 3, 32, 32) in [0, 1], or a `Trajectory`.
    """
    strength = check_number_range("strength", strength, 0.0, 1.0)
    steps, guidance_scale, seed = check_settings(num_inference_steps, guidance_scale, seed, self.schedule.T)
    image = check_images("image", image, 3, self.image_size)
    mask = check_mask(mask, self.image_size)
    image, prompts, negatives = _match(image, prompt, negative_prompt)
    if mask.shape[0] not in (1, image.shape[0]):
        raise ValueError(f"mask must have batch size 1 or {image.shape[0]} (as image); got {describe(mask)}")
    mask = mask.expand(image.shape[0], -1, -1, -1).to(self.device)  # (B, 1, 32, 32)
    # 1. Timesteps (as in img2img).
    scheduler = self._sampler(sampler, eta, steps)
    timesteps = last_timesteps(scheduler, steps, strength)
    # 2. The known latents, the latent mask and one fixed noise for the known region.
    generators = image_generators(seed, len(prompts))
    z0 = self.encode_images(image)
    latent_mask = F.max_pool2d(mask, kernel_size=self.image_size // self.latent_shape[-1])  # (B, 1, 8, 8)
    noise = randn_like(z0, generators)
    z = q_sample(z0, int(timesteps[0]), self.schedule, noise=noise) if len(timesteps) else z0

    def blend(i, t, z, x0_pred):
        # 3. Put back the known region, noised to the timestep the step landed on (z0 after the last).
        last = i + 1 == len(timesteps)
        z_known = z0 if last else q_sample(z0, int(timesteps[i + 1]), self.schedule, noise=noise)
        return latent_mask * z + (1 - latent_mask) * z_known

    # 4. Denoise with the blending hook; 5. decode.
    out = self._run(
        z, scheduler, timesteps, prompts, guidance_scale, generators, return_trajectory, progress, blend, negatives
    )
    if keep_unmasked:
        images = out.images if return_trajectory else out
        images = mask * images + (1 - mask) * image.to(self.device)
        if not return_trajectory:
            return images
        out.images = images
    return out


def _match(image: torch.Tensor, prompt, negative_prompt):
    """(images, prompts, negatives) of one batch: one image for every prompt or one prompt (and its
    negative) for every image (`match_batch`); the negatives are checked against the prompts as given."""
    prompts = check_prompts(prompt)
    negatives = check_negative_prompt(negative_prompt, len(prompts))
    image, matched = match_batch(image, prompts)
    if negatives is not None:
        negatives = negatives * (len(matched) // len(prompts))  # a single prompt's negative, per image
    return image, matched, negatives
