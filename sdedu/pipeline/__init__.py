"""TinyStableDiffusion: prompt -> image, image + prompt -> image, image + mask + prompt -> image.

The pipeline owns no maths of its own. It wires Stable Diffusion's five parts together (VAE, text
encoder, UNet, noise schedule, sampler), as diffusers' StableDiffusionPipeline does, and runs the
one denoising loop (`loop.denoise`):

    cond, uncond = encode_prompt(prompts, negative)     tokenizer + text encoder, (B, L, D) each;
                                                        uncond encodes "" or the negative prompts
    sampler.set_timesteps(n)                            the sampler's own rule for n
    z = noise (B, 4, 8, 8)                              z_T, image i from manual_seed(seed + i)
    for t in sampler.timesteps:
        eps_uncond, eps_cond = unet([z, z], t, [uncond, cond]).chunk(2)       one batched call
        eps = classifier_free_guidance(eps_uncond, eps_cond, guidance_scale)
        z = sampler.step(eps, t, z).x_prev
        z = on_step(i, t, z, x0_pred) or z              the hook of an editing mode
    image = vae.decode(z / scale_factor)                (B, 3, 32, 32) in [0, 1]

Two editing modes reuse the same loop:
- `img2img` (SDEdit, Meng et al. 2022): encode the image, noise it to the timestep a fraction
  `strength` of the way through the chain with q_sample, then denoise from there with the new
  prompt. strength 0 returns the (reconstructed) input, strength 1 ignores it.
- `inpaint` (latent blending, as diffusers' legacy inpainting and Avrahami et al. 2023): a hook
  replaces the latents outside the mask, after every step, by the original image's latents
  noised to the same timestep, so only the masked region is generated; it stays consistent with
  its surroundings because the UNet sees both.

Seeds: image i of a call draws all its noise (z_T, the sampler's noise, the SDEdit noise) from a
CPU torch.Generator of its own, seeded seed + i (`loop.image_generators`), moved to the device: so
image i of a batch with seed s is the image that seed s + i gives alone, an image does not depend
on the batch it came in nor on the device (up to float rounding), and the same call gives
bit-identical images.

Speed: the pipeline keeps the UNet's weights channels-last (NHWC). oneDNN (CPU) and cuDNN (GPU)
convolve that layout without reordering weights on every call, which makes the small 8x8 and
4x4 convolutions of this UNet markedly faster (the benchmark's speed section measures it).
The numbers are the same up to float rounding; the state dict saves as usual.

DDIM inversion (`pipe.invert`, module `inversion`) runs the same loop with `DDIMInverseSampler`,
from an image's latent up to its noise z_T; `pipe(prompt, latents=z_T)` starts from given noise.

Modules: `loop` (the loop, per-image generators, hooks), `registry` (samplers by name),
`checks` (argument checks), `inversion` (DDIM inversion), `editing_modes` (img2img, inpaint),
`controlnet` (a ControlNet: loading, fit checks, the UNet it steers: `pipe(..., control_image=, controlnet=)`),
`stable_diffusion` (the pipeline class).
"""

from sdedu.pipeline.loop import (
    DEFAULT_GUIDANCE_SCALE,
    Trajectory,
    TrajectoryRecorder,
    chain,
    denoise,
    image_generators,
    last_timesteps,
)
from sdedu.pipeline.registry import SAMPLER_FACTORIES, SAMPLERS, TAKES_ETA, make_sampler
from sdedu.pipeline.stable_diffusion import TinyStableDiffusion

__all__ = [
    "DEFAULT_GUIDANCE_SCALE",
    "SAMPLERS",
    "SAMPLER_FACTORIES",
    "TAKES_ETA",
    "TinyStableDiffusion",
    "Trajectory",
    "TrajectoryRecorder",
    "chain",
    "denoise",
    "image_generators",
    "last_timesteps",
    "make_sampler",
]
