"""From sdedu to Hugging Face `diffusers`: the same model with diffusers' schedulers, and a diffusers UNet.

sdedu keeps diffusers' separation of roles (STYLE.md): samplers hold no parameters and never call
the model; models know nothing about beta or alpha_bar; the pipeline shows the loop. So the parts
swap across the two libraries:

1. **Schedulers.** `make_scheduler("ddim", schedule)` builds a diffusers scheduler with sdedu's
   exact betas (`trained_betas`) and Stable Diffusion v1's conventions ("leading" timesteps,
   steps_offset 1, set_alpha_to_one False, no clipping) - the configuration under which
   `sdedu.samplers.DDIMSampler` equals `diffusers.DDIMScheduler`. `DiffusersSampler(scheduler)`
   gives a diffusers scheduler sdedu's sampler face, and `sample_with_scheduler(pipe, ...)` runs
   sdedu's one loop (`sdedu.pipeline.denoise`) with it - which is diffusers' loop:

       latents = noise * scheduler.init_noise_sigma
       for t in scheduler.timesteps:
           model_input = scheduler.scale_model_input(latents, t)
           eps_uncond, eps_cond = unet(cat([model_input] * 2), t, cat([uncond, cond])).chunk(2)
           latents = scheduler.step(guided eps, t, latents).prev_sample

   (`init_noise_sigma` and `scale_model_input` are 1 and the identity for DDPM/DDIM; the
   sigma-parameterised schedulers, Euler and DPM-Solver, need them.)
2. **A diffusers UNet.** `unet2d_condition_config(UNetConfig())` gives the config of a
   `UNet2DConditionModel` with sdedu's layout (two levels, 8x8 and 4x4, the same channels, a
   cross-attention transformer at every level, the same head width); `DiffusersUNet` wraps one so
   it is called like sdedu's UNet, `unet(x_t, t, cond) -> eps_pred`, and drops into
   `TinyStableDiffusion` and `sdedu.diffusion.noise_prediction_loss` unchanged.

diffusers names things differently; the conversion table:

| sdedu                                   | diffusers                                      |
|-----------------------------------------|------------------------------------------------|
| `DDIMSampler(schedule)`                 | `DDIMScheduler(trained_betas=..., ...)`        |
| `sampler.step(eps, t, x).x_prev`        | `scheduler.step(eps, t, x).prev_sample`        |
| `... .x0_pred`                          | `... .pred_original_sample`                    |
| `schedule.alpha_bar`                    | `scheduler.alphas_cumprod`                     |
| `unet(x_t, t, cond)`                    | `unet(x_t, t, encoder_hidden_states=cond).sample` |
| `vae.scale_factor`                      | `vae.config.scaling_factor`                    |
| `UNetConfig.channels`                   | `block_out_channels`                           |
| `UNetConfig.context_dim`                | `cross_attention_dim`                          |

diffusers is imported only inside these functions: the rest of sdedu never needs it.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from sdedu._checks import check_int_range, check_number_range, describe
from sdedu.diffusion import randn
from sdedu.pipeline import DEFAULT_GUIDANCE_SCALE, denoise, image_generators
from sdedu.pipeline.checks import check_prompts
from sdedu.samplers import SamplerStep
from sdedu.schedules import NoiseSchedule

__all__ = [
    "SCHEDULERS",
    "scheduler_config",
    "make_scheduler",
    "DiffusersSampler",
    "sample_with_scheduler",
    "unet2d_condition_config",
    "build_diffusers_unet",
    "DiffusersUNet",
    "parameter_count",
]

#: The diffusers schedulers `make_scheduler` knows, by short name.
SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
    "euler": "EulerDiscreteScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
}


def scheduler_config(schedule: NoiseSchedule) -> dict:
    """The keyword arguments every diffusers scheduler needs to share sdedu's noise schedule.

    `trained_betas` hands over the exact beta_t table (float32 -> list), so alphas_cumprod equals
    `schedule.alpha_bar` whatever formula made it; "leading" spacing with steps_offset=1 is
    Stable Diffusion v1's choice of timesteps, which sdedu's DDIM uses.
    """
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be a sdedu.schedules.NoiseSchedule; got {describe(schedule)}")
    return {
        "num_train_timesteps": schedule.T,
        "trained_betas": schedule.betas.detach().cpu().tolist(),
        "prediction_type": "epsilon",
        "timestep_spacing": "leading",
        "steps_offset": 1,
    }


def make_scheduler(name: str, schedule: NoiseSchedule):
    """A diffusers scheduler for `schedule`: "ddim", "ddpm", "euler" or "dpm++" (see SCHEDULERS).

    "ddim" equals sdedu's `DDIMSampler(schedule)` step for step (set_alpha_to_one=False,
    clip_sample=False); "ddpm" uses steps_offset=0 and equals `DDPMSampler`; "euler" is Karras et
    al. 2022's Euler method on the probability-flow ODE; "dpm++" is DPM-Solver++(2M) (Lu et al. 2022).
    """
    import diffusers

    if name not in SCHEDULERS:
        raise ValueError(f"name must be one of {sorted(SCHEDULERS)}; got {name!r}")
    config = scheduler_config(schedule)
    if name == "ddim":
        config.update(clip_sample=False, set_alpha_to_one=False)
    elif name == "ddpm":
        config.update(clip_sample=False, variance_type="fixed_small", steps_offset=0)
    elif name == "dpm++":
        config.update(algorithm_type="dpmsolver++", solver_order=2)
    return getattr(diffusers, SCHEDULERS[name])(**config)


class DiffusersSampler:
    """A diffusers scheduler with sdedu's sampler face, so that sdedu's one loop can run it.

    `.timesteps`, `scale_model_input(z, t)` and `step(eps_pred, t, z, generator) -> SamplerStep`
    (x_prev = `prev_sample`, x0_pred = `pred_original_sample`, None where a scheduler has none).
    """

    def __init__(self, scheduler):
        if not hasattr(scheduler, "step") or not hasattr(scheduler, "set_timesteps"):
            raise TypeError(f"scheduler must be a diffusers scheduler (set_timesteps, step); got {describe(scheduler)}")
        self.scheduler = scheduler
        # Not every step takes a generator (Heun's does not): diffusers' pipelines ask the same way
        # (StableDiffusionPipeline.prepare_extra_step_kwargs).
        self.takes_generator = "generator" in inspect.signature(scheduler.step).parameters

    @property
    def timesteps(self) -> torch.Tensor:
        return self.scheduler.timesteps

    def scale_model_input(self, z: torch.Tensor, t) -> torch.Tensor:
        return self.scheduler.scale_model_input(z, t)

    def step(self, eps_pred: torch.Tensor, t, z: torch.Tensor, generator=None) -> SamplerStep:
        extra = {"generator": generator} if self.takes_generator else {}
        out = self.scheduler.step(eps_pred, t, z, **extra)
        return SamplerStep(x_prev=out.prev_sample, x0_pred=getattr(out, "pred_original_sample", None))


@torch.no_grad()
def sample_with_scheduler(
    pipe,
    prompt,
    scheduler,
    num_inference_steps: int = 25,
    guidance_scale: float | None = None,
    seed: int = 0,
    return_latents: bool = False,
):
    """Text-to-image with sdedu's models and a diffusers scheduler, in sdedu's one loop.

    The starting noise is drawn exactly as `TinyStableDiffusion.__call__` draws it (image i from
    its own stream, `image_generators(seed, B)`), and the scheduler's own noise comes from the same
    streams, so with `make_scheduler("ddim", pipe.schedule)` the images equal
    `pipe(prompt, sampler="ddim", seed=seed)` up to float rounding.

    Args:
        pipe: a `sdedu.pipeline.TinyStableDiffusion`.
        prompt: a str or a list of str.
        scheduler: a diffusers scheduler (e.g. from `make_scheduler`).
        num_inference_steps: scheduler steps.
        guidance_scale: classifier-free guidance (default: the pipeline's default).
        seed: seeds the starting noise (and any noise the scheduler adds).
        return_latents: also return the final latents.
    Returns:
        images (B, 3, 32, 32) in [0, 1]; with return_latents, (images, latents (B, 4, 8, 8)).
    """
    check_int_range("num_inference_steps", num_inference_steps, 1, pipe.schedule.T - 1)
    guidance_scale = DEFAULT_GUIDANCE_SCALE if guidance_scale is None else guidance_scale
    guidance_scale = check_number_range("guidance_scale", guidance_scale, 0.0)
    sampler = DiffusersSampler(scheduler)
    prompts = check_prompts(prompt)
    generators = image_generators(check_int_range("seed", seed, 0, 2**63 - 1), len(prompts))
    # 1. Prompt embeddings (cond and the empty prompt's), as in the sdedu pipeline.
    cond, uncond = pipe.encode_prompt(prompts)
    # 2. The scheduler's timesteps.
    scheduler.set_timesteps(num_inference_steps, device=pipe.device)
    # 3. Starting noise, scaled to the scheduler's initial std (1 for DDPM/DDIM, sigma_max for Euler).
    latents = randn((len(prompts), *pipe.latent_shape), generators, pipe.device) * scheduler.init_noise_sigma

    def unet(z, t, context):  # Euler's timesteps are floats; the UNet embeds integer ones
        return pipe.unet(z, t.round().long() if t.is_floating_point() else t, context)

    # 4. sdedu's loop: scale, both branches in one UNet call, guidance, the scheduler's update.
    latents = denoise(unet, sampler, latents, cond, uncond, guidance_scale, generator=generators)
    # 5. Decode with sdedu's VAE.
    images = pipe.decode_latents(latents)
    return (images, latents) if return_latents else images


def unet2d_condition_config(config=None, in_channels: int | None = None) -> dict:
    """The config of a diffusers `UNet2DConditionModel` laid out like sdedu's `UNet(config)`.

    Two resolution levels (8x8 and 4x4 for 8x8 latents) with `config.channels`, a cross-attention
    transformer at both and in the middle, heads of `config.head_dim` channels, one ResBlock per
    level on the way down (diffusers' up path has one more per level, and its middle block two:
    so the diffusers model has more parameters than sdedu's for the same channels).

    Note the name trap: in UNet2DConditionModel `attention_head_dim` means the *number* of heads
    per level when `num_attention_heads` is unset (a historical naming bug kept for compatibility),
    so the heads are given explicitly as channels // head_dim.
    """
    from sdedu.models.unet import UNetConfig

    config = config or UNetConfig()
    if not isinstance(config, UNetConfig):
        raise TypeError(f"config must be a sdedu.models.unet.UNetConfig; got {describe(config)}")
    heads = tuple(c // config.head_dim for c in config.channels)
    channels = in_channels or config.in_channels
    return {
        "sample_size": config.sample_size,
        "in_channels": channels,
        "out_channels": channels,
        "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        "block_out_channels": tuple(config.channels),
        "layers_per_block": 1,
        "cross_attention_dim": config.context_dim,
        "attention_head_dim": heads,
        "norm_num_groups": config.norm_groups,
    }


def build_diffusers_unet(config=None, seed: int = 0):
    """A freshly initialised `UNet2DConditionModel` with `unet2d_condition_config(config)`."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)  # diffusers initialises with the global generator
    return UNet2DConditionModel(**unet2d_condition_config(config))


class DiffusersUNet(nn.Module):
    """A diffusers UNet2DConditionModel called like sdedu's UNet: (x_t, t, cond) -> eps_pred.

    Args:
        unet: a `UNet2DConditionModel` (e.g. from `build_diffusers_unet`).
    """

    def __init__(self, unet):
        super().__init__()
        self.unet = unet
        self.config = unet.config

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x_t (B, 4, 8, 8), t (B,) int64, cond (B, L, D) -> eps_pred (B, 4, 8, 8)."""
        return self.unet(x_t, t, encoder_hidden_states=cond).sample


def parameter_count(module: nn.Module) -> int:
    """Number of parameters of a module."""
    return sum(p.numel() for p in module.parameters())
