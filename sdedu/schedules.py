"""Noise schedules: how much noise the forward process adds at each step.

A diffusion model destroys data in T small steps. Step t mixes in Gaussian noise of variance
beta_t; everything else in the course is derived from this one table of numbers.

Notation (used in every sdedu module, following Ho et al. 2020 unless noted):

| code                   | paper                                                   |
|------------------------|---------------------------------------------------------|
| `betas`                | beta_t, the variance of the noise added at step t       |
| `alphas`               | alpha_t = 1 - beta_t                                    |
| `alpha_bar`            | alpha_bar_t = alpha_1 * alpha_2 * ... * alpha_t          |
| `x0`, `x_t`, `x_prev`  | x_0, x_t, x_{t-1}                                       |
| `eps`, `eps_pred`      | epsilon, epsilon_theta(x_t, t)                          |
| `x0_pred`              | the model's estimate of x_0                             |
| `sigma_t`, `eta`       | DDIM's sigma_t and eta (Song et al. 2021, eq. 16)       |
| `z`                    | a VAE latent (Rombach et al. 2022)                      |
| `cond`                 | the text encoder's token embeddings                     |
| `guidance_scale`       | w in eps_uncond + w (eps_cond - eps_uncond)             |

DDIM's paper writes alpha_t for what is alpha_bar_t here; sdedu always says `alpha_bar`.
Complements are written out: `one_minus_alpha_bar`, never `beta_prod`.

Timestep convention (stated once, used everywhere): the papers count steps t = 1..T; the code
counts t = 0..T-1, so **code t is paper step t+1**. `betas[0]` is beta_1, `alpha_bar[0]` is
alpha_bar_1 (one step of noise, not clean data), and `alpha_bar[T-1]` is alpha_bar_T (almost
pure noise). Clean data x_0 has no row in the table: where a formula needs alpha_bar_0 it is 1.
This is also diffusers' convention, so the tables here equal `DDPMScheduler.alphas_cumprod`.

Signal-to-noise ratio: x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, so
SNR(t) = alpha_bar_t / (1 - alpha_bar_t) (Kingma et al. 2021, "Variational Diffusion Models").
It falls from large to nearly 0; a schedule is a choice of how fast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

from sdedu._checks import check_int_range, check_number_range, check_tensor, describe


class NoiseSchedule:
    """The beta_t table of a diffusion process and the quantities derived from it.

    alphas = 1 - betas;  alpha_bar = cumprod(alphas)   (Ho et al. 2020, eq. 4)

    Args:
        betas: (T,) floating tensor, non-decreasing, every value in (0, 1); the last may be 1
            (T >= 2), which makes alpha_bar_T = 0: zero terminal SNR (`rescale_zero_terminal_snr`).
            Stored as float32 (the precision of Stable Diffusion's schedulers) on the tensor's device.

    Attributes:
        betas, alphas, alpha_bar: (T,) float32 tensors, index = code timestep t in [0, T).
        T: the number of diffusion steps.
    """

    def __init__(self, betas: torch.Tensor):
        check_tensor("betas", betas, ndim=1, floating=True)
        if betas.numel() < 1:
            raise ValueError(f"betas must hold at least one value (T >= 1); got {describe(betas)}")
        # All in (0, 1), but the last may be 1 (zero terminal SNR) when there is a step before it.
        head = betas[:-1] if betas.numel() > 1 else betas
        if not torch.isfinite(betas).all() or betas.min() <= 0 or head.max() >= 1 or betas[-1] > 1:
            raise ValueError(
                "betas must all lie in the open interval (0, 1), except the last, which may be 1 (zero terminal "
                f"SNR) when T >= 2; got min {betas.min().item():.6g}, max {betas.max().item():.6g}, "
                f"last {betas[-1].item():.6g}, T={betas.numel()}"
            )
        steps_down = (betas[1:] < betas[:-1]).nonzero()
        if len(steps_down) > 0:
            i = int(steps_down[0])
            raise ValueError(
                "betas must be non-decreasing (noise grows along the chain); "
                f"got betas[{i}]={betas[i].item():.6g} > betas[{i + 1}]={betas[i + 1].item():.6g}"
            )
        self.betas = betas.detach().to(torch.float32).clone()
        self.alphas = 1.0 - self.betas
        # alpha_bar_t: the fraction of the signal's variance left after t+1 steps.
        self.alpha_bar = torch.cumprod(self.alphas, dim=0)
        self.T = int(self.betas.shape[0])

    # ---- the three schedules of the literature ------------------------------------------

    @classmethod
    def linear(cls, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> NoiseSchedule:
        """Ho et al. 2020, section 4: beta_t linear from 1e-4 to 0.02 over T = 1000 steps.

        Equals diffusers' `beta_schedule="linear"`.
        """
        T = check_int_range("T", T, 1, 1_000_000)
        beta_start, beta_end = _check_beta_range(beta_start, beta_end)
        return cls(torch.linspace(beta_start, beta_end, T, dtype=torch.float32))

    @classmethod
    def scaled_linear(cls, T: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> NoiseSchedule:
        """Stable Diffusion's schedule (Rombach et al. 2022): sqrt(beta_t) linear in t.

        beta_t = (sqrt(beta_start) + t / (T - 1) * (sqrt(beta_end) - sqrt(beta_start)))^2.
        It adds less noise than `linear` at the end of the chain, which suits latents whose
        scale is ~1. Equals diffusers' `beta_schedule="scaled_linear"`.
        """
        T = check_int_range("T", T, 1, 1_000_000)
        beta_start, beta_end = _check_beta_range(beta_start, beta_end)
        sqrt_betas = torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float32)
        return cls(sqrt_betas**2)

    @classmethod
    def cosine(cls, T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> NoiseSchedule:
        """Nichol & Dhariwal 2021, eq. 17: alpha_bar follows a squared cosine.

        f(u) = cos((u + s) / (1 + s) * pi / 2)^2,  alpha_bar_t = f(t / T) / f(0)
        beta_t = min(1 - alpha_bar_t / alpha_bar_{t-1}, max_beta)   (clipped "to prevent
        singularities at the end of the diffusion process", max_beta = 0.999 in the paper)

        In code indices: betas[t] = min(1 - f((t + 1) / T) / f(t / T), max_beta). Computed in
        float64 like diffusers' `betas_for_alpha_bar` (`beta_schedule="squaredcos_cap_v2"`).
        """
        T = check_int_range("T", T, 1, 1_000_000)
        s = check_number_range("s", s, 0.0, 1.0)
        max_beta = check_number_range("max_beta", max_beta, 1e-8, 0.999999)

        def f(u: float) -> float:
            return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

        betas = [min(1 - f((t + 1) / T) / f(t / T), max_beta) for t in range(T)]
        return cls(torch.tensor(betas, dtype=torch.float32))

    # ---- derived quantities and helpers ------------------------------------------------

    def snr(self) -> torch.Tensor:
        """(T,) signal-to-noise ratio alpha_bar_t / (1 - alpha_bar_t) (Kingma et al. 2021)."""
        return self.alpha_bar / (1.0 - self.alpha_bar)

    @property
    def zero_terminal_snr(self) -> bool:
        """True when alpha_bar_T = 0: x_T is pure noise (Lin et al. 2024; `rescale_zero_terminal_snr`)."""
        return bool(self.alpha_bar[-1] == 0)

    @property
    def device(self) -> torch.device:
        return self.betas.device

    def to(self, device) -> NoiseSchedule:
        """A copy whose tables live on `device` (the values are moved, not recomputed)."""
        moved = object.__new__(NoiseSchedule)
        moved.betas = self.betas.to(device)
        moved.alphas = self.alphas.to(device)
        moved.alpha_bar = self.alpha_bar.to(device)
        moved.T = self.T
        return moved

    def __len__(self) -> int:
        return self.T

    def __repr__(self) -> str:
        return (
            f"NoiseSchedule(T={self.T}, beta {self.betas[0].item():.3g}..{self.betas[-1].item():.3g}, "
            f"alpha_bar[T-1]={self.alpha_bar[-1].item():.3g}, device={self.device})"
        )


def _check_beta_range(beta_start, beta_end) -> tuple[float, float]:
    beta_start = check_number_range("beta_start", beta_start, 0.0, 1.0)
    beta_end = check_number_range("beta_end", beta_end, 0.0, 1.0)
    if not 0 < beta_start <= beta_end < 1:
        raise ValueError(
            f"beta_start and beta_end must satisfy 0 < beta_start <= beta_end < 1; "
            f"got beta_start={beta_start}, beta_end={beta_end}"
        )
    return beta_start, beta_end


@dataclass(frozen=True)
class ScheduleConfig:
    """Which schedule to build: what a recipe trains with and a weights manifest records.

    kind: "linear" (Ho et al. 2020), "scaled_linear" (Stable Diffusion) or "cosine"
        (Nichol & Dhariwal 2021).
    T: the number of diffusion steps (a UNet's `num_train_timesteps` must equal it).
    beta_start, beta_end: the beta range of the linear kinds; None keeps the kind's paper
        default (`NoiseSchedule.linear` / `scaled_linear`). The cosine schedule has no beta range.
    """

    kind: str = "scaled_linear"
    T: int = 1000
    beta_start: float | None = None
    beta_end: float | None = None

    KINDS = ("linear", "scaled_linear", "cosine")

    def __post_init__(self):
        if self.kind not in self.KINDS:
            raise ValueError(f"kind must be one of {list(self.KINDS)}; got {describe(self.kind)}")
        check_int_range("T", self.T, 1, 1_000_000)
        betas = {"beta_start": self.beta_start, "beta_end": self.beta_end}
        given = {name: value for name, value in betas.items() if value is not None}
        if self.kind == "cosine" and given:
            raise ValueError(f"the cosine schedule has no beta range; got {given}")
        for name, value in given.items():
            check_number_range(name, value, 0.0, 1.0)
        if len(given) == 2:
            _check_beta_range(self.beta_start, self.beta_end)

    @classmethod
    def from_dict(cls, settings: dict) -> ScheduleConfig:
        """The config a manifest's "schedule" entry describes ({"kind": "scaled_linear"} is enough)."""
        if not isinstance(settings, dict):
            raise TypeError(f"schedule settings must be a dict; got {describe(settings)}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ValueError(f"schedule settings have unknown keys {unknown}; expected some of {sorted(known)}")
        return cls(**settings)

    def to_dict(self) -> dict:
        """The JSON form: kind and T, and the betas only where they were given."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def build(self) -> NoiseSchedule:
        """The NoiseSchedule these settings describe."""
        if self.kind == "cosine":
            return NoiseSchedule.cosine(T=self.T)
        make = NoiseSchedule.linear if self.kind == "linear" else NoiseSchedule.scaled_linear
        betas = {k: v for k, v in (("beta_start", self.beta_start), ("beta_end", self.beta_end)) if v is not None}
        return make(T=self.T, **betas)


# ---- zero terminal SNR ----------------------------------------------------------------------


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Rescale betas so that the last step reaches pure noise, SNR(T) = 0 (Lin et al. 2024, Algorithm 1).

    The usual schedules end with alpha_bar_T > 0 (scaled_linear: 0.0047), so a model never sees pure
    noise in training but starts from it at sampling, and cannot make very bright or dark images
    (Lin et al. 2024, section 3.1). Algorithm 1 shifts sqrt(alpha_bar) so that its last value is 0
    and scales it so that its first value is unchanged:

        sqrt_alpha_bar_t <- (sqrt_alpha_bar_t - sqrt_alpha_bar_T) * sqrt_alpha_bar_1
                            / (sqrt_alpha_bar_1 - sqrt_alpha_bar_T),
        then alpha_bar_t = sqrt_alpha_bar_t^2 and beta_t = 1 - alpha_bar_t / alpha_bar_{t-1},

    with sqrt_alpha_bar_t = sqrt(alpha_bar_t) (`sqrt_alpha_bar` below).

    The last beta becomes exactly 1: x_T carries no signal and sigma(T) is infinite. An eps
    prediction there is trivial (x_T = eps) and says nothing about x_0, so the paper pairs the
    schedule with v-prediction and "trailing" timesteps (sections 3.2-3.3). `NoiseSchedule(result)`
    keeps alpha_bar_T = 0; how each sampler handles it is `finite_terminal_snr`'s docstring.

    Args:
        betas: (T,) floating tensor, T >= 2.
    Returns:
        (T,) the rescaled betas, in betas' dtype. Equals diffusers' `rescale_zero_terminal_snr`.
    """
    check_tensor("betas", betas, ndim=1, floating=True)
    if betas.numel() < 2:
        raise ValueError(f"betas must hold at least two values (T >= 2); got {describe(betas)}")
    sqrt_alpha_bar = torch.cumprod(1 - betas, dim=0) ** 0.5  # (T,)
    first, last = sqrt_alpha_bar[0].clone(), sqrt_alpha_bar[-1].clone()
    sqrt_alpha_bar = (sqrt_alpha_bar - last) * (first / (first - last))
    alpha_bar = sqrt_alpha_bar**2
    alphas = torch.cat([alpha_bar[:1], alpha_bar[1:] / alpha_bar[:-1]])  # undo the cumulative product
    return 1 - alphas


#: alpha_bar_T that the samplers in sigma use in place of 0: float16's smallest subnormal, as in diffusers.
TERMINAL_ALPHA_BAR = 2.0**-24


def finite_terminal_snr(schedule: NoiseSchedule) -> NoiseSchedule:
    """The schedule the samplers in sigma use: alpha_bar_T = 0 replaced by 2^-24 (sigma_T = 4096).

    How diffusers samples a zero-terminal-SNR schedule (`rescale_betas_zero_snr=True`), which sdedu follows:
    - `DDPMScheduler` and `DDIMScheduler` (schedulers/scheduling_ddpm.py, scheduling_ddim.py) keep
      alpha_bar_T = 0: their formulas in alpha_bar stay finite for a v or x0 model (x0_pred = -v at
      SNR = 0). sdedu's `DDPMSampler` and `DDIMSampler` use the schedule as it is.
    - `EulerDiscreteScheduler`, `EulerAncestralDiscreteScheduler` and `DPMSolverMultistepScheduler`
      (scheduling_euler_discrete.py, scheduling_euler_ancestral_discrete.py,
      scheduling_dpmsolver_multistep.py) set `alphas_cumprod[-1] = 2**-24` ("close to 0 without
      being 0 so first sigma is not inf"), since they step in sigma = sqrt((1 - alpha_bar) / alpha_bar).
      sdedu's samplers in sigma (Euler, Euler ancestral, Heun, DPM-Solver++) use this function's
      result for sigma and x0_pred alike, as diffusers does (its Heun has no such option).

    As in diffusers only alpha_bar changes (betas and alphas keep beta_T = 1). For the linear
    schedule rescaled, 2^-24 is above alpha_bar_{T-1} = 1.7e-8, so sigma is not monotone at the very
    end; diffusers has the same. A schedule whose alpha_bar_T > 0 is returned as it is.

    Args:
        schedule: a NoiseSchedule.
    Returns:
        a NoiseSchedule whose alpha_bar_T > 0.
    """
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be a sdedu.schedules.NoiseSchedule; got {describe(schedule)}")
    if not schedule.zero_terminal_snr:
        return schedule
    clamped = schedule.to(schedule.device)
    clamped.alpha_bar = schedule.alpha_bar.clone()
    clamped.alpha_bar[-1] = TERMINAL_ALPHA_BAR
    return clamped
