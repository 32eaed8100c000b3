"""DDPM: ancestral sampling, one step at a time (Ho et al. 2020, Algorithm 2).

Each step samples x_{t-1} from the Gaussian p(x_{t-1} | x_t) whose mean is the forward-process
posterior q(x_{t-1} | x_t, x_0) (eq. 7) with the model's x_0 estimate plugged in, and whose
variance is fixed to that posterior's variance, beta tilde ("sigma_t^2 = beta tilde_t", section 3.2).

With fewer steps than training timesteps (n < T) the chain is respaced (Nichol & Dhariwal 2021,
section 4): it visits n of the T timesteps and uses the betas of the shorter chain,
beta_t = 1 - alpha_bar_t / alpha_bar_{t_prev}, which equal the training betas when n = T.
"""

from __future__ import annotations

import torch

from sdedu._checks import check_int_range, describe
from sdedu.diffusion import randn_like
from sdedu.samplers.prediction import check_model_output, check_prediction_type, predict_x0
from sdedu.samplers.step import SamplerStep, check_step_inputs
from sdedu.schedules import NoiseSchedule


class DDPMSampler:
    """Ancestral sampler of Ho et al. 2020 (Algorithm 2), with diffusers-style respacing.

    Equals diffusers' `DDPMScheduler` configured with the same betas and
    `variance_type="fixed_small"`, `timestep_spacing="leading"`, `steps_offset=0`,
    `prediction_type` ("epsilon" / "sample" / "v_prediction" for eps / x0 / v),
    `clip_sample=clip_sample` (`clip_sample_range=1.0`), `thresholding=False`. There is no final
    alpha to choose: the last timestep is 0 and its step lands on x_0 itself (alpha_bar_{t_prev} = 1).
    A zero-terminal-SNR schedule is used as it is, alpha_bar_T = 0, as `DDPMScheduler` does with
    `rescale_betas_zero_snr=True` (`sdedu.schedules.finite_terminal_snr` says why).

    Args:
        schedule: the NoiseSchedule the model was trained with.
        clip_sample: clamp x0_pred to [-1, 1] before using it. Off by default because sdedu
            samples VAE latents, which are not confined to [-1, 1] (diffusers' DDPM default is on,
            which suits pixel-space models whose data lies in [-1, 1]).
        prediction_type: what the model predicts: "eps", "x0" or "v" (`sdedu.samplers.prediction`);
            not "eps" with zero terminal SNR.

    After construction the timesteps are all T training timesteps, T-1 down to 0; call
    `set_timesteps(n)` for a shorter chain.
    """

    def __init__(self, schedule: NoiseSchedule, clip_sample: bool = False, prediction_type: str = "eps"):
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule must be a sdedu.schedules.NoiseSchedule; got {describe(schedule)}")
        if not isinstance(clip_sample, bool):
            raise TypeError(f"clip_sample must be a bool; got {describe(clip_sample)}")
        self.schedule = schedule
        self.clip_sample = clip_sample
        self.prediction_type = check_prediction_type(prediction_type, schedule)
        self.set_timesteps(schedule.T)

    def set_timesteps(self, n: int) -> None:
        """Use n evenly spaced timesteps ("leading" spacing): (n-1)k, ..., 2k, k, 0 with k = T // n."""
        T = self.schedule.T
        n = check_int_range("n (the number of sampling steps)", n, 1, T)
        step_ratio = T // n
        self.num_inference_steps = n
        self.timesteps = torch.arange(n - 1, -1, -1, dtype=torch.int64) * step_ratio  # (n,) descending

    def previous_timestep(self, t: int) -> int:
        """The timestep after t in `.timesteps`, or -1 after the last one (meaning x_0)."""
        index = int((self.timesteps == t).nonzero()[0])
        return int(self.timesteps[index + 1]) if index + 1 < len(self.timesteps) else -1

    def step(self, model_output: torch.Tensor, t, x_t: torch.Tensor, generator=None) -> SamplerStep:
        """One reverse step x_t -> x_{t_prev}.

        Args:
            model_output: (B, ...) the model's prediction at (x_t, t): eps, x0 or v (`prediction_type`).
            t: the current timestep, an element of `.timesteps` (same for the batch).
            x_t: (B, ...) the current sample.
            generator: torch.Generator for the noise z (drawn once per step, except the last).
        Returns:
            SamplerStep(x_prev, x0_pred), both (B, ...).
        """
        check_model_output(model_output, x_t)
        t = check_step_inputs(model_output, t, x_t, self.timesteps)
        # 1. The next timestep of this chain; -1 stands for clean data x_0.
        t_prev = self.previous_timestep(t)

        # 2. Schedule values (alpha_bar_{-1} = 1). alpha and beta are those of the respaced chain.
        alpha_bar = self.schedule.alpha_bar[t]
        one = torch.ones((), device=alpha_bar.device)
        alpha_bar_prev = self.schedule.alpha_bar[t_prev] if t_prev >= 0 else one
        one_minus_alpha_bar = 1 - alpha_bar
        one_minus_alpha_bar_prev = 1 - alpha_bar_prev
        alpha = alpha_bar / alpha_bar_prev
        beta = 1 - alpha

        # 3. Estimate x_0 from the model's output (for eps: eq. 15, i.e. eq. 4 solved for x_0).
        x0_pred = predict_x0(model_output, x_t, t, self.schedule, self.prediction_type)

        # 4. Optionally keep the estimate inside the data range [-1, 1].
        if self.clip_sample:
            x0_pred = x0_pred.clamp(-1.0, 1.0)

        # 5. Posterior mean of q(x_{t-1} | x_t, x_0) with x0_pred for x_0 (eq. 7).
        coef_x0 = (alpha_bar_prev**0.5 * beta) / one_minus_alpha_bar
        coef_x_t = alpha**0.5 * one_minus_alpha_bar_prev / one_minus_alpha_bar
        mean = coef_x0 * x0_pred + coef_x_t * x_t

        # 6. The last step returns the mean: Algorithm 2, line 3, "z = 0 if t = 1".
        if t_prev < 0:
            return SamplerStep(x_prev=mean, x0_pred=x0_pred)

        # 7. x_{t-1} = mean + sigma_t z with sigma_t^2 = beta tilde (eq. 7; Algorithm 2, line 4).
        variance = one_minus_alpha_bar_prev / one_minus_alpha_bar * beta
        z = randn_like(x_t, generator)
        return SamplerStep(x_prev=mean + variance**0.5 * z, x0_pred=x0_pred)

    def __repr__(self) -> str:
        return (
            f"DDPMSampler(T={self.schedule.T}, steps={self.num_inference_steps}, clip_sample={self.clip_sample}, "
            f"prediction_type={self.prediction_type!r})"
        )
