"""Samplers: turn a noise prediction into one step of the reverse process.

Every sampler has the same small face (as diffusers' schedulers do):

    sampler.set_timesteps(n)                 # choose n of the T training timesteps
    for t in sampler.timesteps:              # descending int64 tensor
        eps_pred = model(x_t, t, ...)        # the pipeline calls the model, never the sampler
        x_t = sampler.step(eps_pred, t, x_t, generator=g).x_prev

Samplers hold no parameters and never call the model. `step` returns a `SamplerStep`:
`x_prev` (the next, less noisy sample) and `x0_pred` (the current estimate of the clean sample,
worth plotting).

- `DDPMSampler`: ancestral sampling, Ho et al. 2020, Algorithm 2 (stochastic).
- `DDIMSampler`: Song et al. 2021; eta=0 is deterministic and works well with ~50 steps.
"""

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


# Imported after SamplerStep is defined: the sampler modules import it from this package.
from sdedu.samplers.ddim import DDIMSampler  # noqa: E402
from sdedu.samplers.ddpm import DDPMSampler  # noqa: E402

__all__ = ["SamplerStep", "DDPMSampler", "DDIMSampler"]
