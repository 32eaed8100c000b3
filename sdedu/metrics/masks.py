"""Shape masks of shapes-world images, and how well a generated image fills a given mask (IoU).

    shape_mask(images)      = the brightest channel: (B, 1, H, W) in [0, 1]
    mask_iou(images, masks) = |F & M| / |F | M|   per image, F = the judge's foreground, M = masks > 0.5

Every shapes-world colour has a channel at 1, so an image's brightest channel is exactly the
renderer's anti-aliased coverage: the mask of the shape's pixels (`sdedu.data.shapes.drawing`).
The IoU thresholds both sides at 0.5: the generated image with the judge's own foreground rule
(`shapes_judge.FOREGROUND_THRESHOLD` on the brightest channel), the mask at half coverage. It
needs no judgement of shape or colour, so it measures a ControlNet's spatial control on its own.
"""

from __future__ import annotations

import torch

from sdedu._checks import check_tensor, describe
from sdedu.metrics.shapes_judge import FOREGROUND_THRESHOLD

__all__ = ["shape_mask", "mask_iou"]


def shape_mask(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) shapes-world images in [0, 1] -> their masks (B, 1, H, W): the brightest channel."""
    check_tensor("images", images, ndim=4, floating=True)
    return images.amax(dim=1, keepdim=True)


def mask_iou(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Intersection over union of each image's foreground with its mask.

    Args:
        images: (B, 3, H, W) generated images in [0, 1].
        masks: (B, 1, H, W) masks in [0, 1] (a pixel is in the mask where it exceeds 0.5).
    Returns:
        (B,) IoU in [0, 1] (1 where both are empty).
    """
    check_tensor("masks", masks, ndim=4, floating=True)
    foreground = shape_mask(images) > FOREGROUND_THRESHOLD  # (B, 1, H, W)
    if masks.shape != foreground.shape:
        raise ValueError(f"masks must have shape {tuple(foreground.shape)} (one per image); got {describe(masks)}")
    inside = masks.to(images.device) > 0.5
    intersection = (foreground & inside).sum(dim=(1, 2, 3)).float()  # (B,)
    union = (foreground | inside).sum(dim=(1, 2, 3)).float()  # (B,)
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union))
