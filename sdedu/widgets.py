"""Interactive widgets for the notebooks: drag t and watch an image dissolve into noise.

`noise_slider` shows x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps for one fixed eps,
so that moving the slider changes only the noise level, not the noise. It takes one schedule or
several (side by side, to compare them at the same t).

Headless use degrades gracefully: without ipywidgets, or outside a running Jupyter kernel (a
script, a test), the same function returns a static matplotlib figure of a few timesteps.
So does a kernel started with SDEDU_WIDGETS=0: the book (`make book`) sets it, because a static page cannot
move a slider, and because nbclient, which executes the book's notebooks, can hang for good on a cell that
opens widget comms (jupyter/nbclient issue #312; seen here in a CI run on notebook 07's `interact`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from sdedu._checks import check_int_range, check_tensor, describe
from sdedu.diffusion import q_sample, randn_like
from sdedu.schedules import NoiseSchedule

__all__ = ["noise_slider", "widgets_available"]


def widgets_available() -> bool:
    """True inside a Jupyter kernel with ipywidgets installed (where a slider can be shown), unless SDEDU_WIDGETS=0."""
    if os.environ.get("SDEDU_WIDGETS", "1") == "0":
        return False
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


def _as_named_schedules(schedules) -> dict[str, NoiseSchedule]:
    """One NoiseSchedule, or a mapping name -> NoiseSchedule, as a dict sharing one T."""
    named = {"x_t": schedules} if isinstance(schedules, NoiseSchedule) else schedules
    if not isinstance(named, Mapping) or not named or not all(isinstance(s, NoiseSchedule) for s in named.values()):
        raise TypeError(
            f"schedules must be a NoiseSchedule or a non-empty dict of name -> NoiseSchedule; got {describe(schedules)}"
        )
    lengths = {name: s.T for name, s in named.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"schedules must all have the same T; got {lengths}")
    return dict(named)


def noise_slider(
    x0: torch.Tensor,
    schedules,
    t_step: int = 10,
    initial_t: int = 0,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    value_range: tuple[float, float] = (-1.0, 1.0),
    static_timesteps: tuple[int, ...] | None = None,
):
    """A slider over t showing q_sample(x0, t, eps) for each schedule, with alpha_bar_t and SNR.

    Args:
        x0: (1, C, H, W) clean image in the diffusion maths' range [-1, 1] (`2 * image - 1` for an
            image in [0, 1]), like every x_t the slider shows.
        schedules: a NoiseSchedule, or a dict name -> NoiseSchedule (same T) shown side by side.
        t_step: slider increment.
        initial_t: where the slider starts.
        noise: eps, shape of x0 (drawn once from `generator` when None).
        value_range: the (low, high) values shown as black and white: (-1, 1), the range of x_0
            and of the signal in x_t (unlike `sdedu.viz`, whose images default to [0, 1]).
        static_timesteps: the timesteps of the headless fallback (default: 6 evenly spaced).

    Returns:
        an ipywidgets.VBox inside Jupyter; otherwise a static matplotlib Figure with one row
        per schedule.
    """
    from sdedu import viz

    check_tensor("x0", x0, ndim=4, floating=True)
    if x0.shape[0] != 1:
        raise ValueError(f"x0 must be one image, shape (1, C, H, W); got shape {tuple(x0.shape)}")
    named = _as_named_schedules(schedules)
    T = next(iter(named.values())).T
    t_step = check_int_range("t_step", t_step, 1, T)
    initial_t = check_int_range("initial_t", initial_t, 0, T - 1)
    eps = randn_like(x0, generator) if noise is None else noise

    def noised(t: int) -> list[torch.Tensor]:
        return [q_sample(x0, t, schedule, noise=eps) for schedule in named.values()]  # each (1, C, H, W)

    if not widgets_available():
        timesteps = static_timesteps or tuple(round(i * (T - 1) / 5) for i in range(6))
        rows = [torch.cat(images) for images in zip(*(noised(t) for t in timesteps))]  # per schedule (S, C, H, W)
        return viz.images_over_t(rows, timesteps, value_range=value_range, row_labels=list(named))

    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    def draw(t: int) -> None:
        images = torch.cat(noised(t))  # (num_schedules, C, H, W)
        titles = [
            f"{name}, t = {t}\nalpha_bar={s.alpha_bar[t].item():.3f}  SNR={s.snr()[t].item():.3g}"
            for name, s in named.items()
        ]
        fig = viz.image_grid(images, ncols=len(named), titles=titles, value_range=value_range, size=2.6)
        plt.show()
        plt.close(fig)

    slider = widgets.IntSlider(value=initial_t, min=0, max=T - 1, step=t_step, description="t", continuous_update=False)
    output = widgets.interactive_output(draw, {"t": slider})
    return widgets.VBox([slider, output])
