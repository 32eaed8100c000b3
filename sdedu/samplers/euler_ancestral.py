"""Euler ancestral: an Euler step to a lower noise level, then fresh noise back up to the next one.

In sigma space (`sdedu.samplers.sigmas`: x = x_0 + sigma eps) the step from sigma to sigma_next
splits the next noise level into a deterministic part and a fresh Gaussian part,
sigma_next^2 = sigma_down^2 + sigma_up^2, with

    sigma_up   = sqrt(sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2)
    sigma_down = sqrt(sigma_next^2 - sigma_up^2)
    x_next     = x + (sigma_down - sigma) d + sigma_up z,    d = (x - x0_pred) / sigma,  z ~ N(0, I)

(the `sample_euler_ancestral` of Crowson's k-diffusion, which Karras et al. 2022 built on). sigma_up
is DDIM's sigma_t with eta = 1 (Song et al. 2021, eq. 16) divided by sqrt(alpha_bar_next), and the
Euler part is DDIM's "direction pointing to x_t": this is DDIM with eta = 1, i.e. DDPM's ancestral
step on the respaced chain, written in sigma. The last step (sigma_next = 0) adds no noise.
"""

from __future__ import annotations

import torch

from sdedu.diffusion import randn_like
from sdedu.samplers.prediction import check_model_output, predict_x0
from sdedu.samplers.sigma_sampler import SigmaSampler
from sdedu.samplers.sigmas import from_sigma_space, next_timestep, sigma_at, to_sigma_space
from sdedu.samplers.step import SamplerStep, check_step_inputs


class EulerAncestralSampler(SigmaSampler):
    """Stochastic Euler ancestral sampler (k-diffusion's `sample_euler_ancestral`; DDIM with eta = 1).

    Equals diffusers' `EulerAncestralDiscreteScheduler` configured with the same betas and
    `timestep_spacing="trailing"`, `steps_offset=0`, `prediction_type` ("epsilon" / "v_prediction"
    for eps / v; diffusers has no x0 here), stepped with the same generator, when its loop starts
    from our x_T times sqrt(1 + sigma_T^2) (diffusers keeps x = x_t / sqrt(alpha_bar)). diffusers
    draws z on the last step too and multiplies it by sigma_up = 0; this sampler does not draw it.

    Args:
        schedule: the NoiseSchedule the model was trained with.
        prediction_type: what the model predicts: "eps", "x0" or "v".

    After construction the sampler uses min(50, T) steps; call `set_timesteps(n)`.
    """

    def step(self, model_output: torch.Tensor, t, x_t: torch.Tensor, generator=None) -> SamplerStep:
        """One ancestral step x_t -> x at the next timestep (x_0, without noise, after the last).

        Args:
            model_output: (B, ...) the model's prediction at (x_t, t): eps, x0 or v (`prediction_type`).
            t: the current timestep, an element of `.timesteps` (same for the batch).
            x_t: (B, ...) the current sample.
            generator: torch.Generator (or one per image) for z, drawn once per step except the last.
        Returns:
            SamplerStep(x_prev, x0_pred), both (B, ...).
        """
        check_model_output(model_output, x_t)
        t = check_step_inputs(model_output, t, x_t, self.timesteps)
        # 1. The noise levels: sigma(t), the next one, and its split into sigma_down and sigma_up.
        sigma = sigma_at(self.sigmas, t)
        sigma_next = sigma_at(self.sigmas, next_timestep(self.timesteps, t))
        sigma_up = (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5
        sigma_down = (sigma_next**2 - sigma_up**2) ** 0.5

        # 2. The denoiser's estimate D(x; sigma) = x0_pred, and x in sigma space.
        x0_pred = predict_x0(model_output, x_t, t, self.schedule, self.prediction_type)
        x = to_sigma_space(x_t, sigma)

        # 3. Euler to sigma_down along the slope d = (x - D) / sigma (Karras et al. 2022, eq. 3).
        d = (x - x0_pred) / sigma
        x_next = x + (sigma_down - sigma) * d

        # 4. Fresh noise up to sigma_next (none after the last step, where sigma_up = 0).
        if sigma_up > 0:
            x_next = x_next + sigma_up * randn_like(x_t, generator)
        return SamplerStep(x_prev=from_sigma_space(x_next, sigma_next), x0_pred=x0_pred)

    def __repr__(self) -> str:
        return (
            f"EulerAncestralSampler(T={self.schedule.T}, steps={self.num_inference_steps}, "
            f"prediction_type={self.prediction_type!r})"
        )
