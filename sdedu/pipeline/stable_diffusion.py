"""TinyStableDiffusion: the five parts wired together, text-to-image, img2img and inpainting.

The five parts of Stable Diffusion: VAE, text encoder, UNet, noise schedule, sampler.

Every mode runs the one loop (`sdedu.pipeline.loop.denoise`); they differ only in where the
loop starts and in the hook it runs after every step (see the package docstring).
"""

from __future__ import annotations

import torch

from sdedu._checks import check_device, describe
from sdedu.diffusion import randn
from sdedu.pipeline import editing_modes
from sdedu.pipeline.checks import (
    check_batch,
    check_images,
    check_latents,
    check_negative_prompt,
    check_prompts,
    check_settings,
    repeat_prompts,
    tokenize_with_negatives,
)
from sdedu.pipeline.controlnet import controlled_unet
from sdedu.pipeline.inversion import invert
from sdedu.pipeline.loop import DEFAULT_GUIDANCE_SCALE, TrajectoryRecorder, chain, denoise, image_generators
from sdedu.pipeline.registry import make_sampler as _make_sampler
from sdedu.schedules import NoiseSchedule


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
    def encode_prompt(self, prompts, negative_prompt=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Text embeddings of the prompts and of the unconditional branch.

        Args:
            prompts: a str or B str.
            negative_prompt: None (the empty prompt "", as in SD), one str for every prompt, or
                B str (as diffusers' `encode_prompt`).
        Returns:
            cond (B, L, D) and uncond (B, L, D), uncond being the encoding of "" or of the negative prompts.
        """
        prompts = check_prompts(prompts)
        negatives = check_negative_prompt(negative_prompt, len(prompts))
        ids = tokenize_with_negatives(self.tokenizer, prompts, negatives, self.device)  # (B + 1 or 2B, L)
        embeddings = self.text_encoder(ids)  # (B + 1 or 2B, L, D)
        cond, uncond = embeddings[: len(prompts)], embeddings[len(prompts) :]
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
        negative_prompt=None,
        watermark=None,
        control_image=None,
        controlnet=None,
        controlnet_conditioning_scale: float = 1.0,
    ):
        """Generate images from prompt(s).

        Args:
            prompt: a str or a list of B str; "" generates unconditionally.
            num_inference_steps: sampler steps n >= 1, as the sampler allows (DDPM: up to T, all
                of them being Ho et al.'s Algorithm 2; DDIM: up to T - 1).
            guidance_scale: classifier-free guidance w >= 0 (0: ignore the prompt, 1: no guidance).
            seed: image i draws all its noise from its own generator, seeded seed + i: image i
                is the image of seed + i alone, whatever the batch and the device.
            sampler: a name in `sdedu.pipeline.SAMPLERS` ("ddim", "ddpm", ...).
            eta: DDIM's noise weight in [0, 1] (0: deterministic); other samplers take no eta.
            num_images_per_prompt: images per prompt; the batch is prompt-major.
            latents: (B, 4, 8, 8) the z_T to start from (e.g. from `invert`) instead of seeded noise.
            return_trajectory: also return latents and x0 predictions per step.
            progress: show a progress bar.
            negative_prompt: what to steer away from, in place of the unconditional branch's "":
                one str for every prompt or a list of B str (None: "", as diffusers).
            watermark: None (off) or a `sdedu.safety.WatermarkKey`: its Tree-Ring key is written into the
                Fourier transform of z_T (the seeded noise or `latents`), `sdedu.safety.detect_watermark` finds it.
            control_image: masks (B, 1, 32, 32) in [0, 1] (or 1, or one per image) that a ControlNet
                turns into the shape's place, size and outline; needs `controlnet`.
            controlnet: a `sdedu.ControlNet` made for this model (`ControlNet.from_pretrained()`).
            controlnet_conditioning_scale: multiplies the ControlNet's residuals (0: no control).
        Returns:
            images (B * num_images_per_prompt, 3, 32, 32) in [0, 1], or a `Trajectory`.
        """
        prompts = check_prompts(prompt)
        negatives = check_negative_prompt(negative_prompt, len(prompts))
        unet = controlled_unet(
            self, control_image, controlnet, len(prompts), num_images_per_prompt, controlnet_conditioning_scale
        )
        prompts = repeat_prompts(prompts, num_images_per_prompt)
        negatives = None if negatives is None else repeat_prompts(negatives, num_images_per_prompt)
        steps, guidance_scale, seed = check_settings(num_inference_steps, guidance_scale, seed, self.schedule.T)
        # 1. The sampler chooses the timesteps (and says which step counts it allows).
        scheduler = self._sampler(sampler, eta, steps)
        # 2. Start from pure Gaussian noise z_T in latent space, one stream per image (or from `latents`).
        generators = image_generators(seed, len(prompts))
        if latents is None:
            z = randn((len(prompts), *self.latent_shape), generators, self.device)
        else:
            z = check_latents(latents, self.latent_shape, len(prompts), self.device)
        if watermark is not None:
            if not callable(getattr(watermark, "apply", None)):
                raise TypeError(f"watermark must be None or a sdedu.safety.WatermarkKey; got {describe(watermark)}")
            z = watermark.apply(z)  # the key in z_T's centred 2-D Fourier transform; the rest of z_T as seeded
        # 3. Prompt -> embeddings; 4. denoise; 5. decode.
        return self._run(
            z,
            scheduler,
            scheduler.timesteps,
            prompts,
            guidance_scale,
            generators,
            return_trajectory,
            progress,
            negatives=negatives,
            model=unet,
        )

    def invert(self, images, prompt, num_inference_steps: int = 50, guidance_scale: float = 1.0, progress=False):
        """DDIM inversion: z_T (B, 4, 8, 8) that `self(prompt, latents=z_T)` remakes images from (`inversion.invert`)."""
        return invert(self, images, prompt, num_inference_steps, guidance_scale, progress)

    # ---- editing: image to image (SDEdit) and inpainting, in `editing_modes` ----------------

    img2img = editing_modes.img2img
    inpaint = editing_modes.inpaint

    # ---- shared by the three modes ------------------------------------------------------------

    def _sampler(self, name, eta, num_inference_steps):
        scheduler = self.make_sampler(name, eta)
        scheduler.set_timesteps(num_inference_steps)  # the sampler's own rule for the step count
        return scheduler

    def _run(
        self,
        z,
        scheduler,
        timesteps,
        prompts,
        guidance_scale,
        generators,
        return_trajectory,
        progress,
        hook=None,
        negatives=None,
        model=None,
    ):
        """Embeddings (uncond: "" or the negative prompts), the one loop (recording the trajectory with a
        hook when asked; `model` in place of the UNet: a ControlledUNet), decoding."""
        cond, uncond = self.encode_prompt(prompts, negatives)
        recorder = TrajectoryRecorder(z) if return_trajectory else None
        z = denoise(
            self.unet if model is None else model,
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
