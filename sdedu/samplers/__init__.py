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

Samplers as solvers of the probability-flow ODE, in sigma = sqrt((1 - alpha_bar) / alpha_bar)
(`sigmas`; they keep x_t between steps like DDPM and DDIM, so they need no input scaling), each
taking `prediction_type` "eps", "x0" or "v" (`prediction`):

- `EulerSampler`: Euler's method (Karras et al. 2022, Algorithm 1 without correction); DDIM in sigma.
- `EulerAncestralSampler`: Euler plus fresh noise at each step; DDIM with eta=1 in sigma.
- `HeunSampler`: Heun's method (Karras et al. 2022, Algorithm 1), two model calls per step.
- `DPMSolverMultistepSampler`: DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2).

- `FlowMatchEulerSampler`: Euler steps on dx/dt = v for velocity (flow matching) models, as SD3
  (`sdedu.flow_matching`); its timesteps are floats t * 1000.

- `DDIMInverseSampler`: deterministic DDIM run from data to noise (DDIM inversion), the inverse of
  `DDIMSampler` at the same number of steps.
"""

from sdedu.samplers.ddim import DDIMSampler
from sdedu.samplers.ddim_inverse import DDIMInverseSampler
from sdedu.samplers.ddpm import DDPMSampler
from sdedu.samplers.dpm_solver import DPMSolverMultistepSampler
from sdedu.samplers.euler import EulerSampler
from sdedu.samplers.euler_ancestral import EulerAncestralSampler
from sdedu.samplers.flow_euler import FlowMatchEulerSampler
from sdedu.samplers.heun import HeunSampler
from sdedu.samplers.prediction import PREDICTION_TYPES
from sdedu.samplers.step import SamplerStep, check_step_inputs

__all__ = [
    "SamplerStep",
    "DDPMSampler",
    "DDIMSampler",
    "DDIMInverseSampler",
    "EulerSampler",
    "EulerAncestralSampler",
    "HeunSampler",
    "DPMSolverMultistepSampler",
    "FlowMatchEulerSampler",
    "PREDICTION_TYPES",
    "check_step_inputs",
]
