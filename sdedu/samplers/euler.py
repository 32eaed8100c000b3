"""Euler's method on the probability-flow ODE (Karras et al. 2022, Algorithm 1 without its correction).

In sigma space (`sdedu.samplers.sigmas`: x = x_t / sqrt(alpha_bar_t) = x_0 + sigma eps) the ODE is
dx / dsigma = (x - D(x; sigma)) / sigma with the denoiser D = x0_pred (eq. 1 with eq. 3), and

    d      = (x_i - D(x_i; sigma_i)) / sigma_i                (Algorithm 1, line 4)
    x_next = x_i + (sigma_next - sigma_i) d                   (Algorithm 1, line 5)

For an eps model d = eps_pred, and the step is exactly deterministic DDIM (Song et al. 2021,
eq. 13): DDIM is Euler's method in these coordinates. The last step goes to sigma = 0 and lands on
x0_pred.
"""

from __future__ import annotations

import torch

from sdedu.samplers.prediction import check_model_output, predict_x0
from sdedu.samplers.sigma_sampler import SigmaSampler
from sdedu.samplers.sigmas import from_sigma_space, next_timestep, sigma_at, to_sigma_space
from sdedu.samplers.step import SamplerStep, check_step_inputs


class EulerSampler(SigmaSampler):
    """Deterministic Euler sampler (Karras et al. 2022, Algorithm 1, lines 4-5).

    Equals diffusers' `EulerDiscreteScheduler` configured with the same betas and
    `timestep_spacing="trailing"`, `steps_offset=0`, `interpolation_type="linear"`,
    `use_karras_sigmas=False`, `final_sigmas_type="zero"`, `timestep_type="discrete"`,
    `prediction_type` ("epsilon" / "sample" / "v_prediction" for eps / x0 / v), stepped with
    `s_churn=0`, when its loop starts from our x_T times sqrt(1 + sigma_T^2) (diffusers keeps
    x = x_t / sqrt(alpha_bar); see `sdedu.samplers.sigmas`). One model evaluation per step.

    Args:
        schedule: the NoiseSchedule the model was trained with.
        prediction_type: what the model predicts: "eps", "x0" or "v".

    After construction the sampler uses min(50, T) steps; call `set_timesteps(n)`.
    """

    def step(self, model_output: torch.Tensor, t, x_t: torch.Tensor, generator=None) -> SamplerStep:
        """One Euler step x_t -> x at the next timestep (x_0 after the last).

        Args:
            model_output: (B, ...) the model's prediction at (x_t, t): eps, x0 or v (`prediction_type`).
            t: the current timestep, an element of `.timesteps` (same for the batch).
            x_t: (B, ...) the current sample.
            generator: unused (the step is deterministic); accepted for the common face.
        Returns:
            SamplerStep(x_prev, x0_pred), both (B, ...).
        """
        check_model_output(model_output, x_t)
        t = check_step_inputs(model_output, t, x_t, self.timesteps)
        # 1. The noise levels of this step: sigma(t) and that of the next timestep (0 after the last).
        sigma = sigma_at(self.sigmas, t)
        sigma_next = sigma_at(self.sigmas, next_timestep(self.timesteps, t))

        # 2. The denoiser's estimate D(x; sigma) = x0_pred.
        x0_pred = predict_x0(model_output, x_t, t, self.schedule, self.prediction_type)

        # 3. Into sigma space: x = x_t / sqrt(alpha_bar_t) = x_0 + sigma eps.
        x = to_sigma_space(x_t, sigma)

        # 4. The slope of the ODE, d = (x - D) / sigma (eq. 3; Algorithm 1, line 4): eps_pred for an eps model.
        d = (x - x0_pred) / sigma

        # 5. One Euler step in sigma (Algorithm 1, line 5).
        x_next = x + (sigma_next - sigma) * d

        # 6. Back to the sample the model sees at the next timestep.
        return SamplerStep(x_prev=from_sigma_space(x_next, sigma_next), x0_pred=x0_pred)

    def __repr__(self) -> str:
        return (
            f"EulerSampler(T={self.schedule.T}, steps={self.num_inference_steps}, "
            f"prediction_type={self.prediction_type!r})"
        )
