"""Flow matching with straight paths (rectified flow): the maths of Stable Diffusion 3's objective.

Data x_0 and noise eps ~ N(0, I) are joined by a straight line, walked in time t in [0, 1]:

    x_t = (1 - t) x_0 + t eps                  (Liu et al. 2023, eq. 1; Esser et al. 2024, section 3, "RF";
                                                Lipman et al. 2023's OT path, eq. 20, with sigma_min = 0
                                                and time reversed: their t = 0 is the noise)
    v   = d x_t / d t = eps - x_0              the velocity of that line, the regression target

A network v_theta(x_t, t) trained with || v_theta(x_t, t) - (eps - x_0) ||^2 (conditional flow
matching, Lipman et al. 2023, eq. 23) learns the *marginal* velocity E[eps - x_0 | x_t], and
sampling integrates dx/dt = v_theta(x, t) from t = 1 (noise) to t = 0 (data):
`sdedu.samplers.FlowMatchEulerSampler` does it with Euler steps.

SD3's two choices of time (Esser et al. 2024):
- training t ~ logit-normal with location m and scale s (Esser et al.'s m, s, kept as the parameter
  names of `logit_normal_times`): t = sigmoid(m + s u), u ~ N(0, 1) (section 3.1, eq. 19), which
  spends more of the training on the middle of the path than t ~ U(0, 1);
- the resolution shift t_shift = shift t / (1 + (shift - 1) t) (section 5.3.2, eq. 23 with
  shift = the square root of the ratio of the pixel counts, target over base: Esser et al.'s
  sqrt(m / n)), which moves sampling time towards the noise end; the same formula as
  diffusers' `FlowMatchEulerDiscreteScheduler` (`shift * sigmas / (1 + (shift - 1) * sigmas)`).

The model sees t scaled to [0, TIME_SCALE] (1000, as SD3 and diffusers feed their transformers),
so the sinusoidal timestep embeddings built for t in [0, 1000) need no change.

Relation to DDPM (`sdedu.diffusion`): a DDPM sample x_ddpm = alpha x_0 + sigma eps with alpha = sqrt(alpha_bar),
sigma = sqrt(1 - alpha_bar) is, divided by (alpha + sigma), a point of the straight path:
x_ddpm / (alpha + sigma) = x_t at t = sigma / (alpha + sigma) (`flow_time_from_alpha_bar`). The two
objectives train the same model up to this change of variables; v = eps - x_0 either way.

Shapes: x_0, eps, x_t, v are (B, ...); t is (B,) with values in [0, 1] (or a Python float).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sdedu._checks import check_int_range, check_number_range, check_same_shape, check_tensor, describe
from sdedu.diffusion import randn_like

#: The model's time input is t * TIME_SCALE (SD3 and diffusers' FlowMatchEulerDiscreteScheduler: 1000).
TIME_SCALE = 1000.0
#: How training times are drawn: SD3's logit-normal (section 3.1) or uniform on (0, 1) (Liu et al. 2023).
TIME_SAMPLINGS = ("logit_normal", "uniform")


def _check_x(name: str, x) -> torch.Tensor:
    check_tensor(name, x, floating=True)
    if x.ndim < 1:
        raise ValueError(f"{name} must have a batch dimension, shape (B, ...); got {describe(x)}")
    return x


def _broadcast_time(t, x: torch.Tensor) -> torch.Tensor:
    """t (a float in [0, 1] or a (B,) tensor with values in [0, 1]) shaped (B, 1, ..., 1) to broadcast against x."""
    expected = f"t must be a float in [0, 1] or a floating tensor of shape (B,) = ({x.shape[0]},) with values in [0, 1]"
    if isinstance(t, torch.Tensor) and t.ndim == 0:
        t = float(t)
    if isinstance(t, (int, float)) and not isinstance(t, bool):
        check_number_range("t", t, 0.0, 1.0)
        return torch.full((1,) + (1,) * (x.ndim - 1), float(t), dtype=x.dtype, device=x.device)
    if not isinstance(t, torch.Tensor) or not t.is_floating_point():
        raise TypeError(f"{expected}; got {describe(t)}")
    if tuple(t.shape) != (x.shape[0],):
        raise ValueError(f"{expected}; got shape {tuple(t.shape)}")
    if t.numel() > 0 and not bool(((t >= 0) & (t <= 1)).all()):
        raise ValueError(f"{expected}; got values in [{float(t.min()):g}, {float(t.max()):g}]")
    return t.to(device=x.device, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))


# ---- the straight path and its velocity ---------------------------------------------------------


def interpolate(x0, eps, t) -> torch.Tensor:
    """The point at time t on the straight line from data to noise: x_t = (1 - t) x_0 + t eps.

    Liu et al. 2023, eq. 1; Esser et al. 2024, section 3 (rectified flow: a_t = 1 - t, b_t = t).
    Equals diffusers' `FlowMatchEulerDiscreteScheduler.scale_noise(x0, timestep, eps)` at sigma = t.

    Args:
        x0: (B, ...) clean data.   eps: (B, ...) noise, same shape.
        t: (B,) times in [0, 1], or a float for the whole batch (0: data, 1: pure noise).
    Returns:
        x_t, the shape of x0.
    """
    _check_x("x0", x0)
    check_tensor("eps", eps, floating=True)
    check_same_shape("eps", eps, "x0", x0)
    t = _broadcast_time(t, x0)
    return (1.0 - t) * x0 + t * eps


def velocity_target(x0, eps) -> torch.Tensor:
    """The velocity of the straight path, d x_t / d t = eps - x_0 (the same at every t): the training target."""
    _check_x("x0", x0)
    check_tensor("eps", eps, floating=True)
    check_same_shape("eps", eps, "x0", x0)
    return eps - x0


def x0_from_velocity(x_t, v, t) -> torch.Tensor:
    """x_0 = x_t - t v: follow the velocity back to t = 0 (x_t = x_0 + t (eps - x_0))."""
    _check_x("x_t", x_t)
    check_tensor("v", v, floating=True)
    check_same_shape("v", v, "x_t", x_t)
    return x_t - _broadcast_time(t, x_t) * v


def eps_from_velocity(x_t, v, t) -> torch.Tensor:
    """eps = x_t + (1 - t) v: follow the velocity forward to t = 1."""
    _check_x("x_t", x_t)
    check_tensor("v", v, floating=True)
    check_same_shape("v", v, "x_t", x_t)
    return x_t + (1.0 - _broadcast_time(t, x_t)) * v


def flow_time_from_alpha_bar(alpha_bar) -> tuple[torch.Tensor, torch.Tensor]:
    """Where a DDPM sample sits on the straight path: x_ddpm / (alpha + sigma) = x_t at t = sigma / (alpha + sigma).

    With alpha = sqrt(alpha_bar), sigma = sqrt(1 - alpha_bar), the DDPM sample x_ddpm = alpha x_0 + sigma eps
    (Ho et al. 2020, eq. 4) divided by (alpha + sigma) is (1 - t) x_0 + t eps (Esser et al. 2024, section 2:
    every such path is one family up to a time change and a scale).

    Args:
        alpha_bar: a tensor of alpha_bar values in (0, 1] (e.g. `schedule.alpha_bar[t]`), any shape.
    Returns:
        (t, scale), both alpha_bar's shape: the flow time and 1 / (alpha + sigma), so x_t = scale * x_ddpm.
    """
    check_tensor("alpha_bar", alpha_bar, floating=True)
    if alpha_bar.numel() > 0 and not bool(((alpha_bar > 0) & (alpha_bar <= 1)).all()):
        raise ValueError(f"alpha_bar must have values in (0, 1]; got {describe(alpha_bar)}")
    alpha, sigma = alpha_bar.sqrt(), (1.0 - alpha_bar).sqrt()
    return sigma / (alpha + sigma), 1.0 / (alpha + sigma)


# ---- the marginal velocity and the straightness of paths ---------------------------------------------


def mixture_velocity(x, t, means, std: float, weights=None) -> torch.Tensor:
    """The exact marginal velocity u_t(x) = E[eps - x_0 | x_t = x] when x_0 is a mixture of Gaussians.

    Conditional flow matching regresses on eps - x_0, so its minimiser is this average over all
    (x_0, eps) whose straight paths pass through x at time t (Lipman et al. 2023, eqs. 8 and 23).
    For x_0 ~ sum_k w_k N(mu_k, std^2 I), x_t given component k is N((1 - t) mu_k, var_t I) with
    var_t = (1 - t)^2 std^2 + t^2, and Gaussian conditioning gives per component

        E[x_0 | x, k] = mu_k + (1 - t) std^2 / var_t (x - (1 - t) mu_k),
        E[eps | x, k] = t / var_t (x - (1 - t) mu_k),

    averaged with the responsibilities r_k(x) proportional to w_k N(x; (1 - t) mu_k, var_t I).

    Args:
        x: (N, D) points.   t: a float in [0, 1] or (N,) times.
        means: (K, D) the components' means.   std: their standard deviation (> 0).
        weights: (K,) mixture weights (default equal).
    Returns:
        u_t(x): (N, D).
    """
    check_tensor("x", x, ndim=2, floating=True)
    check_tensor("means", means, ndim=2, floating=True)
    if means.shape[1] != x.shape[1]:
        raise ValueError(f"means must have shape (K, {x.shape[1]}) to match x; got {tuple(means.shape)}")
    std = check_number_range("std", std, 0.0)
    if std == 0.0:
        raise ValueError("std must be > 0; got 0")
    weights = torch.full((means.shape[0],), 1.0 / means.shape[0]) if weights is None else weights
    check_tensor("weights", weights, ndim=1, floating=True)
    if weights.shape[0] != means.shape[0] or not bool((weights > 0).all()):
        raise ValueError(f"weights must be {means.shape[0]} positive numbers; got {describe(weights)}")
    t = _broadcast_time(t, x)[:, :, None]  # (N or 1, 1, 1)
    means, weights = means.to(x), weights.to(x)
    var = (1 - t) ** 2 * std**2 + t**2  # (N, 1, 1)
    offset = x[:, None, :] - (1 - t) * means[None]  # (N, K, D) x - (1 - t) mu_k
    logits = weights.log()[None] - offset.pow(2).sum(-1) / (2 * var[:, :, 0])  # (N, K)
    r = torch.softmax(logits, dim=1)[:, :, None]  # (N, K, 1) responsibilities
    x0_mean = (r * (means[None] + (1 - t) * std**2 / var * offset)).sum(1)  # (N, D)
    eps_mean = (r * (t / var * offset)).sum(1)  # (N, D)
    return eps_mean - x0_mean


def straightness_gap(trajectory, times) -> torch.Tensor:
    """How far each sampled path is from a straight line walked at constant speed (0 = straight).

    Liu et al. 2023 define the straightness S = int_0^1 || (x_1 - x_0) - dx_t/dt ||^2 dt,
    which is 0 exactly when every velocity along the path equals the chord; then one Euler step is
    exact. Here with the velocities of the recorded steps and divided by || x_1 - x_0 ||^2, so
    paths of different lengths compare:

        gap = sum_k |dt_k| || (x_{k+1} - x_k) / dt_k - chord ||^2 / (|t_end - t_start| || chord ||^2),
        chord = (x_end - x_start) / (t_end - t_start)

    It depends on how time is counted: compare paths on one clock (e.g. the flow time t; a DDPM
    timestep sits at t = sigma / (alpha + sigma), `flow_time_from_alpha_bar`).

    Args:
        trajectory: (S + 1, N, ...) the samples before the first step and after each step.
        times: (S + 1,) the time of each of those samples, strictly monotonic.
    Returns:
        (N,) gaps >= 0 (0 for a path that does not move).
    """
    check_tensor("trajectory", trajectory, floating=True)
    check_tensor("times", times, ndim=1, floating=True)
    if trajectory.ndim < 2 or trajectory.shape[0] < 2:
        raise ValueError(f"trajectory must have shape (S + 1, N, ...) with S >= 1; got {describe(trajectory)}")
    if times.shape[0] != trajectory.shape[0]:
        raise ValueError(f"times must have shape ({trajectory.shape[0]},), one per sample; got {tuple(times.shape)}")
    dt = (times[1:] - times[:-1]).to(trajectory)  # (S,)
    if not (bool((dt > 0).all()) or bool((dt < 0).all())):
        raise ValueError(f"times must be strictly monotonic; got {describe(times)}")
    flat = trajectory.flatten(2)  # (S + 1, N, F)
    span = times[-1].to(trajectory) - times[0].to(trajectory)
    chord = (flat[-1] - flat[0]) / span  # (N, F)
    velocity = (flat[1:] - flat[:-1]) / dt[:, None, None]  # (S, N, F)
    gap = ((velocity - chord) ** 2).sum(-1)  # (S, N)
    weighted = (gap * dt.abs()[:, None]).sum(0) / span.abs()  # (N,)
    norm = (chord**2).sum(-1)
    return torch.where(norm > 0, weighted / norm.clamp_min(1e-30), torch.zeros_like(norm))


# ---- SD3's times: logit-normal training times, the resolution shift -------------------------------


def logit_normal_times(batch_size, m=0.0, s=1.0, generator=None, device=None) -> torch.Tensor:
    """t ~ logit-normal, location m, scale s: t = sigmoid(m + s u), u ~ N(0, 1) (Esser et al. 2024, §3.1, eq. 19).

    m and s are Esser et al.'s letters, quoted as the parameter names (the course's s is otherwise only the
    cosine offset, docs/NOTATION.md).

    The density is 1 / (s sqrt(2 pi)) 1 / (t (1 - t)) exp(-(logit(t) - m)^2 / (2 s^2)); SD3 trains
    with m = 0, s = 1 ("rf/lognorm(0.00, 1.00)"), which puts most t near the middle of the path.

    Returns a float32 (batch_size,) tensor in (0, 1) on `device`, drawn on the generator's device.
    """
    batch_size = check_int_range("batch_size", batch_size, 1, 2**31 - 1)
    m = check_number_range("m", m, float("-inf"))
    s = check_number_range("s", s, 0.0)
    draw_device = generator.device if generator is not None else device
    u = torch.randn(batch_size, generator=generator, device=draw_device)
    return torch.sigmoid(m + s * u).to(device)


def uniform_times(batch_size, generator=None, device=None) -> torch.Tensor:
    """t ~ U(0, 1), as rectified flow first trained (Liu et al. 2023): a float32 (batch_size,) tensor."""
    batch_size = check_int_range("batch_size", batch_size, 1, 2**31 - 1)
    draw_device = generator.device if generator is not None else device
    return torch.rand(batch_size, generator=generator, device=draw_device).to(device)


def shift_time(t, shift: float):
    """The resolution shift t_shift = shift t / (1 + (shift - 1) t) (Esser et al. 2024, section 5.3.2, eq. 23).

    shift = sqrt(target pixel count / base pixel count) (Esser et al.'s sqrt(m / n)) moves times tuned
    for the base resolution to the target one; shift > 1 spends more of the steps near the noise end
    (SD3 samples with shift = 3). t = 0 and t = 1 stay fixed. Exactly the formula of
    diffusers' `FlowMatchEulerDiscreteScheduler` (`shift * sigmas / (1 + (shift - 1) * sigmas)`).

    Args:
        t: a float or a tensor of times in [0, 1].   shift: > 0 (1 changes nothing).
    Returns:
        t_shift, of t's type and shape.
    """
    shift = check_number_range("shift", shift, 0.0)
    if shift == 0.0:
        raise ValueError("shift must be > 0; got 0")
    if isinstance(t, torch.Tensor):
        check_tensor("t", t, floating=True)
        if t.numel() > 0 and not bool(((t >= 0) & (t <= 1)).all()):
            raise ValueError(f"t must have values in [0, 1]; got {describe(t)}")
    else:
        t = check_number_range("t", t, 0.0, 1.0)
    return shift * t / (1.0 + (shift - 1.0) * t)


def sample_times(batch_size, time_sampling="logit_normal", m=0.0, s=1.0, generator=None, device=None):
    """Training times for a batch by name: "logit_normal" (SD3, location m, scale s) or "uniform" (rectified flow)."""
    if time_sampling not in TIME_SAMPLINGS:
        raise ValueError(f"time_sampling must be one of {TIME_SAMPLINGS}; got {describe(time_sampling)}")
    if time_sampling == "uniform":
        return uniform_times(batch_size, generator=generator, device=device)
    return logit_normal_times(batch_size, m, s, generator=generator, device=device)


# ---- the training loss --------------------------------------------------------------------------


def flow_matching_loss(
    model, x0, generator=None, time_sampling="logit_normal", m=0.0, s=1.0, **model_kwargs
) -> torch.Tensor:
    """The conditional flow matching loss E || v_theta(x_t, t) - (eps - x_0) ||^2 (Lipman et al. 2023, eq. 23).

    1. t ~ logit-normal, location m, scale s (or uniform), then eps ~ N(0, I)   (drawn in this order from `generator`)
    2. x_t = (1 - t) x_0 + t eps                                  (`interpolate`)
    3. v_pred = model(x_t, t * TIME_SCALE, **model_kwargs)        e.g. the text embeddings of a prompt
    4. mean squared error between v_pred and eps - x_0            (`velocity_target`)

    Args:
        model: callable (x_t (B, ...), time (B,) float in [0, 1000], **model_kwargs) -> v_pred (B, ...).
        x0: (B, ...) clean data (2-D points, pixels or VAE latents).
        generator: randomness for t and eps.
        time_sampling, m, s: how t is drawn (`sample_times`).
    Returns:
        the scalar loss (differentiable through the model).
    """
    _check_x("x0", x0)
    if not callable(model):
        raise TypeError(f"model must be callable as model(x_t, t, **model_kwargs); got {describe(model)}")
    t = sample_times(x0.shape[0], time_sampling, m, s, generator=generator, device=x0.device).to(x0.dtype)
    eps = randn_like(x0, generator)
    x_t = interpolate(x0, eps, t)
    v_pred = model(x_t, t * TIME_SCALE, **model_kwargs)
    check_tensor("model output", v_pred, floating=True)
    check_same_shape("model output", v_pred, "x0", x0)
    return F.mse_loss(v_pred, velocity_target(x0, eps))
