"""TinyStableDiffusion: the four parts wired together, text-to-image, img2img and inpainting.

Every mode runs the one loop (`sdedu.pipeline.loop.denoise`); they differ only in where the
loop starts and in the hook it runs after every step (see the package docstring).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sdedu._checks import check_device, check_number_range, describe
from sdedu.diffusion import q_sample, randn, randn_like
from sdedu.pipeline.checks import (
    check_batch,
    check_images,
    check_latents,
    check_mask,
    check_prompts,
    check_settings,
    match_batch,
    repeat_prompts,
)
from sdedu.pipeline.inversion import invert
from sdedu.pipeline.loop import TrajectoryRecorder, chain, denoise, image_generators, last_timesteps
from sdedu.pipeline.registry import make_sampler as _make_sampler
from sdedu.schedules import NoiseSchedule

# Measured on the shipped model (full prompts, 96 images): adherence is flat from 2 to 3, while
# partial prompts ("a blue shape") lose triangles as the scale grows; 2 keeps both.
DEFAULT_GUIDANCE_SCALE = 2.0


class TinyStableDiffusion:
    """A latent text-to-image diffusion model with Stable Diffusion's anatomy, at 32x32.

    Args:
        tokenizer: prompts (list[str]) -> ids (B, L).
        text_encoder: ids (B, L) -> cond (B, L, D).
        vae: `encode(images) -> (mean, logvar)`, `decode(z) -> images`, `scale_factor`, `config`.
        unet: (z_t (B, 4, 8, 8), t (B,) int64, cond (B, L, D)) -> eps_pred (B, 4, 8, 8); its
            `config` gives the latent shape (in_channels, sample_size, sample_size).
        schedule: the NoiseSchedule the UNet was trained with.
        device: where the models run ("cpu", "cuda", ...).

    Usually built with `TinyStableDiffusion.from_pretrained()`.
    """

    def __init__(self, tokenizer, text_encoder, vae, unet, schedule: NoiseSchedule, device="cpu"):
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule must be a sdedu.schedules.NoiseSchedule; got {describe(schedule)}")
        for name, part in (("unet", unet), ("vae", vae)):
            if not hasattr(part, "config"):
                raise TypeError(f"{name} must have a .config (its sizes); got {describe(part)}")
        self.tokenizer = tokenizer
        self.text_encoder, self.vae, self.unet = text_encoder.eval(), vae.eval(), unet.eval()
        self.schedule = schedule
        # Sizes from the configs: the UNet's input is the latent; the VAE halves the side per level.
        size = unet.config.sample_size
        self.latent_shape = (unet.config.in_channels, size, size)  # (C, h, w), (4, 8, 8) shipped
        self.image_size = size * 2 ** (len(vae.config.channels) - 1)  # 32 shipped
        self.to(device)
        self.manifest: dict = {}  # what the weights' manifest says (recipe, timings, metrics)

    @classmethod
    def from_pretrained(cls, path=None, device="cpu") -> TinyStableDiffusion:
        """Load the shipped weights (path=None) or those in the folder `path`; nothing is downloaded."""
        from sdedu.weights import load_pretrained

        device = check_device("device", device)
        bundle = load_pretrained(path, device=device)
        pipe = cls(bundle.tokenizer, bundle.text_encoder, bundle.vae, bundle.unet, bundle.schedule, device=device)
        pipe.manifest = bundle.manifest or {}
        return pipe

    def to(self, device) -> TinyStableDiffusion:
        """Move every model to `device` (the UNet channels-last, see "Speed" in the package docs); returns self."""
        self.device = check_device("device", device)
        for name in ("text_encoder", "vae", "schedule"):
            setattr(self, name, getattr(self, name).to(self.device))
        self.unet = self.unet.to(self.device, memory_format=torch.channels_last)
        return self

    # ---- the parts --------------------------------------------------------------------------

    @torch.no_grad()
    def encode_prompt(self, prompts) -> tuple[torch.Tensor, torch.Tensor]:
        """Text embeddings of the prompts and of the empty prompt (the unconditional embedding).

        Returns:
            cond (B, L, D) and uncond (B, L, D), uncond being the encoding of "" (as in SD).
        """
        prompts = check_prompts(prompts)
        ids = self.tokenizer(list(prompts) + [""], device=self.device)  # (B + 1, L)
        embeddings = self.text_encoder(ids)  # (B + 1, L, D)
        cond, uncond = embeddings[:-1], embeddings[-1:]
        return cond, uncond.expand_as(cond)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, 32, 32) in [0, 1] -> scaled latents z_0 = mean of q(z|x) * scale_factor.

        The mean rather than a sample: the VAE's posterior is narrow, and the mean keeps
        img2img and inpainting free of an extra source of randomness.
        """
        images = check_images("images", images, 3, self.image_size).to(self.device)
        mean, _ = self.vae.encode(images)
        return mean * self.vae.scale_factor

    @torch.no_grad()
    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latents (B, 4, 8, 8) -> images (B, 3, 32, 32) clamped to [0, 1]."""
        z = check_batch("z", z, self.latent_shape, "latent").to(self.device)
        return self.vae.decode(z / self.vae.scale_factor).clamp(0.0, 1.0)

    def make_sampler(self, sampler: str = "ddim", eta: float = 0.0):
        """A fresh sampler by name (see `sdedu.pipeline.SAMPLERS`); eta only where the sampler uses it."""
        return _make_sampler(sampler, self.schedule, eta)

    # ---- text to image ----------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        prompt,
        num_inference_steps: int = 25,
        guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
        seed: int = 0,
        sampler: str = "ddim",
        eta: float = 0.0,
        num_images_per_prompt: int = 1,
        latents: torch.Tensor | None = None,
        return_trajectory: bool = False,
        progress: bool = False,
    ):
        """Generate images from prompt(s).

        Args:
            prompt: a str or a list of B str; "" generates unconditionally.
            num_inference_steps: sampler steps N >= 1, as the sampler allows (DDPM: up to T, all
                of them being Ho et al.'s Algorithm 2; DDIM: up to T - 1).
            guidance_scale: classifier-free guidance s >= 0 (0: ignore the prompt, 1: no guidance).
            seed: image i draws all its noise from its own generator, seeded seed + i: image i
                is the image of seed + i alone, whatever the batch and the device.
            sampler: a name in `sdedu.pipeline.SAMPLERS` ("ddim", "ddpm", ...).
            eta: DDIM's noise weight in [0, 1] (0: deterministic); other samplers take no eta.
            num_images_per_prompt: images per prompt; the batch is prompt-major.
            latents: (B, 4, 8, 8) the z_T to start from (e.g. from `invert`) instead of seeded noise.
            return_trajectory: also return latents and x0 predictions per step.
            progress: show a progress bar.
        Returns:
            images (B * num_images_per_prompt, 3, 32, 32) in [0, 1], or a `Trajectory`.
        """
        prompts = repeat_prompts(check_prompts(prompt), num_images_per_prompt)
        steps, guidance_scale, seed = check_settings(num_inference_steps, guidance_scale, seed, self.schedule.T)
        # 1. The sampler chooses the timesteps (and says which step counts it allows).
        scheduler = self._sampler(sampler, eta, steps)
        # 2. Start from pure Gaussian noise z_T in latent space, one stream per image (or from `latents`).
        generators = image_generators(seed, len(prompts))
        if latents is None:
            z = randn((len(prompts), *self.latent_shape), generators, self.device)
        else:
            z = check_latents(latents, self.latent_shape, len(prompts), self.device)
        # 3. Prompt -> embeddings; 4. denoise; 5. decode.
        return self._run(
            z, scheduler, scheduler.timesteps, prompts, guidance_scale, generators, return_trajectory, progress
        )

    def invert(self, images, prompt, num_inference_steps: int = 50, guidance_scale: float = 1.0, progress=False):
        """DDIM inversion: z_T (B, 4, 8, 8) that `self(prompt, latents=z_T)` remakes images from (`inversion.invert`)."""
        return invert(self, images, prompt, num_inference_steps, guidance_scale, progress)

    # ---- image to image (SDEdit) ------------------------------------------------------------

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
    ):
        """SDEdit: noise the image part of the way (strength) and denoise it towards the prompt.

        Of the N sampler timesteps only the last round(strength * N) run, starting from
        z_t = q_sample(encode(image), t_start): strength 0 returns the VAE reconstruction of the
        image, strength 1 is text-to-image from (almost) pure noise.

        Args:
            image: (B, 3, 32, 32) or (3, 32, 32) in [0, 1]; one image is used for every prompt.
            prompt: a str or B str (one prompt is used for every image).
            strength: in [0, 1], how much of the chain to run.
            other arguments: as for text-to-image.
        Returns:
            images (B, 3, 32, 32) in [0, 1], or a `Trajectory`.
        """
        strength = check_number_range("strength", strength, 0.0, 1.0)
        steps, guidance_scale, seed = check_settings(num_inference_steps, guidance_scale, seed, self.schedule.T)
        image = check_images("image", image, 3, self.image_size)
        image, prompts = match_batch(image, check_prompts(prompt))
        # 1. Timesteps: keep the last round(strength * N).
        scheduler = self._sampler(sampler, eta, steps)
        timesteps = last_timesteps(scheduler, steps, strength)
        # 2. Encode the image and noise it to the first kept timestep (Ho et al. eq. 4).
        generators = image_generators(seed, len(prompts))
        z = self.encode_images(image)
        if len(timesteps):
            z = q_sample(z, int(timesteps[0]), self.schedule, noise=randn_like(z, generators))
        # 3. Denoise from there; 4. decode.
        return self._run(z, scheduler, timesteps, prompts, guidance_scale, generators, return_trajectory, progress)

    # ---- inpainting -------------------------------------------------------------------------

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
            other arguments: as for text-to-image.
        Returns:
            images (B, 3, 32, 32) in [0, 1], or a `Trajectory`.
        """
        strength = check_number_range("strength", strength, 0.0, 1.0)
        steps, guidance_scale, seed = check_settings(num_inference_steps, guidance_scale, seed, self.schedule.T)
        image = check_images("image", image, 3, self.image_size)
        mask = check_mask(mask, self.image_size)
        image, prompts = match_batch(image, check_prompts(prompt))
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
            z, scheduler, timesteps, prompts, guidance_scale, generators, return_trajectory, progress, blend
        )
        if keep_unmasked:
            images = out.images if return_trajectory else out
            images = mask * images + (1 - mask) * image.to(self.device)
            if not return_trajectory:
                return images
            out.images = images
        return out

    # ---- shared by the three modes ------------------------------------------------------------

    def _sampler(self, name, eta, num_inference_steps):
        scheduler = self.make_sampler(name, eta)
        scheduler.set_timesteps(num_inference_steps)  # the sampler's own rule for the step count
        return scheduler

    def _run(
        self, z, scheduler, timesteps, prompts, guidance_scale, generators, return_trajectory, progress, hook=None
    ):
        """Embeddings, the one loop (recording the trajectory with a hook when asked), decoding."""
        cond, uncond = self.encode_prompt(prompts)
        recorder = TrajectoryRecorder(z) if return_trajectory else None
        z = denoise(
            self.unet,
            scheduler,
            z,
            cond,
            uncond,
            guidance_scale,
            timesteps=timesteps,
            generator=generators,
            on_step=chain(hook, recorder),
            progress=progress,
        )
        images = self.decode_latents(z)
        return recorder.trajectory(images, timesteps) if return_trajectory else images

    def __repr__(self) -> str:
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        return (
            f"TinyStableDiffusion(device={self.device}, text_encoder={count(self.text_encoder):,} params, "
            f"unet={count(self.unet):,} params, vae={count(self.vae):,} params, T={self.schedule.T})"
        )
