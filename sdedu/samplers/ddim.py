"""DDIM: a non-Markovian reverse process that can skip steps (Song et al. 2021).

DDIM keeps the training objective of DDPM but samples with

    x_prev = sqrt(alpha_bar_prev) x0_pred                       "predicted x_0"
           + sqrt(1 - alpha_bar_prev - sigma_t^2) eps_pred      "direction pointing to x_t"
           + sigma_t z                                          "random noise"     (eq. 12)

    sigma_t = eta sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_prev)  (eq. 16)

(the paper's alpha is alpha_bar here). eta = 0 gives a deterministic map from noise to data that
works with ~50 steps; eta = 1 gives DDPM's variance on the same (respaced) chain.
"""

from __future__ import annotations

import torch

from sdedu._checks import check_int_range, check_number_range, describe
from sdedu.diffusion import randn_like
from sdedu.samplers.prediction import check_model_output, check_prediction_type, predict_eps, predict_x0
from sdedu.samplers.step import SamplerStep, check_step_inputs
from sdedu.schedules import NoiseSchedule


class DDIMSampler:
    """DDIM sampler (Song et al. 2021, eq. 12) with Stable Diffusion's timestep choices.

    Equals diffusers' `DDIMScheduler` configured with the same betas and
    `timestep_spacing="leading"`, `steps_offset=steps_offset` (default 1),
    `set_alpha_to_one=False`, `clip_sample=clip_sample` (`clip_sample_range=1.0`),
    `prediction_type` ("epsilon" / "sample" / "v_prediction" for eps / x0 / v), `thresholding=False`,
    stepped with `eta=eta` and `use_clipped_model_output=False` - the configuration Stable Diffusion
    v1 ships.

    - Timesteps ("leading" + offset): with k = T // n they are (n-1)k+1, ..., k+1, 1.
      Each step goes from t to t - k.
    - Final alpha (`set_alpha_to_one=False`): the last step lands on alpha_bar[0], one step of
      noise short of x_0, not on alpha_bar = 1. Because of the offset, n = T would start at
      timestep T, which does not exist: use n < T, or steps_offset=0 for n = T.
    - clip_sample clamps x0_pred to [-1, 1]; the direction term keeps the eps_pred of the
      unclipped model output.
    - An x0 or v model's output gives x0_pred and eps_pred (`sdedu.samplers.prediction`); eq. 12
      then uses both, as for an eps model.
    - A zero-terminal-SNR schedule is used as it is, alpha_bar_T = 0, as `DDIMScheduler` does with
      `rescale_betas_zero_snr=True`; "leading" timesteps reach t = T - 1 only for n = T - 1 (or
      n = T with steps_offset=0), where Lin et al. 2024 (section 3.3) start every sampler: the
      samplers in sigma do, with "trailing" timesteps.

    Args:
        schedule: the NoiseSchedule the model was trained with.
        eta: noise weight in [0, 1]; 0 is deterministic DDIM, 1 is DDPM-like.
        clip_sample: off by default because sdedu samples VAE latents, which are not confined
            to [-1, 1] (diffusers' DDIM default is on, for pixel-space models).
        steps_offset: added to every timestep; Stable Diffusion uses 1. With 0, the last step
            would go from t = 0 to alpha_bar[0], i.e. nowhere (a wasted model call).
        prediction_type: what the model predicts: "eps", "x0" or "v" (`sdedu.samplers.prediction`);
            not "eps" with zero terminal SNR.

    After construction the sampler uses min(50, T - steps_offset) steps; call `set_timesteps(n)`.
    """

    def __init__(
        self,
        schedule: NoiseSchedule,
        eta: float = 0.0,
        clip_sample: bool = False,
        steps_offset: int = 1,
        prediction_type: str = "eps",
    ):
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule must be a sdedu.schedules.NoiseSchedule; got {describe(schedule)}")
        if not isinstance(clip_sample, bool):
            raise TypeError(f"clip_sample must be a bool; got {describe(clip_sample)}")
        self.schedule = schedule
        self.eta = check_number_range("eta", eta, 0.0, 1.0)  # eta > 1 would make eq. 12's sqrt negative
        self.clip_sample = clip_sample
        self.steps_offset = check_int_range("steps_offset", steps_offset, 0, schedule.T - 1)
        self.prediction_type = check_prediction_type(prediction_type, schedule)
        # alpha_bar after the last step: diffusers' set_alpha_to_one=False, as in Stable Diffusion.
        self.final_alpha_bar = schedule.alpha_bar[0]
        self.set_timesteps(max(1, min(50, schedule.T - steps_offset)))

    def set_timesteps(self, n: int) -> None:
        """Use n evenly spaced timesteps ("leading" spacing): (n-1)k + offset, ..., k + offset, offset."""
        T = self.schedule.T
        n = check_int_range("n (the number of sampling steps)", n, 1, T)
        step_ratio = T // n
        first = (n - 1) * step_ratio + self.steps_offset
        if first >= T:
            raise ValueError(
                f"n (the number of sampling steps) with steps_offset={self.steps_offset} must keep the first "
                f"timestep (n-1)*(T//n)+steps_offset below T={T}; got n={n}, first timestep {first}. "
                f"Use n < {n} or DDIMSampler(..., steps_offset=0)"
            )
        self.num_inference_steps = n
        self.step_ratio = step_ratio
        self.timesteps = torch.arange(n - 1, -1, -1, dtype=torch.int64) * step_ratio + self.steps_offset  # (n,)

    def previous_alpha_bar(self, t: int) -> torch.Tensor:
        """alpha_bar where the step from timestep t lands: alpha_bar[t - k], or the final alpha_bar after the last."""
        t_prev = int(t) - self.step_ratio
        return self.schedule.alpha_bar[t_prev] if t_prev >= 0 else self.final_alpha_bar

    def step(self, model_output: torch.Tensor, t, x_t: torch.Tensor, generator=None) -> SamplerStep:
        """One reverse step x_t -> x_{t - k}.

        Args:
            model_output: (B, ...) the model's prediction at (x_t, t): eps, x0 or v (`prediction_type`).
            t: the current timestep, an element of `.timesteps` (same for the batch).
            x_t: (B, ...) the current sample.
            generator: torch.Generator for z; used only when eta > 0 (then on every step).
        Returns:
            SamplerStep(x_prev, x0_pred), both (B, ...).
        """
        check_model_output(model_output, x_t)
        t = check_step_inputs(model_output, t, x_t, self.timesteps)
        # 1-2. Schedule values at t and at the next timestep, k = T // n earlier (after the last
        #      step: the final alpha_bar).
        alpha_bar = self.schedule.alpha_bar[t]
        alpha_bar_prev = self.previous_alpha_bar(t)
        one_minus_alpha_bar = 1 - alpha_bar
        one_minus_alpha_bar_prev = 1 - alpha_bar_prev

        # 3. "Predicted x_0" (eq. 12, first term; eq. 9) and the noise eps_pred, from the model's output.
        x0_pred = predict_x0(model_output, x_t, t, self.schedule, self.prediction_type)
        eps_pred = predict_eps(model_output, x_t, t, self.schedule, self.prediction_type)

        # 4. Optionally keep the estimate inside the data range [-1, 1].
        if self.clip_sample:
            x0_pred = x0_pred.clamp(-1.0, 1.0)

        # 5. sigma_t = eta * sqrt of DDPM's posterior variance between t and t_prev (eq. 16).
        variance = (one_minus_alpha_bar_prev / one_minus_alpha_bar) * (1 - alpha_bar / alpha_bar_prev)
        sigma_t = self.eta * variance**0.5

        # 6. "Direction pointing to x_t" (eq. 12, second term). Its square root is of a number >= 0
        #    for eta <= 1, clamped at 0 against rounding: with eta = 1 from alpha_bar_t = 0 (zero
        #    terminal SNR) it is 0 up to rounding, where diffusers' DDIMScheduler returns NaN.
        direction = (1 - alpha_bar_prev - sigma_t**2).clamp(min=0) ** 0.5 * eps_pred

        # 7. x_prev = sqrt(alpha_bar_prev) x0_pred + direction (+ sigma_t z when eta > 0) (eq. 12).
        x_prev = alpha_bar_prev**0.5 * x0_pred + direction
        if self.eta > 0:
            x_prev = x_prev + sigma_t * randn_like(x_t, generator)
        return SamplerStep(x_prev=x_prev, x0_pred=x0_pred)

    def __repr__(self) -> str:
        return (
            f"DDIMSampler(T={self.schedule.T}, steps={self.num_inference_steps}, eta={self.eta}, "
            f"clip_sample={self.clip_sample}, steps_offset={self.steps_offset}, "
            f"prediction_type={self.prediction_type!r})"
        )
