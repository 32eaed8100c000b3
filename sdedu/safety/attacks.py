"""What a watermark must survive: the image edits of Tree-Ring's robustness table, at the course's 32x32.

Wen et al. 2023 (section 4.3, robustness) attack 512x512 images with a Gaussian blur, Gaussian
noise, JPEG compression, rotations, crops and colour jitter. Here: the blur, the noise, JPEG quality
75, a shift by one pixel (the smallest crop) and a diffusion re-generation (img2img, SDEdit, at
strength 0.3 with the image's own prompt: an attacker who keeps the content).

Each attack: images (B, 3, 32, 32) in [0, 1] -> attacked images, same shape, in [0, 1].
"""

from __future__ import annotations

import io

import torch
import torch.nn.functional as F

from sdedu.pipeline.checks import check_images

__all__ = ["ATTACKS", "gaussian_blur", "additive_noise", "jpeg", "shift", "regenerate"]

BLUR_SIGMA = 1.0  # px: Tree-Ring's blur (radius 4 in their code) of 512 px images would be 0.25 px here, too little
NOISE_STD = 0.1  # as Tree-Ring's Gaussian-noise attack (sigma = 0.1, section 4.3; their code: 0.1 * 255 on 0-255)
JPEG_QUALITY = 75
REGENERATE_STRENGTH = 0.3


def gaussian_blur(images: torch.Tensor, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """A separable Gaussian blur (kernel 2 ceil(2 sigma) + 1, edges replicated)."""
    images = check_images("images", images, 3, images.shape[-1])
    half = max(1, int(2 * sigma + 0.999))
    x = torch.arange(-half, half + 1, dtype=images.dtype)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    out = F.pad(images, (half, half, half, half), mode="replicate")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(3, 1, 1, -1).contiguous(), groups=3)
    out = F.conv2d(out, kernel.view(1, 1, -1, 1).expand(3, 1, -1, 1).contiguous(), groups=3)
    return out.clamp(0.0, 1.0)  # rounding can step a hair outside


def additive_noise(images: torch.Tensor, std: float = NOISE_STD, seed: int = 0) -> torch.Tensor:
    """images + N(0, std^2) per pixel, clamped to [0, 1]."""
    images = check_images("images", images, 3, images.shape[-1])
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    return (images + std * noise.to(images)).clamp(0.0, 1.0)


def jpeg(images: torch.Tensor, quality: int = JPEG_QUALITY) -> torch.Tensor:
    """Each image saved as a JPEG of `quality` with Pillow (4:2:0 chroma subsampling, its default) and read back."""
    from PIL import Image

    images = check_images("images", images, 3, images.shape[-1])
    out = []
    for image in images:
        pixels = (image.permute(1, 2, 0) * 255).round().to(torch.uint8).cpu().numpy()
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
        decoded = torch.frombuffer(bytearray(Image.open(buffer).convert("RGB").tobytes()), dtype=torch.uint8)
        out.append(decoded.view(*pixels.shape).permute(2, 0, 1).float() / 255)
    return torch.stack(out).to(images.device)


def shift(images: torch.Tensor, pixels: int = 1) -> torch.Tensor:
    """The image moved right and down by `pixels` (the uncovered edge replicated): a crop, then a pad."""
    images = check_images("images", images, 3, images.shape[-1])
    size = images.shape[-1]
    return F.pad(images[..., : size - pixels, : size - pixels], (pixels, 0, pixels, 0), mode="replicate")


def regenerate(images, pipe, prompts, strength: float = REGENERATE_STRENGTH, seed: int = 0) -> torch.Tensor:
    """img2img (SDEdit) of each image with its own prompt: `pipe.img2img(images, prompts, strength)`."""
    return pipe.img2img(images, prompts, strength=strength, seed=seed).cpu()


#: name -> attack(images, pipe, prompts) for the benchmark and notebook 21: Gaussian blur (sigma 1 px), additive
#: Gaussian noise (std 0.1), JPEG quality 75, a 1-pixel shift, img2img at strength 0.3 with the image's prompt.
ATTACKS = {
    "blur 1 px": lambda images, pipe, prompts: gaussian_blur(images),
    "noise 0.1": lambda images, pipe, prompts: additive_noise(images),
    f"JPEG {JPEG_QUALITY}": lambda images, pipe, prompts: jpeg(images),
    "shift 1 px": lambda images, pipe, prompts: shift(images),
    f"img2img {REGENERATE_STRENGTH}": lambda images, pipe, prompts: regenerate(images, pipe, prompts),
}
