"""DDIM inversion through the one loop: an image's noise z_T, from which DDIM regenerates it.

    z_0 = encode(images)                                   the VAE latent (B, 4, 8, 8), scaled
    for t in DDIMInverseSampler.timesteps:                 DDIM's timesteps in ascending order
        eps = eps_theta(z, t, cond)                        (guided when guidance_scale != 1)
        z = sqrt(alpha_bar_t) x0_pred + sqrt(1 - alpha_bar_t) eps                   (Song et al. 2021, eq. 12 backwards)
    return z                                               z_T

It is `loop.denoise` run with `sdedu.samplers.DDIMInverseSampler`: the loop only iterates the
sampler's timesteps, so the same loop walks the probability-flow ODE from data to noise.
`pipe(prompt, latents=z_T, sampler="ddim", num_inference_steps=n, guidance_scale=w)` with the same n
and w then returns close to the image (exactly, up to the approximation eps(z_t') ~ eps(z_t) made at
every step, t' being the next, noisier timestep; the error shrinks as n grows; Mokady et al. 2023
invert with w = 1 for the same reason: guidance amplifies that error).
"""

from __future__ import annotations

import torch

from sdedu.pipeline.checks import check_images, check_prompts, check_settings, match_batch
from sdedu.pipeline.loop import denoise
from sdedu.samplers import DDIMInverseSampler


@torch.no_grad()
def invert(pipe, images, prompt, num_inference_steps: int = 50, guidance_scale: float = 1.0, progress=False):
    """The noise latents z_T (B, 4, 8, 8) that deterministic DDIM with `prompt` maps to `images`.

    Args:
        pipe: a TinyStableDiffusion.
        images: (B, 3, 32, 32) or (3, 32, 32) in [0, 1].
        prompt: a str or B str (one prompt is used for every image, one image for every prompt).
        num_inference_steps: DDIM steps n, as `DDIMSampler` allows; regenerate with the same n.
        guidance_scale: classifier-free guidance w >= 0 during inversion (1: none, the most faithful).
        progress: show a progress bar.
    Returns:
        z_T (B, 4, 8, 8) on the pipeline's device: pass it as `pipe(prompt, latents=z_T, sampler="ddim", ...)`.
    """
    steps, guidance_scale, _ = check_settings(num_inference_steps, guidance_scale, 0, pipe.schedule.T)
    images = check_images("images", images, 3, pipe.image_size)
    images, prompts = match_batch(images, check_prompts(prompt))
    sampler = DDIMInverseSampler(pipe.schedule)
    sampler.set_timesteps(steps)  # DDIM's rule for n (and its message when n is out of range)
    cond, uncond = pipe.encode_prompt(prompts)
    z0 = pipe.encode_images(images)  # (B, 4, 8, 8), scaled
    return denoise(pipe.unet, sampler, z0, cond, uncond, guidance_scale, progress=progress)
