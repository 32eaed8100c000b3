"""Argument checks that fail with a message naming the argument, the expectation and the value.

Every public function in sdedu validates its inputs with these, so that a learner who passes
the wrong thing reads *what* was wrong, not a shape error from deep inside torch.
"""

from __future__ import annotations

import math

import torch


def describe(value) -> str:
    """A short description of a value for an error message."""
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    if type(value).__module__ == "numpy" and hasattr(value, "shape"):
        return f"a numpy array of shape {tuple(value.shape)} (convert it with torch.from_numpy)"
    return f"{type(value).__name__} {value!r}"


def check_tensor(name: str, value, *, ndim: int | None = None, floating: bool = False) -> torch.Tensor:
    """Require a tensor (optionally of `ndim` dimensions and a floating dtype)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {describe(value)}")
    if ndim is not None and value.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions; got {describe(value)}")
    if floating and not value.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor; got {describe(value)}")
    return value


def check_finite(name: str, value: torch.Tensor) -> torch.Tensor:
    """Require a tensor without inf or NaN (one NaN pixel would otherwise turn a whole image into NaN)."""
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        bad = int((~torch.isfinite(value)).sum())
        raise ValueError(f"{name} must be finite; got {describe(value)} with {bad} inf/NaN value(s)")
    return value


def check_device(name: str, device) -> torch.device:
    """Require a device torch knows and this machine has: "cpu", "cuda", "cuda:0", a torch.device..."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"{name} must be a torch device such as 'cpu' or 'cuda:0'; got {describe(device)}") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name} must be a device this machine has; got {str(device)!r} but CUDA is not available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{name} must be a device this machine has; got {str(device)!r} but MPS is not available")
    return device


def check_same_shape(name: str, value: torch.Tensor, like_name: str, like: torch.Tensor) -> None:
    """Require `value` to have exactly the shape of `like` (no silent broadcasting)."""
    if tuple(value.shape) != tuple(like.shape):
        raise ValueError(
            f"{name} must have the same shape as {like_name} {tuple(like.shape)}; got {tuple(value.shape)}"
        )


def check_int_range(name: str, value, low: int, high: int) -> int:
    """Require a Python int with low <= value <= high (both inclusive)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int in [{low}, {high}]; got {describe(value)}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}]; got {value}")
    return value


def check_number_range(name: str, value, low: float, high: float = float("inf")) -> float:
    """Require a finite real number with low <= value <= high (an infinite bound means "no bound")."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number in [{low}, {high}]; got {describe(value)}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number in [{low}, {high}]; got {value}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}]; got {value}")
    return float(value)
