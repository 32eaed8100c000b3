"""Heun's method on the probability-flow ODE (Karras et al. 2022, Algorithm 1).

In sigma space (`sdedu.samplers.sigmas`: x = x_0 + sigma eps, dx / dsigma = (x - D) / sigma with
the denoiser D = x0_pred, eq. 1 with eq. 3) each step from sigma_i to sigma_next is

    d       = (x_i - D(x_i; sigma_i)) / sigma_i                          (Algorithm 1, line 4)
    x_next  = x_i + (sigma_next - sigma_i) d                             (line 5: an Euler predictor)
    d'      = (x_next - D(x_next; sigma_next)) / sigma_next              (line 7: the slope where it lands)
    x_next  = x_i + (sigma_next - sigma_i) (d / 2 + d' / 2)              (line 8: the trapezoidal corrector)

Lines 7-8 run only if sigma_next != 0 (line 6): the last step, to x_0, stays an Euler step.
Second-order accurate at two model evaluations per step, so n steps cost 2n - 1 evaluations.

The corrector needs the model at (x_next, sigma_next), and samplers never call the model. So, as in
diffusers, every timestep after the first appears twice in `.timesteps`, and `step` alternates:
the first call at a timestep is a predictor (its x_prev is the Euler estimate the model is then
evaluated at), the second call at the same timestep is the corrector.
"""

from __future__ import annotations

import torch

from sdedu.samplers.prediction import check_model_output, predict_x0
from sdedu.samplers.sigma_sampler import SigmaSampler
from sdedu.samplers.sigmas import (
    CLEAN,
    from_sigma_space,
    next_timestep,
    sigma_at,
    to_sigma_space,
    trailing_timesteps,
)
from sdedu.samplers.step import SamplerStep, check_step_inputs


class HeunSampler(SigmaSampler):
    """Deterministic Heun sampler (Karras et al. 2022, Algorithm 1), two model calls per step.

    Equals diffusers' `HeunDiscreteScheduler` configured with the same betas and
    `timestep_spacing="trailing"`, `steps_offset=0`, `use_karras_sigmas=False`, `clip_sample=False`,
    `prediction_type` ("epsilon" / "sample" / "v_prediction" for eps / x0 / v), when its loop starts
    from our x_T times sqrt(1 + sigma_T^2) (diffusers keeps x = x_t / sqrt(alpha_bar)).

    `.timesteps` has 2n - 1 entries for n steps: t_0, t_1, t_1, ..., t_{n-1}, t_{n-1}, one per
    model evaluation (`num_model_evaluations`); `order = 2` says so to the pipeline (SDEdit keeps
    the last 2 * kept entries, as diffusers' img2img does).

    Args:
        schedule: the NoiseSchedule the model was trained with.
        prediction_type: what the model predicts: "eps", "x0" or "v".

    After construction the sampler uses min(25, T) steps (49 model evaluations); call `set_timesteps(n)`.
    """

    order = 2  # model evaluations per step (the last step makes one)
    default_steps = 25

    def set_timesteps(self, n: int) -> None:
        """Use n steps ("trailing" spacing), each timestep after the first listed twice: 2n - 1 entries."""
        steps = trailing_timesteps(self.schedule.T, n)  # (n,) descending
        self.timesteps = torch.cat([steps[:1], steps[1:].repeat_interleave(2)])  # (2n - 1,)
        self.num_inference_steps = n
        self.num_model_evaluations = len(self.timesteps)
        self._predictor = None  # (t_next, x_i, d, sigma_i, sigma_next) between a predictor and its corrector

    def step(self, model_output: torch.Tensor, t, x_t: torch.Tensor, generator=None) -> SamplerStep:
        """A predictor (first call at t) or a corrector (second call, at the predictor's target t).

        Args:
            model_output: (B, ...) the model's prediction at (x_t, t): eps, x0 or v (`prediction_type`).
            t: the current timestep, an element of `.timesteps` (same for the batch).
            x_t: (B, ...) the current sample: after a predictor, the x_prev it returned.
            generator: unused (the sampler is deterministic); accepted for the common face.
        Returns:
            SamplerStep(x_prev, x0_pred), both (B, ...). After a predictor x_prev is the Euler
            estimate at the next timestep; after a corrector, the Heun step's result.
        """
        check_model_output(model_output, x_t)
        t = check_step_inputs(model_output, t, x_t, self.timesteps)
        # 1. The denoiser's estimate D(x; sigma(t)) = x0_pred and x in sigma space.
        sigma = sigma_at(self.sigmas, t)
        x0_pred = predict_x0(model_output, x_t, t, self.schedule, self.prediction_type)
        x = to_sigma_space(x_t, sigma)
        d = (x - x0_pred) / sigma  # the slope (x - D) / sigma (eq. 3)

        # 2. The corrector, if the last call was a predictor aimed at this t (Algorithm 1, lines 7-8).
        if self._predictor is not None and self._predictor[0] == t:
            _, x_i, d_i, sigma_i, sigma_next = self._predictor
            self._predictor = None
            x_next = x_i + (sigma_next - sigma_i) * (d_i / 2 + d / 2)
            return SamplerStep(x_prev=from_sigma_space(x_next, sigma_next), x0_pred=x0_pred)

        # 3. Otherwise the predictor: an Euler step to the next timestep (lines 4-5).
        t_next = next_timestep(self.timesteps, t)
        sigma_next = sigma_at(self.sigmas, t_next)
        x_next = x + (sigma_next - sigma) * d

        # 4. Remember it for the corrector, unless this step lands on x_0 (line 6: sigma_next = 0).
        self._predictor = None if t_next == CLEAN else (t_next, x, d, sigma, sigma_next)
        return SamplerStep(x_prev=from_sigma_space(x_next, sigma_next), x0_pred=x0_pred)

    def __repr__(self) -> str:
        return (
            f"HeunSampler(T={self.schedule.T}, steps={self.num_inference_steps}, "
            f"model_evaluations={self.num_model_evaluations}, prediction_type={self.prediction_type!r})"
        )
