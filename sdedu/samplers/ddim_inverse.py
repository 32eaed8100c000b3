"""DDIM inversion: run deterministic DDIM backwards, from a clean sample to the noise that makes it.

With eta = 0, a DDIM step is the Euler step of an ODE (Song et al. 2021, eq. 13-14), so it can be
run the other way: from level t' to the noisier level t (t' < t: the step DDIM takes from t to t', undone),

    x0_pred = (x_{t'} - sqrt(1 - alpha_bar_{t'}) eps_pred) / sqrt(alpha_bar_{t'})
    x_t     = sqrt(alpha_bar_t) x0_pred + sqrt(1 - alpha_bar_t) eps_pred        (eq. 12 with sigma_t = 0)

i.e. `q_sample(x0_pred, t, noise=eps_pred)`. The model should be evaluated at the unknown x_t; it
is evaluated at x_{t'} instead (with the timestep t of the step's end, as diffusers'
`DDIMInverseScheduler` does; Mokady et al. 2023, section 3, pass the start's). The approximation
eps(x_t) ~ eps(x_{t'}) costs one step's change in eps, so it shrinks with more steps (Song et al. 2021,
section 5.4, invert the ODE of eq. 14 this way and reconstruct); regenerating from the inverted
noise with `DDIMSampler` (same n, same model) then returns close to the starting sample.

`DDIMInverseSampler.timesteps` are `DDIMSampler`'s in reverse, and each inverse step undoes the
DDIM step that ends where it starts.
"""

from __future__ import annotations

import torch

from sdedu.diffusion import q_sample
from sdedu.samplers.ddim import DDIMSampler
from sdedu.samplers.prediction import check_model_output, predict_eps, predict_x0
from sdedu.samplers.step import SamplerStep, check_step_inputs
from sdedu.schedules import NoiseSchedule


class DDIMInverseSampler:
    """Deterministic DDIM run from data to noise (Song et al. 2021, eq. 12 with eta = 0, inverted).

    Equals diffusers' `DDIMInverseScheduler` configured with the same betas and
    `timestep_spacing="leading"`, `steps_offset=steps_offset` (default 1), `set_alpha_to_one=False`,
    `clip_sample=False`, `prediction_type` ("epsilon" / "sample" / "v_prediction" for eps / x0 / v):
    the inverse of `DDIMSampler(schedule, eta=0, steps_offset=steps_offset)` at the same n.

    The loop is the sampling loop with this sampler: for t in `.timesteps` (ascending), call the
    model at (x, t) and step. The first step starts from where DDIM's last one lands, alpha_bar[0]
    (the clean latent as DDIM returns it); the last one ends at DDIM's first timestep.

    Args:
        schedule: the NoiseSchedule the model was trained with.
        prediction_type: what the model predicts: "eps", "x0" or "v".
        steps_offset: as for DDIMSampler (Stable Diffusion: 1).

    After construction the sampler uses DDIMSampler's default number of steps; call `set_timesteps(n)`.
    """

    order = 1  # model evaluations per step

    def __init__(self, schedule: NoiseSchedule, prediction_type: str = "eps", steps_offset: int = 1):
        # DDIMSampler checks schedule, steps_offset and prediction_type.
        self._ddim = DDIMSampler(schedule, steps_offset=steps_offset, prediction_type=prediction_type)
        self.schedule = schedule
        self.prediction_type = prediction_type
        self.steps_offset = steps_offset
        self.set_timesteps(self._ddim.num_inference_steps)

    def set_timesteps(self, n: int) -> None:
        """DDIMSampler's n timesteps in ascending order: offset, k + offset, ..., (n-1)k + offset, k = T // n."""
        self._ddim.set_timesteps(n)
        self.timesteps = self._ddim.timesteps.flip(0)  # (n,) ascending
        self.num_inference_steps = n

    def step(self, model_output: torch.Tensor, t, x_t: torch.Tensor, generator=None) -> SamplerStep:
        """One inverse step: from the level k below t (alpha_bar[0] for the first step) up to t.

        Args:
            model_output: (B, ...) the model's prediction at (x_t, t): eps, x0 or v (`prediction_type`).
            t: the timestep to reach, an element of `.timesteps` (same for the batch).
            x_t: (B, ...) the current sample, one step below t.
            generator: unused (the step is deterministic); accepted for the common face.
        Returns:
            SamplerStep(x_prev, x0_pred): x_prev (B, ...) is the noisier sample at t.
        """
        check_model_output(model_output, x_t)
        t = check_step_inputs(model_output, t, x_t, self.timesteps)
        # 1. Where the sample is: one step of k below t; before the first step, DDIM's final alpha_bar[0].
        t_prev = max(t - self._ddim.step_ratio, 0)  # t' in docs/NOTATION.md

        # 2. x0_pred and eps_pred at that level (eq. 9), from the model's output at (x_{t'}, t).
        x0_pred = predict_x0(model_output, x_t, t_prev, self.schedule, self.prediction_type)
        eps_pred = predict_eps(model_output, x_t, t_prev, self.schedule, self.prediction_type)

        # 3. Up to t along the same line: sqrt(alpha_bar_t) x0_pred + sqrt(1 - alpha_bar_t) eps_pred (eq. 12).
        return SamplerStep(x_prev=q_sample(x0_pred, t, self.schedule, noise=eps_pred), x0_pred=x0_pred)

    def __repr__(self) -> str:
        return (
            f"DDIMInverseSampler(T={self.schedule.T}, steps={self.num_inference_steps}, "
            f"prediction_type={self.prediction_type!r}, steps_offset={self.steps_offset})"
        )
