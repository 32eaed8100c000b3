"""The forward process and the algebra that connects x_0, x_t, eps and v.

Everything here is closed-form: given a `NoiseSchedule` (see `sdedu.schedules` for the notation
table and the timestep convention, code t in [0, T) = paper step t+1), the forward process
q(x_t | x_0) is a single Gaussian, so any noise level can be reached in one jump:

    x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps,   eps ~ N(0, I)   (Ho et al. 2020, eq. 4)

Knowing two of (x_0, x_t, eps) gives the third. A network that predicts eps therefore also
predicts x_0, and the samplers in `sdedu.samplers` are built from these conversions.

Timesteps `t` are int64 tensors of shape (B,), one per batch element, with values in [0, T);
a Python int means "the same t for the whole batch".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sdedu._checks import check_int_range, check_same_shape, check_tensor, describe
from sdedu.schedules import NoiseSchedule

# ---- helpers ------------------------------------------------------------------------------


def _check_schedule(schedule) -> NoiseSchedule:
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be a sdedu.schedules.NoiseSchedule; got {describe(schedule)}")
    return schedule


def _check_x(name: str, x) -> torch.Tensor:
    check_tensor(name, x, floating=True)
    if x.ndim < 1:
        raise ValueError(f"{name} must have a batch dimension, shape (B, ...); got {describe(x)}")
    return x


def check_timesteps(t, batch_size: int, T: int) -> torch.Tensor | int:
    """Validate timesteps: a Python int (or 0-dim integer tensor) in [0, T), or an int64 (B,) tensor.

    Returns the int unchanged or the (B,) tensor.
    """
    expected = (
        f"t must be an int in [0, {T}) or an int64 tensor of shape (B,) = ({batch_size},) with values in [0, {T})"
    )
    if isinstance(t, torch.Tensor) and t.ndim == 0 and not t.is_floating_point() and t.dtype != torch.bool:
        t = int(t)
    if isinstance(t, bool) or not isinstance(t, (int, torch.Tensor)):
        raise TypeError(f"{expected}; got {describe(t)}")
    if isinstance(t, int):
        if not 0 <= t < T:
            raise ValueError(f"{expected}; got {t}")
        return t
    if t.dtype != torch.int64:
        raise TypeError(f"{expected}; got {describe(t)}")
    if tuple(t.shape) != (batch_size,):
        raise ValueError(f"{expected}; got shape {tuple(t.shape)}")
    if batch_size > 0 and (t.min() < 0 or t.max() >= T):
        raise ValueError(f"{expected}; got values in [{int(t.min())}, {int(t.max())}]")
    return t


def extract(table: torch.Tensor, t, x: torch.Tensor) -> torch.Tensor:
    """Gather table[t] and shape it to broadcast against x.

    table: (T,)   t: int64 (B,) or int   x: (B, ...)   ->   (B, 1, ..., 1) in x's dtype and device
    (a Python int gives (1, 1, ..., 1)). Any other t shape is an error, never a silent broadcast.
    """
    check_tensor("table", table, ndim=1)
    check_tensor("x", x)
    if x.ndim < 1:
        raise ValueError(f"x must have a batch dimension, shape (B, ...); got {describe(x)}")
    t = check_timesteps(t, x.shape[0], table.shape[0])
    if isinstance(t, int):
        values = table[t].reshape(1)  # (1,)
    else:
        values = table[t.to(table.device)]  # (B,)
    return values.to(device=x.device, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))  # (B, 1, ..., 1)


def randn(shape, generator=None, device=None, dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise of `shape`, drawn from `generator`, returned on `device`.

    The noise is drawn on the generator's device and then moved, so a CPU generator gives the
    same numbers whether the result lives on the CPU or a GPU. `generator` may also be a list of
    shape[0] generators, one per row: row i is drawn from generator i alone (as diffusers'
    `randn_tensor` does), so a row does not depend on the rows beside it.
    """
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(
                f"generator must be one torch.Generator or one per row ({shape[0]}); got a list of {len(generator)}"
            )
        rows = [torch.randn((1, *shape[1:]), generator=g, device=g.device, dtype=dtype) for g in generator]
        return torch.cat(rows).to(device)  # (B, ...)
    source = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=source, dtype=dtype).to(device)


def randn_like(x: torch.Tensor, generator=None) -> torch.Tensor:
    """Standard normal noise shaped like x, drawn from `generator` (one, or a list of one per row; see `randn`)."""
    return randn(x.shape, generator, x.device, x.dtype)


# ---- the forward process ------------------------------------------------------------------


def q_sample(x0, t, schedule, noise=None, generator=None) -> torch.Tensor:
    """Sample x_t ~ q(x_t | x_0) in one jump.

    x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps   (Ho et al. 2020, eq. 4)

    Args:
        x0: (B, ...) clean data.
        t: int64 (B,) timesteps in [0, T), or an int for the whole batch.
        schedule: the NoiseSchedule.
        noise: (B, ...) eps, same shape as x0; drawn from `generator` when None.
    Returns:
        x_t, shape of x0. Equals diffusers' `DDPMScheduler.add_noise(x0, noise, t)`.
    """
    _check_x("x0", x0)
    schedule = _check_schedule(schedule)
    if noise is None:
        noise = randn_like(x0, generator)
    check_tensor("noise", noise, floating=True)
    check_same_shape("noise", noise, "x0", x0)
    sqrt_alpha_bar = extract(schedule.alpha_bar, t, x0) ** 0.5
    sqrt_one_minus_alpha_bar = extract(1.0 - schedule.alpha_bar, t, x0) ** 0.5
    return sqrt_alpha_bar * x0 + sqrt_one_minus_alpha_bar * noise


def q_posterior(x0, x_t, t, schedule) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of the forward-process posterior q(x_{t-1} | x_t, x_0).

    mean     = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) x_0
             + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) x_t    (Ho et al. 2020, eq. 7)
    variance = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t              (beta tilde, eq. 7)

    with alpha_bar_{t-1} = 1 at the first step (code t = 0), where the posterior is exactly x_0.

    Args:
        x0, x_t: (B, ...) tensors of the same shape.  t: int64 (B,) or int.
    Returns:
        mean (B, ...) and variance (B, 1, ..., 1).
    """
    _check_x("x0", x0)
    _check_x("x_t", x_t)
    check_same_shape("x_t", x_t, "x0", x0)
    schedule = _check_schedule(schedule)
    # The coefficient tables are built in float64: near t = 0, 1 - alpha_bar_t is as small as beta_1
    # (1e-4), and float32 would lose ~0.02% of it, so the first step would not return x_0 exactly.
    betas = schedule.betas.detach().cpu().double()  # (T,)
    alpha_bar = torch.cumprod(1.0 - betas, dim=0)  # (T,)
    alpha_bar_prev = torch.cat([alpha_bar.new_ones(1), alpha_bar[:-1]])  # (T,) alpha_bar_{t-1}, 1 for x_0
    one_minus_alpha_bar = 1.0 - alpha_bar
    coef_x0 = alpha_bar_prev.sqrt() * betas / one_minus_alpha_bar
    coef_x_t = (1.0 - betas).sqrt() * (1.0 - alpha_bar_prev) / one_minus_alpha_bar
    variance = (1.0 - alpha_bar_prev) / one_minus_alpha_bar * betas
    mean = extract(coef_x0, t, x0) * x0 + extract(coef_x_t, t, x0) * x_t
    variance = extract(variance, t, x0)
    return mean, variance


# ---- conversions between the three parameterisations --------------------------------------


def predict_x0_from_eps(x_t, eps, t, schedule) -> torch.Tensor:
    """x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)   (eq. 4 solved for x_0; Ho et al. eq. 15)"""
    _check_x("x_t", x_t)
    check_tensor("eps", eps, floating=True)
    check_same_shape("eps", eps, "x_t", x_t)
    alpha_bar = extract(_check_schedule(schedule).alpha_bar, t, x_t)
    return (x_t - (1.0 - alpha_bar) ** 0.5 * eps) / alpha_bar**0.5


def predict_eps_from_x0(x_t, x0, t, schedule) -> torch.Tensor:
    """eps = (x_t - sqrt(alpha_bar_t) x_0) / sqrt(1 - alpha_bar_t)   (eq. 4 solved for eps)"""
    _check_x("x_t", x_t)
    check_tensor("x0", x0, floating=True)
    check_same_shape("x0", x0, "x_t", x_t)
    alpha_bar = extract(_check_schedule(schedule).alpha_bar, t, x_t)
    return (x_t - alpha_bar**0.5 * x0) / (1.0 - alpha_bar) ** 0.5


def velocity(x0, eps, t, schedule) -> torch.Tensor:
    """The v-prediction target v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0.

    Salimans & Ho 2022, section 4 (their v = alpha_t eps - sigma_t x, where their alpha_t and sigma_t
    are sqrt(alpha_bar_t) and sqrt(1 - alpha_bar_t): docs/NOTATION.md). Equals diffusers' `DDPMScheduler.get_velocity`.
    """
    _check_x("x0", x0)
    check_tensor("eps", eps, floating=True)
    check_same_shape("eps", eps, "x0", x0)
    alpha_bar = extract(_check_schedule(schedule).alpha_bar, t, x0)
    return alpha_bar**0.5 * eps - (1.0 - alpha_bar) ** 0.5 * x0


def predict_x0_from_v(x_t, v, t, schedule) -> torch.Tensor:
    """x_0 = sqrt(alpha_bar_t) x_t - sqrt(1 - alpha_bar_t) v   (Salimans & Ho 2022)"""
    _check_x("x_t", x_t)
    check_tensor("v", v, floating=True)
    check_same_shape("v", v, "x_t", x_t)
    alpha_bar = extract(_check_schedule(schedule).alpha_bar, t, x_t)
    return alpha_bar**0.5 * x_t - (1.0 - alpha_bar) ** 0.5 * v


def predict_eps_from_v(x_t, v, t, schedule) -> torch.Tensor:
    """eps = sqrt(1 - alpha_bar_t) x_t + sqrt(alpha_bar_t) v   (Salimans & Ho 2022)"""
    _check_x("x_t", x_t)
    check_tensor("v", v, floating=True)
    check_same_shape("v", v, "x_t", x_t)
    alpha_bar = extract(_check_schedule(schedule).alpha_bar, t, x_t)
    return (1.0 - alpha_bar) ** 0.5 * x_t + alpha_bar**0.5 * v


# ---- training ----------------------------------------------------------------------------

#: What a network can be trained to predict: the noise, the clean sample, or v (Salimans & Ho 2022).
PREDICTION_TYPES = ("eps", "x0", "v")


def sample_timesteps(batch_size, schedule, generator=None, device=None) -> torch.Tensor:
    """t ~ Uniform{0, ..., T-1}, one per batch element (Ho et al. 2020, Algorithm 1, line 3).

    Returns an int64 (batch_size,) tensor on `device` (default: the schedule's device), drawn on
    the generator's device so a CPU generator gives the same t on every device.
    """
    batch_size = check_int_range("batch_size", batch_size, 1, 2**31 - 1)
    schedule = _check_schedule(schedule)
    device = schedule.device if device is None else torch.device(device)
    draw_device = generator.device if generator is not None else device
    t = torch.randint(0, schedule.T, (batch_size,), generator=generator, device=draw_device, dtype=torch.int64)
    return t.to(device)


def noise_prediction_loss(model, x0, schedule, generator=None, prediction_type="eps", **model_kwargs) -> torch.Tensor:
    """The simple loss of Ho et al. 2020 (eq. 14, Algorithm 1): E || eps - eps_theta(x_t, t) ||^2.

    1. t ~ Uniform{0..T-1}, eps ~ N(0, I)      (drawn in this order from `generator`)
    2. x_t = q_sample(x0, t, eps)
    3. eps_pred = model(x_t, t, **model_kwargs)   e.g. cond=... for a text-conditioned UNet
    4. mean squared error between eps_pred and eps

    With prediction_type "x0" or "v" the same draws train the model to predict x_0, or
    v = velocity(x0, eps, t) (Salimans & Ho 2022, section 4), in place of eps.

    Args:
        model: callable (x_t (B, ...), t int64 (B,), **model_kwargs) -> eps_pred (B, ...).
        x0: (B, ...) clean data (pixels or VAE latents z).
        prediction_type: the target, one of PREDICTION_TYPES: "eps", "x0" or "v".
    Returns:
        the scalar loss (differentiable through the model).
    """
    _check_x("x0", x0)
    schedule = _check_schedule(schedule)
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}; got {describe(prediction_type)}")
    if not callable(model):
        raise TypeError(f"model must be callable as model(x_t, t, **model_kwargs); got {describe(model)}")
    t = sample_timesteps(x0.shape[0], schedule, generator=generator, device=x0.device)
    eps = randn_like(x0, generator)
    x_t = q_sample(x0, t, schedule, noise=eps)
    eps_pred = model(x_t, t, **model_kwargs)
    check_tensor("eps_pred (the model's output)", eps_pred, floating=True)
    check_same_shape("eps_pred (the model's output)", eps_pred, "x0", x0)
    if prediction_type == "eps":
        return F.mse_loss(eps_pred, eps)
    target = x0 if prediction_type == "x0" else velocity(x0, eps, t, schedule)
    return F.mse_loss(eps_pred, target)
