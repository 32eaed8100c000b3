"""What the samplers in sigma (Euler, Euler ancestral, Heun, DPM-Solver++) share: their construction.

Each keeps the schedule, the model's `prediction_type`, the table of noise levels sigma(t)
(`sdedu.samplers.sigmas`) and "trailing" timesteps; each adds its own `step`, and a sampler that
keeps state between steps (Heun's predictor, DPM-Solver++'s previous x0_pred) extends
`set_timesteps` to reset it.
"""

from __future__ import annotations

from sdedu._checks import describe
from sdedu.samplers.prediction import check_prediction_type
from sdedu.samplers.sigmas import sigmas, trailing_timesteps
from sdedu.schedules import NoiseSchedule, finite_terminal_snr


class SigmaSampler:
    """The common constructor and `set_timesteps` of the samplers that step in (sigma, x) coordinates.

    Args:
        schedule: the NoiseSchedule the model was trained with. A zero-terminal-SNR schedule
            (alpha_bar_T = 0, sigma_T infinite) is kept with alpha_bar_T = 2^-24, sigma_T = 4096, as
            diffusers' Euler and DPM-Solver schedulers do (`sdedu.schedules.finite_terminal_snr`).
        prediction_type: what the model predicts: "eps", "x0" or "v" (not "eps" with zero terminal SNR).

    After construction the sampler uses min(default_steps, T) steps; call `set_timesteps(n)`.
    """

    order = 1  # model evaluations per step
    default_steps = 50

    def __init__(self, schedule: NoiseSchedule, prediction_type: str = "eps"):
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule must be a sdedu.schedules.NoiseSchedule; got {describe(schedule)}")
        self.prediction_type = check_prediction_type(prediction_type, schedule)
        self.schedule = finite_terminal_snr(schedule)  # alpha_bar_T > 0, for sigma and x0_pred alike
        self.sigmas = sigmas(self.schedule)  # (T,) sqrt((1 - alpha_bar) / alpha_bar)
        self.set_timesteps(min(self.default_steps, schedule.T))

    def set_timesteps(self, n: int) -> None:
        """Use n timesteps with "trailing" spacing: T-1 first, then every T/n (rounded)."""
        self.timesteps = trailing_timesteps(self.schedule.T, n)  # (n,) descending
        self.num_inference_steps = n
