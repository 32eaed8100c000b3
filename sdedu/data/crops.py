"""Random crops of images: the training data of a model that only needs local statistics."""

from __future__ import annotations

import torch

from sdedu._checks import check_tensor, describe

__all__ = ["random_crops"]


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
