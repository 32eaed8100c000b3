"""Restoration with a diffusion model: denoising a noisy photo, and super-resolution 16x16 -> 32x32.

Both rest on one observation: a diffusion model is a denoiser for every noise level, so an image
that is *partly* known can be put somewhere along the chain and the rest of the chain finishes it.

1. Denoising (the reverse chain started from the data itself; Ho et al. 2020, section 3.2; the
   same start as SDEdit, Meng et al. 2022). A photo x (in [-1, 1], the model's units) with Gaussian
   noise of std sigma, y = x + sigma n, scaled by sqrt(alpha_bar_t), is

       sqrt(alpha_bar_t) y = sqrt(alpha_bar_t) x + sqrt(alpha_bar_t) sigma n

   which is exactly an x_t of the forward process when sqrt(alpha_bar_t) sigma = sqrt(1 - alpha_bar_t),
   i.e. when SNR(t) = alpha_bar_t / (1 - alpha_bar_t) = 1 / sigma^2. So: pick that t*, set
   x_{t*} = sqrt(alpha_bar_{t*}) y, and either
     - "one_step": read off x0_pred = (x_t - sqrt(1 - alpha_bar) eps_pred) / sqrt(alpha_bar), the
       model's estimate of E[x_0 | x_t] (Tweedie's formula: the least-squares best guess, a little
       blurry because it averages over every clean image that could have produced y), or
     - "ddim": run the deterministic DDIM chain from t* to 0 (sharper: it commits to one image), or
     - "ddpm": run the ancestral DDPM chain from t* to 0 (sharp, and random).
   The model here (`sdedu.models.pixel_denoiser.PixelDenoiser`) is a tiny fully convolutional
   eps-predictor trained on random crops of photos in pixel space
   (`sdedu.training.pixel_denoiser.train_pixel_denoiser`). `denoise` takes and returns photos in
   [0, 1], as every image at sdedu's surface; a noise std sigma on [0, 1] is 2 sigma in [-1, 1].

2. Super-resolution with the shipped text-to-image model (`super_resolve`). The low-resolution
   image y (B, 3, 16, 16) is an observation y = A x of the unknown x (B, 3, 32, 32), where A
   averages each 2x2 block. Two ingredients:
     - SDEdit start: upsample y (bicubic, blurry), encode it, noise it part of the way
       (`strength`) and denoise from there, exactly as `TinyStableDiffusion.img2img` does;
     - data consistency (range-null-space decomposition, Wang et al. 2023 "DDNM", the same idea
       as ILVR, Choi et al. 2021): after every step, decode the model's estimate x0_pred and
       replace the part of it that A sees by what was observed,

           x0_hat = x0_pred - A^+ (A x0_pred - y)          A^+ = nearest upsampling (A A^+ = I)

       so that A x0_hat = y exactly while the model is free to invent the detail A cannot see
       (sharp edges). x0_hat is encoded back to a latent z0_hat and the sampler's step is moved
       by sqrt(alpha_bar_prev) (z0_hat - z0_pred), i.e. the DDIM step is taken with x0_hat in
       place of x0_pred (DDNM, Algorithm 1): a hook of the pipeline's one loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sdedu._checks import check_number_range, check_tensor, describe
from sdedu.diffusion import q_sample, randn_like
from sdedu.pipeline import denoise as denoising_loop
from sdedu.pipeline import image_generators, last_timesteps, make_sampler
from sdedu.pipeline.checks import check_images, check_prompts
from sdedu.schedules import NoiseSchedule

__all__ = [
    "timestep_for_noise_level",
    "denoise",
    "DENOISE_METHODS",
    "downsample",
    "upsample_nearest",
    "upsample_bicubic",
    "project_to_observation",
    "super_resolve",
]

DENOISE_METHODS = ("one_step", "ddim", "ddpm")


# ---- 1. denoising ------------------------------------------------------------------------------


def timestep_for_noise_level(schedule: NoiseSchedule, sigma: float, timesteps=None) -> int:
    """The timestep t whose SNR(t) = alpha_bar_t / (1 - alpha_bar_t) is closest to 1 / sigma^2.

    At that t, sqrt(alpha_bar_t) * (x + sigma n) has the distribution of q(x_t | x) (module docstring).
    Closeness is measured on log SNR, the natural scale of a schedule.

    Args:
        schedule: the model's NoiseSchedule.
        sigma: the noise std, in the units of the model's data (pixels in [-1, 1]: twice the std
            measured on [0, 1] images), > 0.
        timesteps: candidate timesteps (e.g. a sampler's `.timesteps`); default: all of 0..T-1.
    Returns:
        t as an int.
    """
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be a sdedu.schedules.NoiseSchedule; got {describe(schedule)}")
    sigma = check_number_range("sigma", sigma, 1e-6)
    candidates = torch.arange(schedule.T) if timesteps is None else torch.as_tensor(timesteps).long().cpu()
    log_snr = schedule.snr().detach().cpu().double().log()[candidates]  # (K,)
    target = -2.0 * torch.log(torch.tensor(sigma, dtype=torch.float64))  # log(1 / sigma^2)
    return int(candidates[(log_snr - target).abs().argmin()])


@torch.no_grad()
def denoise(
    model: nn.Module,
    noisy: torch.Tensor,
    sigma: float,
    schedule: NoiseSchedule,
    method: str = "ddim",
    num_inference_steps: int = 100,
    generator: torch.Generator | None = None,
    return_start: bool = False,
):
    """Remove Gaussian noise of known std `sigma` from photos with a pixel-space diffusion model.

    1. t* = the sampler timestep whose SNR is closest to 1 / (2 sigma)^2 (`timestep_for_noise_level`;
       the model works on [-1, 1], where the noise std is 2 sigma).
    2. x_{t*} = sqrt(alpha_bar_{t*}) * (2 noisy - 1): the noisy image *is* a sample of q(x_{t*} | x).
    3. "one_step": x0_pred from one model call; "ddim" / "ddpm": the sampler's chain from t* to 0,
       run by the pipeline's one loop.

    Args:
        model: eps-predictor model(x_t (B, C, H, W), t int64 (B,)), trained on pixels in [-1, 1].
        noisy: (B, C, H, W) photos in [0, 1] plus noise (values may leave [0, 1]).
        sigma: the std of the noise in `noisy`, in [0, 1] units.
        schedule: the schedule the model was trained with.
        method: one of DENOISE_METHODS.
        num_inference_steps: the length of the *whole* sampler chain (0..T), of which only the
            part below t* runs; DDIM and DDPM use the same grid of timesteps.
        generator: noise for "ddpm".
        return_start: also return t*.
    Returns:
        the denoised photos (B, C, H, W) in [0, 1]; with return_start, (photos, t*).
    """
    check_tensor("noisy", noisy, ndim=4, floating=True)
    sigma = check_number_range("sigma", sigma, 1e-6)
    if method not in DENOISE_METHODS:
        raise ValueError(f"method must be one of {DENOISE_METHODS}; got {method!r}")
    sampler = make_sampler("ddpm" if method == "ddpm" else "ddim", schedule)
    sampler.set_timesteps(num_inference_steps)
    # 1. Where on the chain this much noise sits.
    t_start = timestep_for_noise_level(schedule, 2 * sigma, sampler.timesteps)
    timesteps = sampler.timesteps[sampler.timesteps <= t_start]
    # 2. The noisy image, in [-1, 1] and scaled, is x_{t*}.
    x_t = schedule.alpha_bar[t_start].to(noisy.device) ** 0.5 * (2 * noisy - 1)
    # 3. The chain (one step only for "one_step": Tweedie's formula), keeping the x_0 estimates.
    x0_preds = []
    x_0 = denoising_loop(
        model,
        sampler,
        x_t,
        timesteps=timesteps[:1] if method == "one_step" else timesteps,
        generator=generator,
        on_step=lambda i, t, x, x0_pred: x0_preds.append(x0_pred),
    )
    # 4. DDPM's last step lands on x_0; DDIM's lands one step of noise short of it (alpha_bar[0],
    #    Stable Diffusion's convention), so DDIM and one_step return the last x0_pred.
    out = (x_0 if method == "ddpm" else x0_preds[-1]).clamp(-1.0, 1.0)
    out = (out + 1) / 2  # back to [0, 1]
    return (out, t_start) if return_start else out


# ---- 2. super-resolution -----------------------------------------------------------------------


def downsample(images: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """A: average each factor x factor block. (B, C, H, W) -> (B, C, H / factor, W / factor)."""
    check_tensor("images", images, ndim=4, floating=True)
    return F.avg_pool2d(images, factor)


def upsample_nearest(images: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """A^+: repeat every pixel factor x factor times, the pseudo-inverse of `downsample` (A A^+ = I)."""
    check_tensor("images", images, ndim=4, floating=True)
    return F.interpolate(images, scale_factor=factor, mode="nearest")


def upsample_bicubic(images: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """The classical baseline: bicubic interpolation, clamped to [0, 1]."""
    check_tensor("images", images, ndim=4, floating=True)
    return F.interpolate(images, scale_factor=factor, mode="bicubic", align_corners=False).clamp(0.0, 1.0)


def project_to_observation(images: torch.Tensor, low_res: torch.Tensor) -> torch.Tensor:
    """x_hat = x - A^+ (A x - y): the image closest to x (in its null-space part) with A x_hat = y.

    Keeps what `downsample` cannot see (the detail) and takes what it can see from the observation.
    """
    factor = images.shape[-1] // low_res.shape[-1]
    return images - upsample_nearest(downsample(images, factor) - low_res, factor)


@torch.no_grad()
def super_resolve(
    pipe,
    low_res: torch.Tensor,
    prompt="",
    strength: float = 0.6,
    num_inference_steps: int = 25,
    guidance_scale: float = 1.0,
    consistency: bool = True,
    seed: int = 0,
    progress: bool = False,
) -> torch.Tensor:
    """16x16 -> 32x32 with a TinyStableDiffusion: SDEdit from the bicubic upsampling, plus DDNM's
    data-consistency projection after every step (module docstring, part 2).

    Args:
        pipe: a `sdedu.pipeline.TinyStableDiffusion`.
        low_res: (B, 3, 16, 16) or (3, 16, 16) in [0, 1].
        prompt: a str or B str; "" (the default) asks for no particular content.
        strength: in (0, 1], the fraction of the chain that runs (as in img2img).
        num_inference_steps: DDIM steps of the whole chain.
        guidance_scale: classifier-free guidance (1: the conditional prediction alone, one UNet
            call per step).
        consistency: apply the projection (False: plain SDEdit from the upsampled image).
        seed: image i draws its noise from its own stream (as in the pipeline).
        progress: show a progress bar.
    Returns:
        (B, 3, 32, 32) in [0, 1]. With consistency, downsample(result) equals low_res (up to the
        clamp to [0, 1]).
    """
    low_res = check_images("low_res", low_res, 3, pipe.image_size // 2).to(pipe.device)
    strength = check_number_range("strength", strength, 0.0, 1.0)
    if strength == 0.0:
        raise ValueError("strength must be in (0, 1] for super-resolution (0 would return the bicubic image); got 0")
    prompts = check_prompts(prompt)
    prompts = prompts * low_res.shape[0] if len(prompts) == 1 else prompts
    if len(prompts) != low_res.shape[0]:
        raise ValueError(f"prompt must be one str or one per image ({low_res.shape[0]}); got {len(prompts)} prompts")
    generators = image_generators(seed, low_res.shape[0])
    # 1. Embeddings and the last round(strength * n) timesteps (at least one) of the DDIM chain.
    cond, uncond = pipe.encode_prompt(prompts)
    sampler = pipe.make_sampler("ddim")
    sampler.set_timesteps(num_inference_steps)
    timesteps = last_timesteps(sampler, num_inference_steps, strength)
    timesteps = timesteps if len(timesteps) else sampler.timesteps[-1:]
    # 2. SDEdit start: the bicubic upsampling, encoded and noised to the first kept timestep.
    z0 = pipe.encode_images(upsample_bicubic(low_res))  # (B, 4, 8, 8)
    z = q_sample(z0, int(timesteps[0]), pipe.schedule, noise=randn_like(z0, generators))

    def project(i, t, z, z0_pred):
        # 3. Data consistency: decode x0_pred, take A's part from the observation, encode back.
        x0_hat = project_to_observation(pipe.decode_latents(z0_pred), low_res).clamp(0.0, 1.0)
        z0_hat = pipe.encode_images(x0_hat)
        # 4. The DDIM step with z0_hat instead of z0_pred: shift by sqrt(alpha_bar_prev) (z0_hat - z0_pred).
        return z + sampler.previous_alpha_bar(t) ** 0.5 * (z0_hat - z0_pred)

    # The pipeline's one loop: guided noise prediction, the sampler's step, then the projection.
    z = denoising_loop(
        pipe.unet,
        sampler,
        z,
        cond,
        uncond,
        guidance_scale,
        timesteps=timesteps,
        generator=generators,
        on_step=project if consistency else None,
        progress=progress,
    )
    # 5. Decode; with consistency, project once more so the VAE's round trip cannot break A x = y.
    images = pipe.decode_latents(z)
    return project_to_observation(images, low_res).clamp(0.0, 1.0) if consistency else images
