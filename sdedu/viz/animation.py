"""Animations that work offline: a point cloud or an image changing along a chain.

`FuncAnimation(...).to_jshtml()` embeds every frame as a PNG in JavaScript HTML: no ffmpeg, no
network. If it fails, the same frames come back as a static grid (and a printed reason).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch

from sdedu.viz.images import image_grid, show_image, to_numpy_images
from sdedu.viz.points import check_points, scatter_points, trajectory_grid

__all__ = ["animate_points", "animate_images"]


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
    # matplotlib's player links Font Awesome 4 from a CDN for its button icons: JupyterLab and the course book
    # (docs/BOOK.md) already style the `fa` icons, and an offline course asks the network for nothing.
    return HTML(re.sub(r'<link rel="stylesheet"\s+href="https?://[^"]*font-awesome[^"]*">', "", html))


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
    frames = [check_points(f"frames[{i}]", f) for i, f in enumerate(frames)]
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
    value_range: tuple[float, float] = (0.0, 1.0),
    interval: int = 150,
    size: float = 3.0,
):
    """Animate a sequence of images (S, C, H, W) as an `IPython.display.HTML` (one image per frame)."""
    arrays = to_numpy_images(frames, value_range)
    if titles is not None and len(titles) != len(arrays):
        raise ValueError(f"titles must have one entry per frame ({len(arrays)}); got {len(titles)}")
    fig, ax = plt.subplots(figsize=(size, size))
    show_image(ax, arrays[0], titles[0] if titles is not None else None)
    shown = ax.images[0]

    def update(i):
        shown.set_data(arrays[i][..., 0] if arrays.shape[-1] == 1 else arrays[i])
        if titles is not None:
            ax.set_title(titles[i], fontsize=9)
        return (shown,)

    def fallback():
        return image_grid(frames, titles=titles, value_range=value_range)

    return _to_html(fig, update, len(arrays), interval, fallback)
