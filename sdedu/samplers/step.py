"""What every sampler shares: the `SamplerStep` it returns and the check of `step`'s arguments."""

from typing import NamedTuple

import torch

from sdedu._checks import check_same_shape, check_tensor, describe


class SamplerStep(NamedTuple):
    """What one reverse step returns: the next sample and the current x_0 estimate, both (B, ...)."""

    x_prev: torch.Tensor
    x0_pred: torch.Tensor


def check_step_inputs(eps_pred, t, x_t, timesteps: torch.Tensor) -> int:
    """Validate the arguments of a sampler's `step` and return t as a Python int.

    eps_pred and x_t: floating tensors of the same shape (B, ...); t: one of `timesteps`, as an
    int or a 0-dim integer tensor (what `for t in sampler.timesteps` yields).
    """
    check_tensor("x_t", x_t, floating=True)
    check_tensor("eps_pred", eps_pred, floating=True)
    check_same_shape("eps_pred", eps_pred, "x_t", x_t)
    if isinstance(t, torch.Tensor) and t.ndim == 0 and not t.is_floating_point() and t.dtype != torch.bool:
        t = int(t)
    if isinstance(t, bool) or not isinstance(t, int):
        raise TypeError(f"t must be an int, one of sampler.timesteps {_shorten(timesteps)}; got {describe(t)}")
    if not bool((timesteps == t).any()):
        shown = _shorten(timesteps)
        raise ValueError(
            f"t must be one of sampler.timesteps {shown} (call set_timesteps(n) first to change them); got {t}"
        )
    return t


def _shorten(timesteps: torch.Tensor) -> list:
    shown = timesteps.tolist()
    return shown if len(shown) <= 8 else shown[:4] + ["..."] + shown[-2:]
