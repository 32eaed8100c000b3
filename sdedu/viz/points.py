"""2-D point clouds: scatter plots and a grid of them along a chain (toy data, samples, trajectories)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from sdedu._checks import check_tensor

__all__ = ["check_points", "scatter_points", "trajectory_grid"]


def check_points(name: str, points: torch.Tensor) -> np.ndarray:
    """(N, 2) points as a float numpy array; `name` is used in the error message."""
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
    xy = check_points("points", points)
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
