"""A real photograph, available offline: Grace Hopper, from matplotlib's sample data.

The forward process is easiest to believe on a real picture: a face you recognise at t = 0
dissolves into static by t = T. matplotlib installs this photo with itself, so nothing is
downloaded. The image is centre-cropped to a square and resized with PIL (bicubic).
"""

from __future__ import annotations

import numpy as np
import torch

from sdedu._checks import check_int_range

__all__ = ["load_photo", "photo_path"]


def photo_path() -> str:
    """Path of the bundled JPEG (512 x 600 pixels, RGB) inside matplotlib's sample data."""
    from matplotlib import cbook

    return str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def load_photo(
    size: int = 64,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Load the sample photo as a batch of one image.

    Steps: 1. open the JPEG (height 600, width 512); 2. centre-crop to 512 x 512;
    3. resize to `size` x `size` (bicubic); 4. scale the uint8 values to [0, 1].

    Args:
        size: side length in pixels of the square result (8 to 512).
        device, dtype: where and how the result lives.

    Returns:
        tensor (1, 3, size, size) with values in [0, 1]. Diffusion works on [-1, 1]:
        use `2 * image - 1` before adding noise.
    """
    from PIL import Image

    check_int_range("size", size, 8, 512)
    with Image.open(photo_path()) as image:
        image = image.convert("RGB")
        width, height = image.size
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        image = image.crop((left, top, left + side, top + side))
        image = image.resize((size, size), Image.Resampling.BICUBIC)
        array = np.asarray(image, dtype=np.uint8)  # (H, W, 3)
    pixels = torch.from_numpy(array.copy()).permute(2, 0, 1).unsqueeze(0)  # (1, 3, H, W)
    return (pixels.to(dtype) / 255.0).to(device)
