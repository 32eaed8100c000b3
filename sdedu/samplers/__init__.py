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

from sdedu.samplers.ddim import DDIMSampler
from sdedu.samplers.ddpm import DDPMSampler
from sdedu.samplers.step import SamplerStep, check_step_inputs

__all__ = ["SamplerStep", "DDPMSampler", "DDIMSampler", "check_step_inputs"]
