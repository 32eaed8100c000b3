"""Figures for the notebooks: image grids, noise over t, histograms, 2-D trajectories, animations.

Every function draws with matplotlib and returns the `Figure` (or, for animations, an
`IPython.display.HTML`), so a notebook cell can show it, save it or test it. Nothing here
computes diffusion maths: callers pass tensors that the library already produced.

Images are (B, 3, H, W) (or (B, 1, H, W)) tensors. Diffusion works in [-1, 1] and the photo
loader returns [0, 1]; `value_range` says which, and values outside it are clipped for display.

Animations use `FuncAnimation(...).to_jshtml()`, which works offline and needs no ffmpeg; if
it fails, the same frames come back as a static grid.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from sdedu._checks import check_tensor

__all__ = [
    "to_numpy_images",
    "image_grid",
    "images_over_t",
    "histogram",
    "histograms_over_t",
    "plot_schedules",
    "scatter_points",
    "trajectory_grid",
    "animate_points",
    "animate_images",
]


# ---- images ------------------------------------------------------------------------------


def to_numpy_images(images: torch.Tensor, value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """(B, C, H, W) tensor with values in `value_range` -> (B, H, W, C) float array in [0, 1].

    C must be 1 (grey) or 3 (RGB). Values outside `value_range` are clipped.
    """
    check_tensor("images", images, ndim=4)
    if images.shape[1] not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, shape (B, 1|3, H, W); got shape {tuple(images.shape)}")
    low, high = value_range
    if not high > low:
        raise ValueError(f"value_range must be (low, high) with high > low; got {value_range}")
    scaled = (images.detach().float().cpu() - low) / (high - low)
    return scaled.clamp(0.0, 1.0).permute(0, 2, 3, 1).numpy()  # (B, H, W, C)


def _show(ax, image: np.ndarray, title: str | None = None) -> None:
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
    value_range: tuple[float, float] = (-1.0, 1.0),
    size: float = 1.5,
    suptitle: str | None = None,
) -> plt.Figure:
    """A grid of images, `ncols` per row.

    Args:
        images: (B, C, H, W) with C in {1, 3}.
        ncols: images per row.
        titles: one title per image, or None.
        value_range: the (low, high) values shown as black and white.
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
            _show(ax, arrays[i], titles[i] if titles is not None else None)
        else:
            ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def images_over_t(
    images: torch.Tensor | Sequence[torch.Tensor],
    timesteps: Sequence[int],
    value_range: tuple[float, float] = (-1.0, 1.0),
    size: float = 1.6,
    row_labels: Sequence[str] | None = None,
) -> plt.Figure:
    """One row of images, one per timestep, titled "t = ..."; several rows to compare schedules.

    Args:
        images: (S, C, H, W) for one row (image i noised to timesteps[i]), or a list of such
            tensors, one per row (e.g. one per noise schedule).
        timesteps: S timesteps, used as column titles.
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
            _show(axes[r, c], row[c], f"t = {int(timesteps[c])}" if r == 0 else None)
        if row_labels is not None:
            axes[r, 0].set_ylabel(row_labels[r], fontsize=9)
    fig.tight_layout()
    return fig


# ---- histograms --------------------------------------------------------------------------


def histogram(
    values: torch.Tensor,
    ax: plt.Axes | None = None,
    bins: int = 60,
    range_: tuple[float, float] = (-4.0, 4.0),
    title: str | None = None,
    show_normal: bool = True,
    label: str | None = None,
) -> plt.Axes:
    """Density histogram of all values of a tensor, with the N(0, 1) density drawn over it.

    Returns the Axes (a new figure is made when `ax` is None).
    """
    check_tensor("values", values)
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 3))
    flat = values.detach().float().flatten().cpu().numpy()
    heights, _, _ = ax.hist(flat, bins=bins, range=range_, density=True, alpha=0.6, label=label)
    if show_normal:
        grid = np.linspace(range_[0], range_[1], 200)
        ax.plot(grid, np.exp(-0.5 * grid**2) / math.sqrt(2 * math.pi), "k--", lw=1, label="N(0, 1)")
    # A tall spike (e.g. saturated pixels) would flatten everything else: cap the height shown.
    ax.set_ylim(0, 1.05 * min(max(float(heights.max()), 0.45), 1.2))
    ax.set_xlim(*range_)
    ax.set_xticks(np.linspace(range_[0], range_[1], 5)[1:-1])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize=9)
    return ax


def histograms_over_t(
    values: Sequence[torch.Tensor],
    timesteps: Sequence[int],
    bins: int = 60,
    range_: tuple[float, float] = (-4.0, 4.0),
    size: float = 2.2,
) -> plt.Figure:
    """A row of histograms, one per timestep, each with the N(0, 1) density for comparison."""
    if len(values) != len(timesteps):
        raise ValueError(f"values must hold one tensor per timestep ({len(timesteps)}); got {len(values)}")
    fig, axes = plt.subplots(1, len(values), figsize=(size * len(values), size), squeeze=False)
    for ax, value, t in zip(axes[0], values, timesteps):
        histogram(value, ax=ax, bins=bins, range_=range_, title=f"t = {int(t)}")
    axes[0, 0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


# ---- noise schedules ---------------------------------------------------------------------


def plot_schedules(schedules: Mapping, size: float = 4.0) -> plt.Figure:
    """alpha_bar_t (left) and SNR(t) on a log scale (right) for each named schedule.

    Args:
        schedules: name -> object with `.alpha_bar` (T,) and `.snr()` (T,), e.g. a `NoiseSchedule`.
    """
    if not isinstance(schedules, Mapping) or not schedules:
        raise TypeError(f"schedules must be a non-empty dict of name -> NoiseSchedule; got {type(schedules).__name__}")
    fig, (left, right) = plt.subplots(1, 2, figsize=(2.2 * size, 0.75 * size))
    for name, schedule in schedules.items():
        t = np.arange(len(schedule.alpha_bar))
        left.plot(t, schedule.alpha_bar.detach().cpu().numpy(), label=name)
        right.semilogy(t, schedule.snr().detach().cpu().numpy(), label=name)
    left.set(xlabel="t", ylabel="alpha_bar_t", title="signal variance kept, alpha_bar_t")
    right.set(xlabel="t", ylabel="SNR(t)", title="SNR = alpha_bar / (1 - alpha_bar), log scale")
    right.axhline(1.0, color="0.6", lw=0.8, ls=":")
    left.legend()
    left.grid(alpha=0.3)
    right.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig


# ---- 2-D points --------------------------------------------------------------------------


def _check_points(name: str, points: torch.Tensor) -> np.ndarray:
    check_tensor(name, points, ndim=2)
    if points.shape[1] != 2:
        raise ValueError(f"{name} must have shape (N, 2); got shape {tuple(points.shape)}")
    return points.detach().float().cpu().numpy()


def scatter_points(
    points: torch.Tensor,
    ax: plt.Axes | None = None,
    title: str | None = None,
    limit: float = 3.0,
    size: float = 2.0,
    color: str | None = None,
    label: str | None = None,
) -> plt.Axes:
    """Scatter plot of (N, 2) points in the square [-limit, limit]^2 (a new figure when ax is None)."""
    xy = _check_points("points", points)
    if ax is None:
        _, ax = plt.subplots(figsize=(3.5, 3.5))
    ax.scatter(xy[:, 0], xy[:, 1], s=size, alpha=0.6, color=color, label=label, linewidths=0)
    ax.set_xlim(-limit, limit)
    ax.set_ylim(-limit, limit)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize=9)
    return ax


def trajectory_grid(
    frames: torch.Tensor | Sequence[torch.Tensor],
    titles: Sequence[str] | None = None,
    ncols: int = 6,
    limit: float = 3.0,
    size: float = 2.0,
    reference: torch.Tensor | None = None,
) -> plt.Figure:
    """A grid of scatter plots: the same point cloud at successive steps of a chain.

    Args:
        frames: (S, N, 2) tensor or a list of S (N, 2) tensors.
        titles: one title per frame (e.g. "t = 999").
        ncols: plots per row.
        reference: optional (M, 2) points drawn in grey under every frame (e.g. the data).
    """
    frames = list(frames)
    if titles is not None and len(titles) != len(frames):
        raise ValueError(f"titles must have one entry per frame ({len(frames)}); got {len(titles)}")
    ncols = max(1, min(ncols, len(frames)))
    nrows = math.ceil(len(frames) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.2), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= len(frames):
            ax.axis("off")
            continue
        if reference is not None:
            scatter_points(reference, ax=ax, limit=limit, color="0.8")
        scatter_points(frames[i], ax=ax, limit=limit, title=titles[i] if titles is not None else None)
    fig.tight_layout()
    return fig


# ---- animations --------------------------------------------------------------------------


def _to_html(fig: plt.Figure, update, count: int, interval: int, fallback):
    """Animate `update(i)` over `count` frames as JavaScript HTML; on failure return `fallback()`."""
    from IPython.display import HTML
    from matplotlib.animation import FuncAnimation

    animation = FuncAnimation(fig, update, frames=count, interval=interval, blit=False)
    try:
        html = animation.to_jshtml(default_mode="once")
    except Exception as error:  # noqa: BLE001 - any writer problem falls back to a static figure
        # The failure is reported below; silence matplotlib's "deleted without rendering" warning.
        animation._draw_was_started = True
        plt.close(fig)
        print(f"animation unavailable ({type(error).__name__}: {error}); showing a static grid instead")
        return fallback()
    plt.close(fig)  # the animation carries the frames; the static figure would only repeat frame 0
    return HTML(html)


def animate_points(
    frames: torch.Tensor | Sequence[torch.Tensor],
    titles: Sequence[str] | None = None,
    limit: float = 3.0,
    interval: int = 150,
    reference: torch.Tensor | None = None,
    size: float = 4.0,
):
    """Animate a 2-D point cloud through the frames of a chain (an `IPython.display.HTML`).

    Args:
        frames: (S, N, 2) tensor or a list of S (N, 2) tensors. Keep S to a few dozen: every
            frame is embedded as a PNG.
        titles: one title per frame.
        interval: milliseconds between frames.
        reference: optional (M, 2) points drawn in grey behind the animation.
    """
    frames = [_check_points(f"frames[{i}]", f) for i, f in enumerate(frames)]
    if titles is not None and len(titles) != len(frames):
        raise ValueError(f"titles must have one entry per frame ({len(frames)}); got {len(titles)}")
    fig, ax = plt.subplots(figsize=(size, size))
    if reference is not None:
        scatter_points(reference, ax=ax, limit=limit, color="0.8")
    cloud = ax.scatter(frames[0][:, 0], frames[0][:, 1], s=3, alpha=0.6, linewidths=0)
    ax.set_xlim(-limit, limit)
    ax.set_ylim(-limit, limit)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])

    def update(i):
        cloud.set_offsets(frames[i])
        if titles is not None:
            ax.set_title(titles[i])
        return (cloud,)

    def fallback():
        stacked = [torch.from_numpy(f) for f in frames]
        return trajectory_grid(stacked, titles=titles, limit=limit, reference=reference)

    return _to_html(fig, update, len(frames), interval, fallback)


def animate_images(
    frames: torch.Tensor,
    titles: Sequence[str] | None = None,
    value_range: tuple[float, float] = (-1.0, 1.0),
    interval: int = 150,
    size: float = 3.0,
):
    """Animate a sequence of images (S, C, H, W) as an `IPython.display.HTML` (one image per frame)."""
    arrays = to_numpy_images(frames, value_range)
    if titles is not None and len(titles) != len(arrays):
        raise ValueError(f"titles must have one entry per frame ({len(arrays)}); got {len(titles)}")
    fig, ax = plt.subplots(figsize=(size, size))
    _show(ax, arrays[0], titles[0] if titles is not None else None)
    shown = ax.images[0]

    def update(i):
        shown.set_data(arrays[i][..., 0] if arrays.shape[-1] == 1 else arrays[i])
        if titles is not None:
            ax.set_title(titles[i], fontsize=9)
        return (shown,)

    def fallback():
        return image_grid(frames, titles=titles, value_range=value_range)

    return _to_html(fig, update, len(arrays), interval, fallback)
