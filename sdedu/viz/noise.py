"""Noise by the numbers: histograms of noised values against N(0, 1), and schedule curves.

The forward process drives every pixel's distribution towards N(0, 1) (Ho et al. 2020, eq. 4);
`histogram` / `histograms_over_t` show it happening, `plot_schedules` shows alpha_bar_t and the
signal-to-noise ratio SNR(t) = alpha_bar_t / (1 - alpha_bar_t) that set its pace.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from sdedu._checks import check_tensor

__all__ = ["histogram", "histograms_over_t", "plot_schedules"]


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
