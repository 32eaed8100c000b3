"""Editing with a diffusion model: denoising a noisy photo, and super-resolution 16x16 -> 32x32.

Both rest on one observation: a diffusion model is a denoiser for every noise level, so an image
that is *partly* known can be put somewhere along the chain and the rest of the chain finishes it.

1. Denoising (the reverse chain started from the data itself; Ho et al. 2020, section 3.2; the
   same start as SDEdit, Meng et al. 2022). A photo x (in [-1, 1]) with Gaussian noise of std sigma,
   y = x + sigma n, scaled by sqrt(alpha_bar_t), is

       sqrt(alpha_bar_t) y = sqrt(alpha_bar_t) x + sqrt(alpha_bar_t) sigma n

   which is exactly an x_t of the forward process when sqrt(alpha_bar_t) sigma = sqrt(1 - alpha_bar_t),
   i.e. when SNR(t) = alpha_bar_t / (1 - alpha_bar_t) = 1 / sigma^2. So: pick that t*, set
   x_{t*} = sqrt(alpha_bar_{t*}) y, and either
     - "one_step": read off x0_pred = (x_t - sqrt(1 - alpha_bar) eps_pred) / sqrt(alpha_bar), the
       model's estimate of E[x_0 | x_t] (Tweedie's formula: the least-squares best guess, a little
       blurry because it averages over every clean image that could have produced y), or
     - "ddim": run the deterministic DDIM chain from t* to 0 (sharper: it commits to one image), or
     - "ddpm": run the ancestral DDPM chain from t* to 0 (sharp, and random).
   The model here (`PixelDenoiser`) is a tiny fully convolutional eps-predictor trained on random
   crops of photos in pixel space (`train_pixel_denoiser`).

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
       place of x0_pred (DDNM, Algorithm 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from sdedu._checks import check_int_range, check_number_range, check_tensor, describe
from sdedu.diffusion import q_sample, randn_like
from sdedu.guidance import classifier_free_guidance
from sdedu.nn.blocks import ResBlock
from sdedu.nn.embeddings import TimestepEmbedding
from sdedu.samplers import DDIMSampler, DDPMSampler
from sdedu.schedules import NoiseSchedule

__all__ = [
    "timestep_for_noise_level",
    "PixelDenoiserConfig",
    "PixelDenoiser",
    "random_crops",
    "train_pixel_denoiser",
    "denoise",
    "DENOISE_METHODS",
    "downsample",
    "upsample_nearest",
    "upsample_bicubic",
    "project_to_observation",
    "super_resolve",
    "psnr",
]

DENOISE_METHODS = ("one_step", "ddim", "ddpm")


# ---- 1. denoising ------------------------------------------------------------------------------


def timestep_for_noise_level(schedule: NoiseSchedule, sigma: float, timesteps=None) -> int:
    """The timestep t whose SNR(t) = alpha_bar_t / (1 - alpha_bar_t) is closest to 1 / sigma^2.

    At that t, sqrt(alpha_bar_t) * (x + sigma n) has the distribution of q(x_t | x) (module docstring).
    Closeness is measured on log SNR, the natural scale of a schedule.

    Args:
        schedule: the model's NoiseSchedule.
        sigma: the noise std of the image, in the units of the data ([-1, 1] images), > 0.
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


@dataclass
class PixelDenoiserConfig:
    """Sizes of a `PixelDenoiser`.

    channels: feature channels (the same at every layer: no downsampling, any H and W work).
    num_blocks: time-conditioned ResBlocks; each (two 3x3 convolutions) widens the receptive field by 2 pixels per side.
    norm_groups: GroupNorm groups (must divide channels).
    in_channels: image channels (3 for RGB).
    """

    channels: int = 32
    num_blocks: int = 3
    norm_groups: int = 8
    in_channels: int = 3

    def __post_init__(self):
        check_int_range("channels", self.channels, 1, 4096)
        check_int_range("num_blocks", self.num_blocks, 1, 64)
        check_int_range("in_channels", self.in_channels, 1, 64)
        if self.channels % self.norm_groups:
            raise ValueError(f"norm_groups must divide channels ({self.channels}); got {self.norm_groups}")


class PixelDenoiser(nn.Module):
    """eps_theta(x_t, t) for images of any size: conv_in, ResBlocks with the timestep, conv_out.

    Fully convolutional with a small receptive field (2 + 2 * num_blocks pixels per side: 17x17 for 3 blocks), so it
    learns local image statistics (edges, smooth skin, texture) rather than whole pictures, and a
    model trained on 16x16 crops denoises a 64x64 photo.
    """

    def __init__(self, config: PixelDenoiserConfig | None = None):
        super().__init__()
        self.config = c = config or PixelDenoiserConfig()
        time_dim = 4 * c.channels
        self.time_embedding = TimestepEmbedding(c.channels, time_dim)
        self.conv_in = nn.Conv2d(c.in_channels, c.channels, 3, padding=1)
        self.blocks = nn.ModuleList(
            ResBlock(c.channels, c.channels, time_dim, norm_groups=c.norm_groups) for _ in range(c.num_blocks)
        )
        self.norm_out = nn.GroupNorm(c.norm_groups, c.channels)
        self.conv_out = nn.Conv2d(c.channels, c.in_channels, 3, padding=1)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t (B, C, H, W), t (B,) int64 -> eps_pred (B, C, H, W)."""
        check_tensor("x_t", x_t, ndim=4, floating=True)
        if x_t.shape[1] != self.config.in_channels:
            raise ValueError(f"x_t must have shape (B, {self.config.in_channels}, H, W); got {describe(x_t)}")
        check_tensor("t", t, ndim=1)
        # 1. The noise level, as features every block sees.
        temb = self.time_embedding(t)  # (B, 4 * channels)
        # 2. Local features, refined block by block.
        h = self.conv_in(x_t)  # (B, channels, H, W)
        for block in self.blocks:
            h = block(h, temb)
        # 3. Back to image channels: the predicted noise.
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, C, H, W)


def random_crops(images, batch_size: int, crop: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A batch of random crop x crop patches, randomly mirrored left-right.

    Args:
        images: a list of images (C, H, W) or (1, C, H, W), each at least crop x crop; they may
            differ in size (e.g. one photo at several scales).
        batch_size: patches to return.
        crop: side of a patch in pixels.
        generator: randomness (which image, where, whether mirrored).
    Returns:
        (batch_size, C, crop, crop).
    """
    if isinstance(images, torch.Tensor):
        images = list(images) if images.ndim == 4 else [images]
    images = [im[0] if im.ndim == 4 else im for im in images]
    if not images:
        raise ValueError("images must hold at least one image; got an empty list")
    for i, im in enumerate(images):
        check_tensor(f"images[{i}]", im, ndim=3, floating=True)
        if min(im.shape[-2:]) < crop:
            raise ValueError(f"images[{i}] must be at least {crop}x{crop} pixels (the crop); got {describe(im)}")
    patches = []
    for _ in range(batch_size):
        im = images[int(torch.randint(len(images), (1,), generator=generator))]
        top = int(torch.randint(im.shape[1] - crop + 1, (1,), generator=generator))
        left = int(torch.randint(im.shape[2] - crop + 1, (1,), generator=generator))
        patch = im[:, top : top + crop, left : left + crop]  # (C, crop, crop)
        if bool(torch.rand((), generator=generator) < 0.5):
            patch = patch.flip(-1)
        patches.append(patch)
    return torch.stack(patches)  # (batch_size, C, crop, crop)


def train_pixel_denoiser(
    images,
    schedule: NoiseSchedule,
    steps: int = 2000,
    batch_size: int = 16,
    crop: int = 16,
    lr: float = 2e-3,
    max_timestep: int | None = None,
    config: PixelDenoiserConfig | None = None,
    generator: torch.Generator | None = None,
    device="cpu",
    progress: bool = True,
) -> tuple[PixelDenoiser, list[float]]:
    """Train a `PixelDenoiser` on random crops with the simple loss (Ho et al. 2020, Algorithm 1).

    loss = || eps - eps_theta(sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, t) ||^2,
    t ~ Uniform{0, ..., max_timestep - 1}. Denoising a mildly noisy photo only starts the chain at
    a small t, so training can leave out the high-noise end (max_timestep < T); generating from
    pure noise would need all of it. AdamW with a cosine decay of the learning rate.

    Args:
        images: list of images (C, H, W) in [-1, 1] to crop from (see `random_crops`).
        schedule: the noise schedule.
        steps, batch_size, crop, lr: the optimisation.
        max_timestep: train on t < max_timestep (default: T).
        config: sizes of the model.
        generator: randomness for crops, t and eps.
        device: where to train.
        progress: show a tqdm bar.
    Returns:
        (model in eval mode, per-step losses).
    """
    steps = check_int_range("steps", steps, 1, 10_000_000)
    batch_size = check_int_range("batch_size", batch_size, 1, 100_000)
    max_timestep = schedule.T if max_timestep is None else check_int_range("max_timestep", max_timestep, 1, schedule.T)
    device = torch.device(device)
    model = PixelDenoiser(config).to(device).train()
    schedule = schedule.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    losses = []
    for _ in tqdm(range(steps), desc="training the pixel denoiser", disable=not progress):
        # 1. Clean patches x_0, a timestep and the noise (drawn on the CPU generator).
        x0 = random_crops(images, batch_size, crop, generator).to(device)  # (B, C, crop, crop)
        t = torch.randint(0, max_timestep, (batch_size,), generator=generator).to(device)  # (B,)
        eps = randn_like(x0.cpu(), generator).to(device)
        # 2. x_t in one jump (eq. 4), and the error of the predicted noise (eq. 14).
        loss = F.mse_loss(model(q_sample(x0, t, schedule, noise=eps), t), eps)
        # 3. One optimiser step.
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        decay.step()
        losses.append(loss.item())
    return model.eval(), losses


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
    """Remove Gaussian noise of known std `sigma` from images with a pixel-space diffusion model.

    1. t* = the sampler timestep whose SNR is closest to 1 / sigma^2 (`timestep_for_noise_level`).
    2. x_{t*} = sqrt(alpha_bar_{t*}) * noisy: the noisy image *is* a sample of q(x_{t*} | x).
    3. "one_step": x0_pred from one model call; "ddim" / "ddpm": the sampler's chain from t* to 0.

    Args:
        model: eps-predictor model(x_t (B, C, H, W), t int64 (B,)).
        noisy: (B, C, H, W) images in the data's units ([-1, 1] plus noise).
        sigma: the std of the noise in `noisy`.
        schedule: the schedule the model was trained with.
        method: one of DENOISE_METHODS.
        num_inference_steps: the length of the *whole* sampler chain (0..T), of which only the
            part below t* runs; DDIM and DDPM use the same grid of timesteps.
        generator: noise for "ddpm".
        return_start: also return t*.
    Returns:
        the denoised images (B, C, H, W), clamped to [-1, 1]; with return_start, (images, t*).
    """
    check_tensor("noisy", noisy, ndim=4, floating=True)
    if method not in DENOISE_METHODS:
        raise ValueError(f"method must be one of {DENOISE_METHODS}; got {method!r}")
    sampler = DDPMSampler(schedule) if method == "ddpm" else DDIMSampler(schedule)
    sampler.set_timesteps(num_inference_steps)
    # 1. Where on the chain this much noise sits.
    t_start = timestep_for_noise_level(schedule, sigma, sampler.timesteps)
    timesteps = sampler.timesteps[sampler.timesteps <= t_start]
    # 2. The noisy image, scaled, is x_{t*}.
    x_t = schedule.alpha_bar[t_start].to(noisy.device) ** 0.5 * noisy
    B = noisy.shape[0]
    for t in timesteps:
        eps_pred = model(x_t, torch.full((B,), int(t), dtype=torch.long, device=noisy.device))
        x_t, x0_pred = sampler.step(eps_pred, t, x_t, generator=generator)
        # 3a. One step: stop at the first estimate of x_0 (Tweedie's formula).
        if method == "one_step":
            break
    # 4. DDPM's last step lands on x_0; DDIM's lands one step of noise short of it (alpha_bar[0],
    #    Stable Diffusion's convention), so DDIM and one_step return the last x0_pred.
    out = (x_t if method == "ddpm" else x0_pred).clamp(-1.0, 1.0)
    return (out, t_start) if return_start else out


def psnr(images: torch.Tensor, reference: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, in dB: 10 log10(data_range^2 / MSE). (B,) tensor.

    data_range is the span of the values: 1 for [0, 1] images, 2 for [-1, 1].
    """
    check_tensor("images", images, ndim=4, floating=True)
    check_tensor("reference", reference, ndim=4, floating=True)
    if images.shape != reference.shape:
        raise ValueError(f"images must have the shape of reference {tuple(reference.shape)}; got {describe(images)}")
    mse = (images.float() - reference.float()).pow(2).flatten(1).mean(dim=1).clamp(min=1e-12)
    return 10.0 * torch.log10(data_range**2 / mse)


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


def _check_low_res(low_res) -> torch.Tensor:
    check_tensor("low_res", low_res, floating=True)
    if low_res.ndim == 3:
        low_res = low_res.unsqueeze(0)
    if low_res.ndim != 4 or tuple(low_res.shape[1:]) != (3, 16, 16):
        raise ValueError(f"low_res must have shape (B, 3, 16, 16) or (3, 16, 16) in [0, 1]; got {describe(low_res)}")
    if float(low_res.min()) < 0.0 or float(low_res.max()) > 1.0:
        low, high = float(low_res.min()), float(low_res.max())
        raise ValueError(f"low_res must have values in [0, 1]; got values in [{low:.3g}, {high:.3g}]")
    return low_res


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
        guidance_scale: classifier-free guidance (1: the conditional prediction alone).
        consistency: apply the projection (False: plain SDEdit from the upsampled image).
        seed: seeds the noise.
        progress: show a progress bar.
    Returns:
        (B, 3, 32, 32) in [0, 1]. With consistency, downsample(result) equals low_res (up to the
        clamp to [0, 1]).
    """
    low_res = _check_low_res(low_res).to(pipe.device)
    strength = check_number_range("strength", strength, 0.0, 1.0)
    if strength == 0.0:
        raise ValueError("strength must be in (0, 1] for super-resolution (0 would return the bicubic image); got 0")
    prompts = [prompt] * low_res.shape[0] if isinstance(prompt, str) else list(prompt)
    if len(prompts) != low_res.shape[0]:
        raise ValueError(f"prompt must be one str or one per image ({low_res.shape[0]}); got {len(prompts)} prompts")
    generator = torch.Generator(device=pipe.device).manual_seed(seed)
    schedule = pipe.schedule
    # 1. Embeddings and the last round(strength * N) timesteps of the DDIM chain.
    cond, uncond = pipe.encode_prompt(prompts)
    sampler = pipe.make_sampler("ddim")
    sampler.set_timesteps(num_inference_steps)
    kept = max(1, int(round(strength * num_inference_steps)))
    timesteps = sampler.timesteps[num_inference_steps - kept :]
    # 2. SDEdit start: the bicubic upsampling, encoded and noised to the first kept timestep.
    z0 = pipe.encode_images(upsample_bicubic(low_res))  # (B, 4, 8, 8)
    z = q_sample(z0, int(timesteps[0]), schedule, noise=randn_like(z0, generator))
    B = z.shape[0]
    for t in tqdm(timesteps, desc="super-resolution", disable=not progress):
        # 3. Guided noise prediction (one batched UNet call) and the sampler's step.
        t_batch = torch.full((2 * B,), int(t), dtype=torch.long, device=pipe.device)
        eps_uncond, eps_cond = pipe.unet(torch.cat([z, z]), t_batch, torch.cat([uncond, cond])).chunk(2)
        eps_pred = classifier_free_guidance(eps_uncond, eps_cond, guidance_scale)
        z, z0_pred = sampler.step(eps_pred, t, z, generator=generator)
        if not consistency:
            continue
        # 4. Data consistency: decode x0_pred, take A's part from the observation, encode back.
        x0_hat = project_to_observation(pipe.decode_latents(z0_pred), low_res).clamp(0.0, 1.0)
        z0_hat = pipe.encode_images(x0_hat)
        # 5. The DDIM step with z0_hat instead of z0_pred: shift by sqrt(alpha_bar_prev) (z0_hat - z0_pred).
        t_prev = int(t) - sampler.step_ratio
        alpha_bar_prev = schedule.alpha_bar[t_prev] if t_prev >= 0 else sampler.final_alpha_bar
        z = z + alpha_bar_prev**0.5 * (z0_hat - z0_pred)
    # 6. Decode; with consistency, project once more so the VAE's round trip cannot break A x = y.
    images = pipe.decode_latents(z)
    return project_to_observation(images, low_res).clamp(0.0, 1.0) if consistency else images
