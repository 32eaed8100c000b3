"""Euler's method on a flow's ODE dx/dt = v(x, t), from t = 1 (noise) to t = 0 (data).

The model predicts the velocity v = eps - x_0 of the straight path x_t = (1 - t) x_0 + t eps
(`sdedu.flow_matching`), so one step from time t_i to the next, smaller, time t_{i+1} is

    x_{t_{i+1}} = x_{t_i} + (t_{i+1} - t_i) v_theta(x_{t_i}, t_i)       (Euler; Liu et al. 2023)
    x0_pred     = x_{t_i} - t_i v_theta(x_{t_i}, t_i)                   (the line followed to t = 0)

If the learned paths were exactly straight, one step would land on the data; the straighter they
are, the fewer steps are needed. The times are n points evenly spaced from 1 down to the smallest
training time and shifted by SD3's resolution shift (`sdedu.flow_matching.shift_time`), then 0.
"""

from __future__ import annotations

import torch

from sdedu._checks import check_int_range, check_number_range, check_same_shape, check_tensor, describe
from sdedu.flow_matching import TIME_SCALE, shift_time, x0_from_velocity
from sdedu.samplers.step import SamplerStep


class FlowMatchEulerSampler:
    """Deterministic Euler sampler for velocity models (rectified flow, SD3).

    Equals diffusers' `FlowMatchEulerDiscreteScheduler(shift=shift)` with its other options at
    their defaults (num_train_timesteps=1000 = `sdedu.flow_matching.TIME_SCALE`): the same
    `.timesteps` (t * 1000, float32, what the model sees), `.sigmas` (the times t, with a trailing
    0) and steps (`prev_sample = sample + dt * model_output`).
    As there, the last time is the shifted smallest training time 1 / 1000, shifted once more
    by `set_timesteps` (diffusers shifts both its training grid and its inference grid); with
    shift = 1 the times are simply linspace(1, 1 / 1000, n). The last step, from that smallest time
    to 0, is tiny: for n > 1, n steps make n - 1 full-sized ones (n = 2 samples like n = 1).

    Args:
        shift: SD3's resolution shift (> 0; 1 = none, SD3 uses 3 at 1024 px).

    After construction the sampler uses `default_steps` steps; call `set_timesteps(n)`.
    """

    order = 1  # model evaluations per step
    default_steps = 28  # SD3's default number of steps

    def __init__(self, shift: float = 1.0):
        self.shift = check_number_range("shift", shift, 0.0)
        if self.shift == 0.0:
            raise ValueError("shift must be > 0; got 0")
        self.set_timesteps(self.default_steps)

    def set_timesteps(self, n: int) -> None:
        """Use n Euler steps: times from 1 to the (twice) shifted 1 / 1000, then 0 after the last."""
        n = check_int_range("n", n, 1, 1_000_000)
        t_min = shift_time(1.0 / TIME_SCALE, self.shift)  # diffusers' sigma_min
        t = torch.linspace(1.0, t_min, n, dtype=torch.float64)  # as np.linspace in diffusers
        t = shift_time(t, self.shift).to(torch.float32)  # (n,)
        self.sigmas = torch.cat([t, t.new_zeros(1)])  # (n + 1,) the times t_i, then 0
        self.timesteps = t * TIME_SCALE  # (n,) descending floats: the model's time input
        self.num_inference_steps = n

    def index(self, t) -> int:
        """The position of timestep t (an element of `.timesteps`) in `.timesteps`."""
        if isinstance(t, torch.Tensor) and t.ndim == 0:
            t = t.item()
        if isinstance(t, bool) or not isinstance(t, (int, float)):
            raise TypeError(f"t must be one of sampler.timesteps (a float or a 0-dim tensor); got {describe(t)}")
        matches = (self.timesteps == t).nonzero()
        if len(matches) == 0:
            shown = [round(v, 3) for v in self.timesteps.tolist()]
            shown = shown if len(shown) <= 8 else shown[:4] + ["..."] + shown[-2:]
            raise ValueError(
                f"t must be one of sampler.timesteps {shown} (call set_timesteps(n) first to change them); got {t}"
            )
        return int(matches[0])

    def step(self, model_output: torch.Tensor, t, x_t: torch.Tensor, generator=None) -> SamplerStep:
        """One Euler step x_{t_i} -> x_{t_{i+1}} (x_0 after the last).

        Args:
            model_output: (B, ...) the model's velocity v_theta(x_t, t) (eps - x_0).
            t: the current timestep, an element of `.timesteps` (same for the batch).
            x_t: (B, ...) the current sample.
            generator: unused (the step is deterministic); accepted for the common face.
        Returns:
            SamplerStep(x_prev, x0_pred), both (B, ...).
        """
        check_tensor("x_t", x_t, floating=True)
        check_tensor("model_output", model_output, floating=True)
        check_same_shape("model_output", model_output, "x_t", x_t)
        i = self.index(t)
        # 1. This step's time and the next one (0 after the last step).
        sigma, sigma_next = float(self.sigmas[i]), float(self.sigmas[i + 1])
        # 2. Where the current velocity points at t = 0: x0_pred = x_t - t v.
        x0_pred = x0_from_velocity(x_t, model_output, sigma)
        # 3. One Euler step along dx/dt = v, from t_i down to t_{i+1}.
        x_prev = x_t + (sigma_next - sigma) * model_output
        return SamplerStep(x_prev=x_prev, x0_pred=x0_pred)

    def __repr__(self) -> str:
        return f"FlowMatchEulerSampler(shift={self.shift:g}, steps={self.num_inference_steps})"
