"""What the network predicts: eps, x0 or v, and the x_0 (and eps) estimates the samplers need from it.

    "eps": the noise, eps_theta(x_t, t)                                  (Ho et al. 2020)
    "x0":  the clean sample itself
    "v":   v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0          (Salimans & Ho 2022, section 4)

diffusers spells them `prediction_type="epsilon"`, `"sample"` and `"v_prediction"`. The conversions
are those of `sdedu.diffusion`; this module only chooses one.
"""

from __future__ import annotations

import torch

from sdedu._checks import check_same_shape, check_tensor, describe
from sdedu.diffusion import (
    PREDICTION_TYPES,
    predict_eps_from_v,
    predict_eps_from_x0,
    predict_x0_from_eps,
    predict_x0_from_v,
)
from sdedu.schedules import NoiseSchedule

__all__ = ["PREDICTION_TYPES", "check_prediction_type", "check_model_output", "predict_x0", "predict_eps"]
_DIFFUSERS_NAMES = {"epsilon": "eps", "sample": "x0", "original_sample": "x0", "v_prediction": "v"}


def check_prediction_type(prediction_type, schedule: NoiseSchedule) -> str:
    """The prediction type if it is one of PREDICTION_TYPES and can sample `schedule`; else a ValueError.

    An eps model cannot sample a zero-terminal-SNR schedule (alpha_bar_T = 0): there x_T = eps, so
    the noise prediction says nothing about x_0, and x0_pred = (x_T - eps_pred) / sqrt(alpha_bar_T)
    is 0 / 0 (Lin et al. 2024, section 3.2, who switch to v-prediction).
    """
    if not (isinstance(prediction_type, str) and prediction_type in PREDICTION_TYPES):
        hint = ""
        if isinstance(prediction_type, str) and prediction_type in _DIFFUSERS_NAMES:
            hint = f" (diffusers' {prediction_type!r} is sdedu's {_DIFFUSERS_NAMES[prediction_type]!r})"
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}; got {describe(prediction_type)}{hint}")
    if prediction_type == "eps" and schedule.zero_terminal_snr:
        raise ValueError(
            "prediction_type 'eps' cannot sample a schedule with zero terminal SNR (alpha_bar[T-1] = 0): there "
            "x_T = eps, so the noise prediction says nothing about x_0 (x0_pred = (x_T - eps_pred) / 0); "
            "expected a 'v' or 'x0' model (Lin et al. 2024, section 3.2); got 'eps'"
        )
    return prediction_type


def check_model_output(model_output, x_t) -> None:
    """model_output and x_t: floating tensors of the same shape (B, ...)."""
    check_tensor("x_t", x_t, floating=True)
    check_tensor("model_output", model_output, floating=True)
    check_same_shape("model_output", model_output, "x_t", x_t)


def predict_x0(model_output: torch.Tensor, x_t: torch.Tensor, t: int, schedule: NoiseSchedule, prediction_type: str):
    """x0_pred from the model's output at (x_t, t), both (B, ...), for prediction_type eps, x0 or v."""
    if prediction_type == "eps":
        return predict_x0_from_eps(x_t, model_output, t, schedule)
    if prediction_type == "v":
        return predict_x0_from_v(x_t, model_output, t, schedule)
    return model_output


def predict_eps(model_output: torch.Tensor, x_t: torch.Tensor, t: int, schedule: NoiseSchedule, prediction_type: str):
    """eps_pred from the model's output at (x_t, t), both (B, ...), for prediction_type eps, x0 or v."""
    if prediction_type == "eps":
        return model_output
    if prediction_type == "v":
        return predict_eps_from_v(x_t, model_output, t, schedule)
    return predict_eps_from_x0(x_t, model_output, t, schedule)
