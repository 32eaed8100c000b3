"""Images on screen: tensors (B, C, H, W) -> arrays -> grids, one image per panel.

A learner's images are in [0, 1] (the data modules, the pipeline, the VAE's decoder), and that
is the default `value_range`. The diffusion maths works in [-1, 1] (x_0 = 2 image - 1, x_t):
show those with `value_range=(-1, 1)`. Values outside the range are clipped for display.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from sdedu._checks import check_tensor

__all__ = ["to_numpy_images", "show_image", "image_grid", "images_over_t"]


def to_numpy_images(images: torch.Tensor, value_range: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """(B, C, H, W) tensor with values in `value_range` -> (B, H, W, C) float array in [0, 1].

    C must be 1 (grey) or 3 (RGB). Values outside `value_range` are clipped.
    """
    check_tensor("images", images, ndim=4)
    if images.shape[0] == 0:
        raise ValueError(
            f"images must hold at least one image, shape (B >= 1, 1|3, H, W); got shape {tuple(images.shape)}"
        )
    if images.shape[1] not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, shape (B, 1|3, H, W); got shape {tuple(images.shape)}")
    low, high = value_range
    if not high > low:
        raise ValueError(f"value_range must be (low, high) with high > low; got {value_range}")
    scaled = (images.detach().float().cpu() - low) / (high - low)
    return scaled.clamp(0.0, 1.0).permute(0, 2, 3, 1).numpy()  # (B, H, W, C)


def show_image(ax, image: np.ndarray, title: str | None = None) -> None:
    """Draw one (H, W, C) image in [0, 1] on `ax`, without ticks."""
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(image, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize=9)


def image_grid(
    images: torch.Tensor,
    ncols: int = 8,
    titles: Sequence[str] | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
    size: float = 1.5,
    suptitle: str | None = None,
) -> plt.Figure:
    """A grid of images, `ncols` per row.

    Args:
        images: (B, C, H, W) with C in {1, 3}.
        ncols: images per row.
        titles: one title per image, or None.
        value_range: the (low, high) values shown as black and white: (0, 1) for images, (-1, 1)
            for images in the diffusion maths' range (x_0 scaled to [-1, 1], x_t).
        size: inches per image.
        suptitle: a title over the whole grid.
    """
    arrays = to_numpy_images(images, value_range)
    count = arrays.shape[0]
    if titles is not None and len(titles) != count:
        raise ValueError(f"titles must have one entry per image ({count}); got {len(titles)}")
    ncols = max(1, min(ncols, count))
    nrows = math.ceil(count / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + (0.3 if titles else 0)), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i < count:
            show_image(ax, arrays[i], titles[i] if titles is not None else None)
        else:
            ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def images_over_t(
    images: torch.Tensor | Sequence[torch.Tensor],
    timesteps: Sequence[int],
    value_range: tuple[float, float] = (0.0, 1.0),
    size: float = 1.6,
    row_labels: Sequence[str] | None = None,
) -> plt.Figure:
    """One row of images, one per timestep, titled "t = ..."; several rows to compare schedules.

    Args:
        images: (S, C, H, W) for one row (image i noised to timesteps[i]), or a list of such
            tensors, one per row (e.g. one per noise schedule).
        timesteps: S timesteps, used as column titles.
        value_range: the (low, high) values shown as black and white; x_t of an image in [-1, 1]
            is shown with (-1, 1).
        row_labels: one label per row, written on the left.
    """
    rows = [images] if isinstance(images, torch.Tensor) else list(images)
    arrays = [to_numpy_images(row, value_range) for row in rows]
    columns = len(timesteps)
    for i, row in enumerate(arrays):
        if row.shape[0] != columns:
            raise ValueError(f"images row {i} must hold one image per timestep ({columns}); got {row.shape[0]}")
    if row_labels is not None and len(row_labels) != len(arrays):
        raise ValueError(f"row_labels must have one entry per row ({len(arrays)}); got {len(row_labels)}")
    fig, axes = plt.subplots(len(arrays), columns, figsize=(size * columns, size * len(arrays) + 0.3), squeeze=False)
    for r, row in enumerate(arrays):
        for c in range(columns):
            show_image(axes[r, c], row[c], f"t = {int(timesteps[c])}" if r == 0 else None)
        if row_labels is not None:
            axes[r, 0].set_ylabel(row_labels[r], fontsize=9)
    fig.tight_layout()
    return fig
