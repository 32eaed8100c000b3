"""How close an image is to its reference: peak signal-to-noise ratio (PSNR).

    MSE_i  = mean over the pixels and channels of image i of (images_i - reference_i)^2
    PSNR_i = 10 log10(data_range^2 / MSE_i)   in dB, one value per image

data_range is the span the pixel values can take: 1 for images in [0, 1] (every image a
learner sees in sdedu), 2 for [-1, 1] (inside the VAE and the maths). +6 dB is half the RMS
error. Nothing is clamped here: a caller whose images may leave the range clamps them first
(`recon.clamp(0, 1)`), so the score is that of the image a learner would see.
"""

from __future__ import annotations

import torch

from sdedu._checks import check_number_range, check_same_shape, check_tensor, describe

#: The smallest MSE used, so identical images score 10 log10(data_range^2 / 1e-10) (100 dB for
#: data_range 1) rather than infinity.
MIN_MSE = 1e-10


def psnr(images: torch.Tensor, reference: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, per image: 10 log10(data_range^2 / MSE).

    Args:
        images: (B, ...) floating images, e.g. (B, 3, 32, 32).
        reference: the ground truth, the same shape as images.
        data_range: the span of the values: 1.0 for [0, 1] images, 2.0 for [-1, 1].
    Returns:
        (B,) PSNR of each image against its reference (take `.mean()` for one number).
    """
    check_tensor("images", images, floating=True)
    check_tensor("reference", reference, floating=True)
    if images.ndim < 2:
        raise ValueError(f"images must be a batch (B, ...) of at least 2 dimensions; got {describe(images)}")
    check_same_shape("images", images, "reference", reference)
    check_number_range("data_range", data_range, 1e-6)
    mse = (images.float() - reference.float()).pow(2).flatten(1).mean(dim=1)  # (B,)
    return 10.0 * torch.log10(data_range**2 / mse.clamp_min(MIN_MSE))
