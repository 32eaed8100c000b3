"""TinyStableDiffusion: prompt -> image, image + prompt -> image, image + mask + prompt -> image.

The pipeline owns no maths of its own. It wires four parts together, as diffusers'
StableDiffusionPipeline does, and shows the denoising loop in a few lines:

    cond, uncond = encode_prompt(prompts)               tokenizer + text encoder, (B, L, D) each
    sampler.set_timesteps(n)
    z = noise (B, 4, 8, 8)                              the scaled latent z_T
    for t in sampler.timesteps:
        eps_uncond, eps_cond = unet([z, z], t, [uncond, cond]).chunk(2)       one batched call
        eps = classifier_free_guidance(eps_uncond, eps_cond, guidance_scale)
        z = sampler.step(eps, t, z).x_prev
    image = vae.decode(z / scale_factor)                (B, 3, 32, 32) in [0, 1]

Two editing modes reuse the same loop:
- `img2img` (SDEdit, Meng et al. 2022): encode the image, noise it to the timestep a fraction
  `strength` of the way through the chain with q_sample, then denoise from there with the new
  prompt. strength 0 returns the (reconstructed) input, strength 1 ignores it.
- `inpaint` (latent blending, as diffusers' legacy inpainting and Avrahami et al. 2023): after
  every step, the latents outside the mask are replaced by the original image's latents noised
  to the same timestep, so only the masked region is generated; it stays consistent with its
  surroundings because the UNet sees both.

Seeds: every random number comes from one torch.Generator seeded with `seed` on the pipeline's
device, so the same call gives bit-identical images.

Speed: the pipeline keeps the UNet's weights channels-last (NHWC). oneDNN (CPU) and cuDNN (GPU)
convolve that layout without reordering weights on every call, which makes the small 8x8 and
4x4 convolutions of this UNet markedly faster (the benchmark's speed section measures it).
The numbers are the same up to float rounding; the state dict saves as usual.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from sdedu._checks import check_int_range, check_number_range, check_tensor, describe
from sdedu.diffusion import q_sample, randn_like
from sdedu.guidance import classifier_free_guidance
from sdedu.samplers import DDIMSampler, DDPMSampler
from sdedu.schedules import NoiseSchedule

# Measured on the shipped model (full prompts, 96 images): adherence is flat from 2 to 3, while
# partial prompts ("a blue shape") lose triangles as the scale grows; 2 keeps both.
DEFAULT_GUIDANCE_SCALE = 2.0
SAMPLERS = ("ddim", "ddpm")


@dataclass
class Trajectory:
    """What a pipeline call returns with return_trajectory=True.

    images: (B, 3, 32, 32) the final images in [0, 1].
    latents: (N + 1, B, 4, 8, 8) the scaled latents z before the first step and after each step.
    x0_preds: (N, B, 4, 8, 8) the sampler's estimate of the clean latent z_0 at each step
        (decode one with `pipe.decode_latents(trajectory.x0_preds[i])`).
    timesteps: (N,) the timestep t of each step.
    """

    images: torch.Tensor
    latents: torch.Tensor
    x0_preds: torch.Tensor
    timesteps: torch.Tensor


class TinyStableDiffusion:
    """A latent text-to-image diffusion model with Stable Diffusion's anatomy, at 32x32.

    Args:
        tokenizer: prompts (list[str]) -> ids (B, L).
        text_encoder: ids (B, L) -> cond (B, L, D).
        vae: `encode(images) -> (mean, logvar)`, `decode(z) -> images`, `scale_factor`.
        unet: (z_t (B, 4, 8, 8), t (B,) int64, cond (B, L, D)) -> eps_pred (B, 4, 8, 8).
        schedule: the NoiseSchedule the UNet was trained with.
        device: where the models run.

    Usually built with `TinyStableDiffusion.from_pretrained()`.
    """

    def __init__(self, tokenizer, text_encoder, vae, unet, schedule: NoiseSchedule, device="cpu"):
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule must be a sdedu.schedules.NoiseSchedule; got {describe(schedule)}")
        self.tokenizer = tokenizer
        self.text_encoder, self.vae, self.unet = text_encoder.eval(), vae.eval(), unet.eval()
        self.schedule = schedule
        self.to(device)
        self.manifest: dict = {}  # what the weights' manifest says (recipe, timings, metrics)

    @classmethod
    def from_pretrained(cls, path=None, device="cpu") -> TinyStableDiffusion:
        """Load the shipped weights (path=None) or those in the folder `path`; nothing is downloaded."""
        from sdedu.weights import load_pretrained

        bundle = load_pretrained(path, device=device)
        get = bundle.get if isinstance(bundle, dict) else lambda name: getattr(bundle, name)
        pipe = cls(get("tokenizer"), get("text_encoder"), get("vae"), get("unet"), get("schedule"), device=device)
        pipe.manifest = get("manifest") or {}
        return pipe

    def to(self, device) -> TinyStableDiffusion:
        """Move every model to `device` (the UNet channels-last, see "Speed" above); returns self."""
        self.device = torch.device(device)
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
        prompts = _check_prompts(prompts)
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
        images = _check_images("images", images, channels=3).to(self.device)
        mean, _ = self.vae.encode(images)
        return mean * self.vae.scale_factor

    @torch.no_grad()
    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latents (B, 4, 8, 8) -> images (B, 3, 32, 32) clamped to [0, 1]."""
        return self.vae.decode(z.to(self.device) / self.vae.scale_factor).clamp(0.0, 1.0)

    def make_sampler(self, sampler: str = "ddim", eta: float = 0.0):
        """A fresh sampler: "ddim" (deterministic with eta=0) or "ddpm" (ancestral)."""
        if sampler == "ddim":
            return DDIMSampler(self.schedule, eta=eta)
        if sampler == "ddpm":
            return DDPMSampler(self.schedule)
        raise ValueError(f"sampler must be one of {SAMPLERS}; got {sampler!r}")

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
        return_trajectory: bool = False,
        progress: bool = False,
    ):
        """Generate images from prompt(s).

        Args:
            prompt: a str or a list of B str; "" generates unconditionally.
            num_inference_steps: sampler steps N >= 1.
            guidance_scale: classifier-free guidance s >= 0 (0: ignore the prompt, 1: no guidance).
            seed: seeds the one torch.Generator behind all randomness.
            sampler: "ddim" or "ddpm".
            eta: DDIM's noise weight (0: deterministic).
            num_images_per_prompt: images per prompt; the batch is prompt-major.
            return_trajectory: also return latents and x0 predictions per step.
            progress: show a progress bar.
        Returns:
            images (B * num_images_per_prompt, 3, 32, 32) in [0, 1], or a `Trajectory`.
        """
        prompts = _repeat(_check_prompts(prompt), num_images_per_prompt)
        settings = self._check_settings(num_inference_steps, guidance_scale, seed, sampler, eta)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        # 1. Prompt -> conditional and unconditional embeddings.
        cond, uncond = self.encode_prompt(prompts)
        # 2. The sampler chooses the timesteps.
        scheduler = self.make_sampler(sampler, eta)
        scheduler.set_timesteps(num_inference_steps)
        # 3. Start from pure Gaussian noise z_T in latent space.
        z = torch.randn((len(prompts), 4, 8, 8), generator=generator, device=self.device)
        # 4. Denoise; 5. decode.
        return self._denoise(
            z,
            scheduler.timesteps,
            scheduler,
            cond,
            uncond,
            settings["guidance_scale"],
            generator,
            return_trajectory=return_trajectory,
            progress=progress,
        )

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
        settings = self._check_settings(num_inference_steps, guidance_scale, seed, sampler, eta)
        image, prompts = _match_batch(_check_images("image", image, channels=3), _check_prompts(prompt))
        generator = torch.Generator(device=self.device).manual_seed(seed)
        # 1. Embeddings, 2. timesteps: keep the last round(strength * N).
        cond, uncond = self.encode_prompt(prompts)
        scheduler = self.make_sampler(sampler, eta)
        scheduler.set_timesteps(num_inference_steps)
        kept = int(round(strength * num_inference_steps))
        timesteps = scheduler.timesteps[num_inference_steps - kept :]
        # 3. Encode the image and noise it to the first kept timestep (Ho et al. eq. 4).
        z0 = self.encode_images(image)
        if kept == 0:
            return self._finish(z0, [z0], [], timesteps, return_trajectory)
        z = q_sample(z0, int(timesteps[0]), self.schedule, noise=randn_like(z0, generator))
        # 4. Denoise from there; 5. decode.
        return self._denoise(
            z,
            timesteps,
            scheduler,
            cond,
            uncond,
            settings["guidance_scale"],
            generator,
            return_trajectory=return_trajectory,
            progress=progress,
        )

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

        After every sampler step to timestep t_prev:
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
        settings = self._check_settings(num_inference_steps, guidance_scale, seed, sampler, eta)
        image = _check_images("image", image, channels=3)
        mask = _check_mask(mask)
        image, prompts = _match_batch(image, _check_prompts(prompt))
        if mask.shape[0] not in (1, image.shape[0]):
            raise ValueError(f"mask must have batch size 1 or {image.shape[0]} (as image); got {describe(mask)}")
        mask = mask.expand(image.shape[0], -1, -1, -1).to(self.device)  # (B, 1, 32, 32)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        # 1. Embeddings, 2. timesteps (as in img2img).
        cond, uncond = self.encode_prompt(prompts)
        scheduler = self.make_sampler(sampler, eta)
        scheduler.set_timesteps(num_inference_steps)
        kept = int(round(strength * num_inference_steps))
        timesteps = scheduler.timesteps[num_inference_steps - kept :]
        # 3. The known latents, the latent mask and one fixed noise for the known region.
        z0 = self.encode_images(image)
        latent_mask = F.max_pool2d(mask, kernel_size=4)  # (B, 1, 8, 8)
        noise = randn_like(z0, generator)
        z = q_sample(z0, int(timesteps[0]), self.schedule, noise=noise) if kept else z0
        # 4. Denoise, blending the known region back after every step; 5. decode.
        known = (z0, noise, latent_mask)
        out = self._denoise(
            z,
            timesteps,
            scheduler,
            cond,
            uncond,
            settings["guidance_scale"],
            generator,
            return_trajectory=return_trajectory,
            progress=progress,
            known=known,
        )
        if keep_unmasked:
            images = out.images if return_trajectory else out
            images = mask * images + (1 - mask) * image.to(self.device)
            if return_trajectory:
                out.images = images
            else:
                out = images
        return out

    # ---- the loop ---------------------------------------------------------------------------

    def _denoise(
        self,
        z,
        timesteps,
        scheduler,
        cond,
        uncond,
        guidance_scale,
        generator,
        return_trajectory=False,
        progress=False,
        known=None,
    ):
        """The denoising loop shared by all three modes; see the module docstring."""
        B = z.shape[0]
        guided = guidance_scale != 1.0
        context = torch.cat([uncond, cond]) if guided else cond  # (2B, L, D) or (B, L, D)
        latents, x0_preds = [z], []
        for i, t in enumerate(tqdm(timesteps, disable=not progress, desc="denoising")):
            # 1. One batched UNet call for the unconditional and conditional predictions.
            z_in = torch.cat([z, z]) if guided else z  # (2B, 4, 8, 8) or (B, 4, 8, 8)
            t_in = t.to(self.device).expand(z_in.shape[0])  # (2B,) or (B,)
            eps_pred = self.unet(z_in, t_in, context)
            # 2. Classifier-free guidance: eps_uncond + s (eps_cond - eps_uncond).
            if guided:
                eps_uncond, eps_cond = eps_pred.chunk(2)  # (B, 4, 8, 8) each
                eps_pred = classifier_free_guidance(eps_uncond, eps_cond, guidance_scale)
            # 3. One sampler step z_t -> z_{t_prev}.
            z, x0_pred = scheduler.step(eps_pred, t, z, generator=generator)
            # 4. Inpainting only: put back the known region, noised to t_prev.
            if known is not None:
                z0, noise, m = known
                z_known = (
                    q_sample(z0, int(timesteps[i + 1]), self.schedule, noise=noise) if i + 1 < len(timesteps) else z0
                )
                z = m * z + (1 - m) * z_known
            latents.append(z)
            x0_preds.append(x0_pred)
        assert z.shape[0] == B
        return self._finish(z, latents, x0_preds, timesteps, return_trajectory)

    def _finish(self, z, latents, x0_preds, timesteps, return_trajectory):
        images = self.decode_latents(z)
        if not return_trajectory:
            return images
        empty = z.new_zeros((0,) + tuple(z.shape))
        return Trajectory(
            images=images,
            latents=torch.stack(latents),  # (N + 1, B, 4, 8, 8)
            x0_preds=torch.stack(x0_preds) if x0_preds else empty,  # (N, B, 4, 8, 8)
            timesteps=timesteps.clone(),
        )

    def _check_settings(self, num_inference_steps, guidance_scale, seed, sampler, eta) -> dict:
        check_int_range("num_inference_steps", num_inference_steps, 1, self.schedule.T - 1)
        guidance_scale = check_number_range("guidance_scale", guidance_scale, 0.0)
        check_int_range("seed", seed, 0, 2**63 - 1)
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}; got {sampler!r}")
        check_number_range("eta", eta, 0.0)
        return {"guidance_scale": guidance_scale}

    def __repr__(self) -> str:
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        return (
            f"TinyStableDiffusion(device={self.device}, text_encoder={count(self.text_encoder):,} params, "
            f"unet={count(self.unet):,} params, vae={count(self.vae):,} params, T={self.schedule.T})"
        )


# ---- argument checks ------------------------------------------------------------------------


def _check_prompts(prompt) -> list[str]:
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, (list, tuple)) and prompt and all(isinstance(p, str) for p in prompt):
        return list(prompt)
    raise TypeError(f"prompt must be a str or a non-empty list of str; got {describe(prompt)}")


def _repeat(prompts: list[str], n: int) -> list[str]:
    check_int_range("num_images_per_prompt", n, 1, 10_000)
    return [p for p in prompts for _ in range(n)]


def _check_images(name: str, images, channels: int) -> torch.Tensor:
    check_tensor(name, images, floating=True)
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4 or tuple(images.shape[1:]) != (channels, 32, 32):
        raise ValueError(
            f"{name} must have shape (B, {channels}, 32, 32) or ({channels}, 32, 32); got {describe(images)}"
        )
    low, high = float(images.min()), float(images.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(f"{name} must have values in [0, 1]; got values in [{low:.3g}, {high:.3g}]")
    return images


def _check_mask(mask) -> torch.Tensor:
    check_tensor("mask", mask)
    if not mask.is_floating_point():
        mask = mask.float()
    if mask.ndim == 2:
        mask = mask[None, None]
    return _check_images("mask", mask, channels=1)


def _match_batch(images: torch.Tensor, prompts: list[str]):
    """Broadcast one image to many prompts or one prompt to many images."""
    if images.shape[0] == len(prompts):
        return images, prompts
    if images.shape[0] == 1:
        return images.expand(len(prompts), -1, -1, -1), prompts
    if len(prompts) == 1:
        return images, prompts * images.shape[0]
    raise ValueError(f"prompt must be one str or one per image ({images.shape[0]}); got {len(prompts)} prompts")
