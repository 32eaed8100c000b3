"""Noise levels sigma: the variables in which DDIM, Euler, Heun and DPM-Solver++ are ODE solvers.

Divide x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps by sqrt(alpha_bar_t):

    x = x_t / sqrt(alpha_bar_t) = x_0 + sigma eps,   sigma(t) = sqrt((1 - alpha_bar_t) / alpha_bar_t) = 1 / sqrt(SNR(t))

(Song et al. 2021, DDIM, section 4.3; Karras et al. 2022, Table 1, the VP column, whose scaling is
sqrt(alpha_bar) = 1 / sqrt(1 + sigma^2)). This sigma is Karras et al.'s noise level, written sigma or
sigma(t), not DDIM's sigma_t of the notation table (the noise added per step). In (sigma, x) the
probability-flow ODE reads

    dx / dsigma = (x - D(x; sigma)) / sigma          (Karras et al. 2022, eq. 1 with eq. 3 and sigma(t) = t)

where D(x; sigma) is the denoiser, the model's x0_pred. For an eps model (x - x0_pred) / sigma is
eps_pred itself: the ODE is dx = eps_pred dsigma (DDIM, eq. 14), and one Euler step of it is DDIM.

The samplers built on this keep x_t between steps (the sample the model sees, as DDPM and DDIM do)
and move to x only inside `step`. diffusers' Euler and Heun schedulers keep x instead, so their
pipelines scale the first noise by `init_noise_sigma` and the model input by 1 / sqrt(sigma^2 + 1)
(`scale_model_input`): the same numbers, and nothing the sdedu loop, img2img or inpainting need.

Timesteps: all samplers here use diffusers' `timestep_spacing="trailing"` (Lin et al. 2024,
section 3.3, Table 2): n integer timesteps round(T - i T / n) - 1, i = 0..n-1, so the first is
always T - 1, where x_T is closest to pure noise. After the last timestep comes sigma = 0: x_0.
"""

from __future__ import annotations

import torch

from sdedu._checks import check_int_range
from sdedu.schedules import NoiseSchedule

#: Stands for "clean data" where a next timestep is expected: sigma = 0, alpha_bar = 1.
CLEAN = -1


def trailing_timesteps(T: int, n: int) -> torch.Tensor:
    """(n,) int64, descending: round(T - i T / n) - 1 for i = 0..n-1 (diffusers' "trailing" spacing).

    Computed as diffusers' `np.arange(T, 0, -T / n).round() - 1` is (float64, the step taken as
    (T - T/n) - T, rounding half to even), so the timesteps equal diffusers' bit for bit. For some n
    (61, 103, 121, ...) numpy's arange overshoots and diffusers gets n + 1 timesteps, the last -1;
    these stop at n.
    """
    n = check_int_range("n (the number of sampling steps)", n, 1, T)
    step = (T - T / n) - T  # float64, as numpy's arange computes it
    i = torch.arange(n, dtype=torch.float64)
    return (T + i * step).round().to(torch.int64) - 1  # (n,)


def sigmas(schedule: NoiseSchedule) -> torch.Tensor:
    """(T,) float32 sigma(t) = sqrt((1 - alpha_bar_t) / alpha_bar_t), on the schedule's device.

    Computed in float32 like diffusers' `((1 - alphas_cumprod) / alphas_cumprod) ** 0.5`. With zero
    terminal SNR sigma(T) is inf: the samplers pass `sdedu.schedules.finite_terminal_snr(schedule)`.
    """
    return ((1 - schedule.alpha_bar) / schedule.alpha_bar) ** 0.5


def sigma_at(sigma_table: torch.Tensor, t: int) -> float:
    """sigma(t) as a Python float; t = CLEAN (-1) gives 0, the noise level of x_0."""
    return 0.0 if t == CLEAN else float(sigma_table[t])


def to_sigma_space(x_t: torch.Tensor, sigma: float) -> torch.Tensor:
    """x = x_t / sqrt(alpha_bar_t) = x_t sqrt(1 + sigma^2)   (module docstring)"""
    return x_t * (1 + sigma**2) ** 0.5


def from_sigma_space(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """x_t = x sqrt(alpha_bar_t) = x / sqrt(1 + sigma^2): back to the sample the model sees."""
    return x / (1 + sigma**2) ** 0.5


def next_timestep(timesteps: torch.Tensor, t: int) -> int:
    """The first timestep after t in the descending `timesteps` (repeats skipped), or CLEAN after the last."""
    later = timesteps[timesteps < t]
    return int(later[0]) if len(later) else CLEAN
