"""The one denoising loop: every pipeline, editing mode, benchmark and the diffusers bridge run it.

    for i, t in enumerate(sampler.timesteps):
        z_in = sampler.scale_model_input(z, t)                 (identity for DDPM/DDIM)
        eps_uncond, eps_cond = model([z_in, z_in], t, [uncond, cond]).chunk(2)    one batched call
        eps_pred = eps_uncond + w (eps_cond - eps_uncond)      (classifier-free guidance, w = guidance_scale)
        z, x0_pred = sampler.step(eps_pred, t, z, generator)
        z = on_step(i, t, z, x0_pred) or z                     a hook: blending, projections, recording

The timesteps are iterated as the sampler gives them, so a sampler that evaluates the model twice
per step (Heun: its timesteps repeat, as in diffusers) or scales its input (the sigma-parameterised
ones: `scale_model_input`) needs nothing special. At w = 1 the unconditional branch is skipped.

Randomness: `generator` is passed to `sampler.step` as given: one torch.Generator, or a list of B,
one per image (see `image_generators`): image i then draws all its noise from its own stream.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from sdedu._checks import check_number_range, check_tensor
from sdedu.guidance import classifier_free_guidance

# Measured on the shipped model (full prompts, 96 images): adherence is flat from 2 to 3, while
# partial prompts ("a blue shape") lose triangles as the scale grows; 2 keeps both.
DEFAULT_GUIDANCE_SCALE = 2.0

#: on_step(i, t, z, x0_pred) -> a new z, or None to keep z.
StepHook = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], "torch.Tensor | None"]


def image_generators(seed: int, batch_size: int) -> list[torch.Generator]:
    """One CPU torch.Generator per image: image i of a call with `seed` draws from manual_seed(seed + i).

    So image i of a batch is the image that `seed + i` gives alone (diffusers' habit of one
    generator per image, seeded seed + i), and CPU streams moved to the device make an image
    depend on its prompt and seed only: not on the batch it came in, nor on the device it ran on
    (up to float rounding).
    """
    return [torch.Generator().manual_seed(seed + i) for i in range(batch_size)]


@dataclass
class Trajectory:
    """What a pipeline call returns with return_trajectory=True.

    images: (B, 3, H, W) the final images in [0, 1].
    latents: (n + 1, B, C, h, w) the scaled latents z before the first step and after each step.
    x0_preds: (n, B, C, h, w) the sampler's estimate of the clean latent z_0 at each step
        (decode one with `pipe.decode_latents(trajectory.x0_preds[i])`).
    timesteps: (n,) the timestep t of each step.
    """

    images: torch.Tensor
    latents: torch.Tensor
    x0_preds: torch.Tensor
    timesteps: torch.Tensor


class TrajectoryRecorder:
    """An on_step hook that keeps z before the first step and z, x0_pred after every step."""

    def __init__(self, z: torch.Tensor):
        self.latents, self.x0_preds = [z], []

    def __call__(self, i, t, z, x0_pred) -> None:
        self.latents.append(z)
        self.x0_preds.append(x0_pred)

    def trajectory(self, images: torch.Tensor, timesteps: torch.Tensor) -> Trajectory:
        z = self.latents[-1]
        return Trajectory(
            images=images,
            latents=torch.stack(self.latents),  # (n + 1, B, C, h, w)
            x0_preds=torch.stack(self.x0_preds) if self.x0_preds else z.new_zeros((0, *z.shape)),  # (n, B, C, h, w)
            timesteps=timesteps.clone(),
        )


def chain(*hooks: StepHook | None) -> StepHook | None:
    """One hook that runs `hooks` in order, each seeing the z the previous one returned."""
    hooks = [h for h in hooks if h is not None]
    if len(hooks) <= 1:
        return hooks[0] if hooks else None

    def run(i, t, z, x0_pred):
        for hook in hooks:
            new = hook(i, t, z, x0_pred)
            z = z if new is None else new
        return z

    return run


def last_timesteps(sampler, num_inference_steps: int, strength: float) -> torch.Tensor:
    """The tail of `sampler.timesteps` that SDEdit runs: the last round(strength * n) of its n = num_inference_steps steps.

    As diffusers' img2img: a sampler with `order` evaluations per step (Heun: 2) keeps order * kept.
    """
    kept = int(round(strength * num_inference_steps))
    start = (num_inference_steps - kept) * getattr(sampler, "order", 1)
    return sampler.timesteps[start:]


@torch.no_grad()
def denoise(
    model,
    sampler,
    z: torch.Tensor,
    cond: torch.Tensor | None = None,
    uncond: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
    timesteps: torch.Tensor | None = None,
    generator=None,
    on_step: StepHook | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Run the reverse process from z over the sampler's timesteps (module docstring).

    Args:
        model: eps_theta: model(z (B, C, H, W), t (B,), cond (B, L, D)) -> eps_pred (B, C, H, W),
            or model(z, t) when cond is None (an unconditional model, any z (B, ...)).
        sampler: anything with `.timesteps` and `step(eps_pred, t, z, generator) -> (z_prev, x0_pred)`.
        z: (B, C, H, W) the sample at the first timestep (z_T, or an SDEdit start).
        cond: (B, L, D) text embeddings, or None.
        uncond: (B, L, D) embeddings of the empty prompt, for classifier-free guidance, or None.
        guidance_scale: w >= 0; at w = 1 (or without uncond) the model runs once per step.
        timesteps: the timesteps to run (default `sampler.timesteps`; SDEdit passes a tail).
        generator: the sampler's noise: a torch.Generator, a list of B (one per image), or None.
        on_step: on_step(i, t, z, x0_pred) after every step; a tensor it returns replaces z.
        progress: show a progress bar.
    Returns:
        z after the last step (B, C, H, W).
    """
    check_tensor("z", z, floating=True)
    guidance_scale = check_number_range("guidance_scale", guidance_scale, 0.0)
    guided = uncond is not None and guidance_scale != 1.0
    if cond is None:
        context = None
    else:
        context = torch.cat([uncond, cond]) if guided else cond  # (2B, L, D) or (B, L, D)
    scale_input = getattr(sampler, "scale_model_input", None)
    timesteps = sampler.timesteps if timesteps is None else timesteps
    for i, t in enumerate(tqdm(timesteps, disable=not progress, desc="denoising")):
        # 1. The model's input (scaled by the sampler if it asks), both branches in one batch.
        z_in = scale_input(z, t) if scale_input is not None else z
        z_in = torch.cat([z_in, z_in]) if guided else z_in  # (2B, C, H, W) or (B, C, H, W)
        t_in = torch.as_tensor(t, device=z.device).expand(z_in.shape[0])  # (2B,) or (B,)
        eps_pred = model(z_in, t_in) if context is None else model(z_in, t_in, context)
        # 2. Classifier-free guidance: eps_uncond + w (eps_cond - eps_uncond).
        if guided:
            eps_uncond, eps_cond = eps_pred.chunk(2)  # (B, C, H, W) each
            eps_pred = classifier_free_guidance(eps_uncond, eps_cond, guidance_scale)
        # 3. One sampler step z_t -> z_{t_prev}.
        z, x0_pred = sampler.step(eps_pred, t, z, generator=generator)
        # 4. The caller's hook: blend, project or record.
        if on_step is not None:
            new = on_step(i, t, z, x0_pred)
            z = z if new is None else new
    return z
