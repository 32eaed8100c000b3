"""TinyStableDiffusion3: the tiny SD3, an MM-DiT sampled along straight flows, on the first model's VAE and text encoder.

    cond, pooled = text encoder(prompts + [""])          tokens (B, L, D) and pooled (B, P)
    sampler = FlowMatchEulerSampler(shift); sampler.set_timesteps(n)
    z = noise (B, 4, 8, 8)                               z at t = 1, image i from manual_seed(seed + i)
    for t in sampler.timesteps:                          the one loop, `loop.denoise`
        v_uncond, v_cond = mmdit([z, z], t, [uncond, cond]).chunk(2)     one batched call
        v = v_uncond + w (v_cond - v_uncond)             classifier-free guidance on the velocity
        z = z + (t_next - t) v                           an Euler step
    image = vae.decode(z / scale_factor)                 (B, 3, 32, 32) in [0, 1]

The same loop, guidance rule, per-image seeds and argument checks as `TinyStableDiffusion`; what
differs is the backbone (`sdedu.models.mmdit`), what it predicts (a velocity, not a noise) and the
sampler (`sdedu.samplers.FlowMatchEulerSampler`). The loop hands the model one conditioning tensor
(batched with the unconditional one), so the pipeline packs the token embeddings and the pooled
embedding side by side on the feature axis, (B, L, D + P), and unpacks them for the MM-DiT.
"""

from __future__ import annotations

from pathlib import Path

import torch

from sdedu._checks import check_device, describe
from sdedu.diffusion import randn
from sdedu.manifest import MANIFEST, SHIPPED, WeightsError, fail_field
from sdedu.pipeline.checks import (
    check_batch,
    check_latents,
    check_negative_prompt,
    check_prompts,
    check_settings,
    repeat_prompts,
    tokenize_with_negatives,
)
from sdedu.pipeline.loop import TrajectoryRecorder, denoise, image_generators
from sdedu.samplers import FlowMatchEulerSampler

MODEL_NAME = "TinyStableDiffusion3"  # the "model" field of its weights manifest
SHIPPED_SD3 = SHIPPED / "sd3"
# Measured on the shipped model (100 full prompts, the judge): shapes right in 98% at guidance 2 with 4
# or 8 Euler steps (99% at 6), in 94% at guidance 3 (8 steps); 8 steps keep a margin.
DEFAULT_STEPS = 8
DEFAULT_GUIDANCE_SCALE = 2.0
SHIFT = 1.0  # SD3's resolution shift (section 5.3.2); 8x8 latents need none
MAX_STEPS = 1000


class TinyStableDiffusion3:
    """A latent text-to-image rectified-flow model with SD3's anatomy, at 32x32.

    Args:
        tokenizer: prompts (list[str]) -> ids (B, L).
        text_encoder: ids (B, L) -> cond (B, L, D); `pooled(ids)` -> (B, P).
        vae: `decode(z) -> images`, `scale_factor`, `config`.
        mmdit: (z_t (B, 4, 8, 8), t (B,) float in [0, 1000], cond, pooled) -> v_pred (B, 4, 8, 8).
        device: where the models run.

    Usually built with `TinyStableDiffusion3.from_pretrained()`.
    """

    default_steps = DEFAULT_STEPS
    default_guidance_scale = DEFAULT_GUIDANCE_SCALE

    def __init__(self, tokenizer, text_encoder, vae, mmdit, device="cpu"):
        for name, part in (("mmdit", mmdit), ("vae", vae)):
            if not hasattr(part, "config"):
                raise TypeError(f"{name} must have a .config (its sizes); got {describe(part)}")
        if mmdit.config.context_dim != text_encoder.config.width:
            raise ValueError(
                f"mmdit.config.context_dim ({mmdit.config.context_dim}) must equal the text encoder's width "
                f"({text_encoder.config.width})"
            )
        self.tokenizer = tokenizer
        self.text_encoder, self.vae, self.mmdit = text_encoder.eval(), vae.eval(), mmdit.eval()
        size = mmdit.config.sample_size
        self.latent_shape = (mmdit.config.in_channels, size, size)  # (4, 8, 8)
        self.image_size = size * 2 ** (len(vae.config.channels) - 1)  # 32
        self.to(device)
        self.manifest: dict = {}

    @classmethod
    def from_pretrained(cls, path=None, device="cpu") -> TinyStableDiffusion3:
        """Load the shipped tiny SD3 (path=None) or a folder written by `python -m sdedu.train sd3`; offline.

        The folder holds mmdit.safetensors and a manifest naming (by sha256) the VAE and text
        encoder it was trained with, which are the first model's shipped ones. Every file is
        hash-checked; a folder of another model fails with a WeightsError naming the field.
        """
        from sdedu.models.text_encoder import Tokenizer
        from sdedu.weights import load_component, read_manifest

        device = check_device("device", device)
        directory = Path(path) if path is not None else SHIPPED_SD3
        if not (directory / MANIFEST).is_file():
            raise WeightsError(
                f"no {MANIFEST} in {directory}: expected a folder written by `python -m sdedu.train sd3`"
            )
        manifest = read_manifest(directory)
        if manifest.get("model") != MODEL_NAME:
            fail_field(
                directory,
                "model",
                f"is {manifest.get('model')!r}; expected {MODEL_NAME!r} (a folder of the other model, "
                "TinyStableDiffusion, loads with TinyStableDiffusion.from_pretrained)",
            )
        base = read_manifest(SHIPPED).get("components", {})
        parts = {}
        for name in ("vae", "text_encoder"):
            expected = manifest.get("base", {}).get(name, {}).get("sha256")
            if expected != base.get(name, {}).get("sha256"):
                fail_field(
                    directory,
                    f"base.{name}.sha256",
                    f"is {expected!r}, but the shipped {name} is {base.get(name, {}).get('sha256')!r}: "
                    "the MM-DiT was trained on another VAE or text encoder",
                )
            parts[name] = load_component(name, SHIPPED, device)
        mmdit = load_component("mmdit", directory, device)
        tokenizer = Tokenizer(max_length=parts["text_encoder"].config.max_length)
        pipe = cls(tokenizer, parts["text_encoder"], parts["vae"], mmdit, device=device)
        pipe.manifest = manifest
        return pipe

    def to(self, device) -> TinyStableDiffusion3:
        """Move every model to `device`; returns self."""
        self.device = check_device("device", device)
        for name in ("text_encoder", "vae", "mmdit"):
            setattr(self, name, getattr(self, name).to(self.device))
        return self

    # ---- the parts --------------------------------------------------------------------------

    @torch.no_grad()
    def encode_prompt(self, prompts, negative_prompt=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Packed text conditioning of the prompts and of "" (or of the negative prompts, as
        `TinyStableDiffusion.encode_prompt`): (B, L, D + P) each (module docstring).

        [..., :D] are the token embeddings cond; [:, l, D:] is the pooled embedding, on every token l.
        """
        prompts = check_prompts(prompts)
        negatives = check_negative_prompt(negative_prompt, len(prompts))
        ids = tokenize_with_negatives(self.tokenizer, prompts, negatives, self.device)  # (B + 1 or 2B, L)
        cond, pooled = self.text_encoder(ids), self.text_encoder.pooled(ids)  # (B + 1 or 2B, L, D), (.., P)
        packed = torch.cat([cond, pooled[:, None, :].expand(-1, cond.shape[1], -1)], dim=-1)  # (B + 1 or 2B, L, D + P)
        B = len(prompts)
        return packed[:B], packed[B:].expand_as(packed[:B])

    def velocity(self, z: torch.Tensor, t: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
        """The MM-DiT on packed conditioning: z (B, 4, 8, 8), t (B,), packed (B, L, D + P) -> v (B, 4, 8, 8)."""
        D = self.text_encoder.config.width
        return self.mmdit(z, t, packed[..., :D], packed[:, 0, D:])  # cond (B, L, D), pooled (B, P)

    @torch.no_grad()
    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latents (B, 4, 8, 8) -> images (B, 3, 32, 32) clamped to [0, 1]."""
        z = check_batch("z", z, self.latent_shape, "latent").to(self.device)
        return self.vae.decode(z / self.vae.scale_factor).clamp(0.0, 1.0)

    def make_sampler(self, num_inference_steps: int) -> FlowMatchEulerSampler:
        """A fresh Euler sampler with the pipeline's shift, set to num_inference_steps."""
        sampler = FlowMatchEulerSampler(shift=SHIFT)
        sampler.set_timesteps(num_inference_steps)
        return sampler

    # ---- text to image ----------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        prompt,
        num_inference_steps: int = DEFAULT_STEPS,
        guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
        seed: int = 0,
        num_images_per_prompt: int = 1,
        latents: torch.Tensor | None = None,
        return_trajectory: bool = False,
        progress: bool = False,
        negative_prompt=None,
    ):
        """Generate images from prompt(s).

        Args:
            prompt: a str or a list of B str; "" generates unconditionally.
            num_inference_steps: Euler steps in [1, 1000].
            guidance_scale: classifier-free guidance w >= 0 (0: ignore the prompt, 1: no guidance).
            seed: image i starts from noise seeded seed + i (whatever the batch and the device).
            num_images_per_prompt: images per prompt; the batch is prompt-major.
            latents: (B, 4, 8, 8) the noise z at t = 1 to start from instead of seeded noise.
            return_trajectory: also return latents and x0 predictions per step (`loop.Trajectory`).
            progress: show a progress bar.
            negative_prompt: None (""), one str for every prompt or one per prompt: the unconditional branch.
        Returns:
            images (B * num_images_per_prompt, 3, 32, 32) in [0, 1], or a `Trajectory`.
        """
        prompts = check_prompts(prompt)
        negatives = check_negative_prompt(negative_prompt, len(prompts))
        prompts = repeat_prompts(prompts, num_images_per_prompt)
        negatives = None if negatives is None else repeat_prompts(negatives, num_images_per_prompt)
        steps, guidance_scale, seed = check_settings(num_inference_steps, guidance_scale, seed, MAX_STEPS)
        # 1. The sampler's times; 2. noise at t = 1, one stream per image (or the given latents).
        sampler = self.make_sampler(steps)
        generators = image_generators(seed, len(prompts))
        if latents is None:
            z = randn((len(prompts), *self.latent_shape), generators, self.device)
        else:
            z = check_latents(latents, self.latent_shape, len(prompts), self.device)
        # 3. Prompts -> packed embeddings; 4. the one loop; 5. decode.
        cond, uncond = self.encode_prompt(prompts, negatives)
        recorder = TrajectoryRecorder(z) if return_trajectory else None
        z = denoise(self.velocity, sampler, z, cond, uncond, guidance_scale, on_step=recorder, progress=progress)
        images = self.decode_latents(z)
        return recorder.trajectory(images, sampler.timesteps) if return_trajectory else images

    def __repr__(self) -> str:
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        return (
            f"TinyStableDiffusion3(device={self.device}, text_encoder={count(self.text_encoder):,} params, "
            f"mmdit={count(self.mmdit):,} params, vae={count(self.vae):,} params)"
        )
