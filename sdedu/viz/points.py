"""2-D point clouds: scatter plots and a grid of them along a chain (toy data, samples, trajectories)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from sdedu._checks import check_tensor

__all__ = ["check_points", "scatter_points", "trajectory_grid", "sample_paths"]


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


def sample_paths(
    trajectories: Mapping[str, torch.Tensor],
    reference: torch.Tensor | None = None,
    limit: float = 3.0,
    size: float = 3.2,
) -> plt.Figure:
    """One panel per sampler (titled with its name): each point's path from x_T (hollow circle) to x_0 (dot).

    Args:
        trajectories: name -> (S + 1, N, 2) tensor, x_T first and x_0 last (as `sample_toy(...,
            return_trajectory=True)` returns it); S may differ between samplers.
        reference: optional (M, 2) points drawn in grey under every panel (e.g. the data).
    """
    if not trajectories:
        raise ValueError("trajectories must hold at least one (S + 1, N, 2) tensor")
    fig, axes = plt.subplots(1, len(trajectories), figsize=(size * len(trajectories), size + 0.3), squeeze=False)
    for ax, (name, path) in zip(axes.flat, trajectories.items()):
        check_tensor(f"trajectories[{name!r}]", path, ndim=3)
        if path.shape[2] != 2:
            raise ValueError(f"trajectories[{name!r}] must have shape (S + 1, N, 2); got {tuple(path.shape)}")
        if reference is not None:
            scatter_points(reference, ax=ax, limit=limit, color="0.85")
        xy = path.detach().float().cpu().numpy()  # (S + 1, N, 2)
        colors = plt.cm.tab10(np.arange(xy.shape[1]) % 10)
        for i in range(xy.shape[1]):
            ax.plot(xy[:, i, 0], xy[:, i, 1], "-", lw=0.7, alpha=0.8, color=colors[i])
        ax.scatter(xy[0, :, 0], xy[0, :, 1], s=14, facecolors="none", edgecolors=colors, linewidths=0.8)
        ax.scatter(xy[-1, :, 0], xy[-1, :, 1], s=10, color=colors)
        ax.set(xlim=(-limit, limit), ylim=(-limit, limit), xticks=[], yticks=[], aspect="equal")
        ax.set_title(name, fontsize=9)
    fig.tight_layout()
    return fig
