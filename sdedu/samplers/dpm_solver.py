"""DPM-Solver++(2M): a second-order multistep solver of the ODE in the half log-SNR lambda (Lu et al. 2022).

The paper writes alpha_t and sigma_t for sqrt(alpha_bar_t) and sqrt(1 - alpha_bar_t) (the mean and
standard deviation of x_t given x_0; not DDIM's sigma_t, nor the sigma of `sdedu.samplers.sigmas`).
With lambda_t = log(sqrt(alpha_bar_t) / sqrt(1 - alpha_bar_t)), half the log-SNR (= -log sigma of
`sdedu.samplers.sigmas`), the probability-flow ODE has an exact solution in terms of the
data-prediction model x0_pred, the starting point of DPM-Solver++:

    x_next = (sqrt(1 - alpha_bar_next) / sqrt(1 - alpha_bar_t)) x_t
             + sqrt(1 - alpha_bar_next) * integral from lambda_t to lambda_next of e^lambda x0_pred dlambda

Holding x0_pred constant over the step gives DPM-Solver++(1), which is DDIM:

    x_next = (sqrt(1 - alpha_bar_next) / sqrt(1 - alpha_bar_t)) x_t - sqrt(alpha_bar_next) (e^{-h} - 1) x0_pred,
    h = lambda_next - lambda_t

DPM-Solver++(2M) (Algorithm 2) replaces x0_pred by a linear extrapolation through the x0_pred of the
previous step, at no extra model call (a multistep method, like Adams-Bashforth):

    r = h_last / h,   D = (1 + 1 / (2r)) x0_pred - (1 / (2r)) x0_pred_last,   h_last = lambda_t - lambda_last
    x_next = (sqrt(1 - alpha_bar_next) / sqrt(1 - alpha_bar_t)) x_t - sqrt(alpha_bar_next) (e^{-h} - 1) D

The first step has no previous x0_pred and is first order. The last step goes to clean data
(alpha_bar = 1, lambda = +inf, e^{-h} = 0) and is taken first order too: it lands on x0_pred itself.
"""

from __future__ import annotations

import math

import torch

from sdedu.samplers.prediction import check_model_output, predict_x0
from sdedu.samplers.sigma_sampler import SigmaSampler
from sdedu.samplers.sigmas import CLEAN, next_timestep, sigma_at
from sdedu.samplers.step import SamplerStep, check_step_inputs


class DPMSolverMultistepSampler(SigmaSampler):
    """DPM-Solver++(2M) (Lu et al. 2022, DPM-Solver++, Algorithm 2), one model call per step.

    Equals diffusers' `DPMSolverMultistepScheduler` configured with the same betas and
    `algorithm_type="dpmsolver++"`, `solver_order=2`, `solver_type="midpoint"`,
    `timestep_spacing="trailing"`, `steps_offset=0`, `lower_order_final=True`,
    `euler_at_final=False`, `final_sigmas_type="zero"`, `use_karras_sigmas=False`,
    `thresholding=False`, `prediction_type` ("epsilon" / "sample" / "v_prediction" for eps / x0 / v),
    from the same x_T (diffusers' `init_noise_sigma` is 1 here: both keep x_t).

    The sampler remembers the previous step's (t, x0_pred); it uses it only when the current t
    directly follows that t in `.timesteps`, so a loop that starts mid-way (SDEdit) or again
    starts first order. `set_timesteps` forgets it.

    Args:
        schedule: the NoiseSchedule the model was trained with.
        prediction_type: what the model predicts: "eps", "x0" or "v".

    After construction the sampler uses min(25, T) steps; call `set_timesteps(n)`.
    """

    order = 1  # model evaluations per step
    default_steps = 25

    def set_timesteps(self, n: int) -> None:
        """Use n timesteps with "trailing" spacing: T-1 first, then every T/n (rounded)."""
        super().set_timesteps(n)
        self._last = None  # (t, x0_pred) of the previous step

    def step(self, model_output: torch.Tensor, t, x_t: torch.Tensor, generator=None) -> SamplerStep:
        """One DPM-Solver++(2M) step x_t -> x at the next timestep (x0_pred after the last).

        Args:
            model_output: (B, ...) the model's prediction at (x_t, t): eps, x0 or v (`prediction_type`).
            t: the current timestep, an element of `.timesteps` (same for the batch).
            x_t: (B, ...) the current sample.
            generator: unused (the solver is deterministic); accepted for the common face.
        Returns:
            SamplerStep(x_prev, x0_pred), both (B, ...).
        """
        check_model_output(model_output, x_t)
        t = check_step_inputs(model_output, t, x_t, self.timesteps)
        # 1. The data prediction x0_pred: what DPM-Solver++ integrates (where DPM-Solver used eps).
        x0_pred = predict_x0(model_output, x_t, t, self.schedule, self.prediction_type)
        last, self._last = self._last, (t, x0_pred)

        # 2. The last step: lambda_next = +inf, so e^{-h} = 0 and alpha_bar_next = 1: x_next = x0_pred.
        t_next = next_timestep(self.timesteps, t)
        if t_next == CLEAN:
            return SamplerStep(x_prev=x0_pred, x0_pred=x0_pred)

        # 3. sqrt(alpha_bar), sqrt(1 - alpha_bar) and lambda, from sigma = sqrt((1 - alpha_bar) / alpha_bar)
        #    (as diffusers computes them): sqrt(alpha_bar) = 1 / sqrt(1 + sigma^2), lambda = -log(sigma).
        sigma, sigma_next = sigma_at(self.sigmas, t), sigma_at(self.sigmas, t_next)
        sqrt_alpha_bar_next = 1 / (1 + sigma_next**2) ** 0.5
        std_ratio = (sigma_next * sqrt_alpha_bar_next) / (sigma / (1 + sigma**2) ** 0.5)  # sqrt(1 - alpha_bar) ratio
        lambda_t, lambda_next = -math.log(sigma), -math.log(sigma_next)
        h = lambda_next - lambda_t

        # 4. D: x0_pred (first order), or extrapolated through the previous step's (Algorithm 2).
        D = x0_pred
        earlier = self.timesteps[self.timesteps > t]
        if last is not None and len(earlier) and last[0] == int(earlier[-1]):
            r = (lambda_t + math.log(sigma_at(self.sigmas, last[0]))) / h  # h_last / h
            D = (1 + 1 / (2 * r)) * x0_pred - (1 / (2 * r)) * last[1]

        # 5. x_next = (sqrt(1 - alpha_bar_next) / sqrt(1 - alpha_bar_t)) x_t - sqrt(alpha_bar_next) (e^{-h} - 1) D.
        x_next = std_ratio * x_t - sqrt_alpha_bar_next * (math.exp(-h) - 1) * D
        return SamplerStep(x_prev=x_next, x0_pred=x0_pred)

    def __repr__(self) -> str:
        return (
            f"DPMSolverMultistepSampler(T={self.schedule.T}, steps={self.num_inference_steps}, "
            f"prediction_type={self.prediction_type!r})"
        )
