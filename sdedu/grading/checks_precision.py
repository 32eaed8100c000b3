"""Checks for exercise 09: mixed-precision inference with autocast, and timing it honestly.

`torch.autocast` runs each operation in the precision that suits it (matrix products in a 16-bit
type, reductions and normalisations in float32) while the weights stay float32 (PyTorch's
`torch.amp` documentation lists which operations run in which type; Micikevicius et al. 2018
introduced float16 mixed-precision training with loss scaling). On a CPU the 16-bit type is
bfloat16 (8 exponent bits, like float32: no overflow; 8 significant bits, about 2.4 decimal
digits); on a GPU it is float16. A bfloat16 result agrees with float32 to about 1%.

Timing: the first calls of a function are slow (memory allocation, kernel selection, caches),
and single runs are noisy, so a benchmark warms up, then reports the median of several runs.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from sdedu.grading.errors import describe, fail
from sdedu.grading.registry import register
from sdedu.grading.trial import Trial


def autocast_dtype(device: torch.device) -> torch.dtype:
    """The 16-bit type autocast uses on a device: bfloat16 on the CPU, float16 on a GPU."""
    return torch.bfloat16 if device.type == "cpu" else torch.float16


def small_model(seed: int = 0) -> nn.Module:
    """A small MLP with a LayerNorm (which autocast keeps in float32)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 256), nn.GELU(), nn.LayerNorm(256), nn.Linear(256, 64))


def _devices():
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    return devices


@register(
    "autocast_inference",
    "autocast_inference(model, x): inference under autocast (bf16 on CPU, fp16 on GPU)",
    "09_mixed_precision",
)
def check_autocast_inference(autocast_inference, trial: Trial) -> str:
    item = "autocast_inference"
    errors = []
    for device in _devices():
        case = f"{device.type} (an MLP 64 -> 256 -> 64 on a batch of 32, on {device.type})"
        model = small_model().to(device)
        x = torch.randn(32, 64, generator=trial.generator(1)).to(device)
        with torch.no_grad():
            expected = model(x)
        want = autocast_dtype(device)
        got = trial.call(
            item,
            autocast_inference,
            [("model", model), ("x", x)],
            case=case,
            name="autocast_inference",
            error_hints={
                "dtype": "keep the model and x in float32 and let torch.autocast choose the "
                "precision of each operation (a Linear with a bfloat16 input and float32 "
                "weights fails outside autocast)."
            },
        )
        if not isinstance(got, torch.Tensor):
            fail(item, case, f"autocast_inference should return the model's output tensor; got {describe(got)}.", None)
        if tuple(got.shape) != tuple(expected.shape):
            fail(item, case, f"the output should have shape {tuple(expected.shape)}; got {tuple(got.shape)}.", None)
        if got.dtype != want:
            hint = (
                f"run the model inside torch.autocast(device_type=x.device.type, dtype={want}); the last Linear "
                f"then produces {want}."
            )
            if got.dtype == torch.float32 and torch.allclose(got, expected, atol=1e-6):
                hint = "the output is exactly the float32 one: autocast was not active around the model call. " + hint
            elif got.dtype == torch.float32:
                hint = "return the output as autocast produced it, without converting it back to float32."
            elif got.dtype == torch.float16 and device.type == "cpu":
                hint = "on a CPU, use bfloat16: it has float32's range (no overflow) and CPUs support it well."
            fail(item, case, f"the output dtype is {got.dtype}; on {device.type} autocast should give {want}.", hint)
        if got.requires_grad:
            fail(
                item,
                case,
                "the output requires grad: autograd recorded the whole forward pass.",
                "run inference under torch.inference_mode() (or torch.no_grad()): it saves memory and time.",
            )
        error = ((got.float() - expected).abs().max() / expected.abs().max()).item()
        if error > 0.03:
            fail(
                item,
                case,
                f"the output differs from float32 by {error:.2%} of its range; expected about 1%.",
                "compute the same thing as model(x): only the precision should change.",
            )
        errors.append(f"{device.type} {str(want).replace('torch.', '')}: {error:.2%} off float32")
    return "; ".join(errors)


class _Sleeper:
    """A function whose call i sleeps durations[i] seconds; records how long each call really took.

    The check compares the learner's result with the durations measured here, so a busy machine
    (where time.sleep oversleeps) does not make a right answer fail.
    """

    def __init__(self, durations):
        self.durations = list(durations)
        self.actual: list[float] = []

    @property
    def calls(self) -> int:
        return len(self.actual)

    def __call__(self):
        duration = self.durations[min(self.calls, len(self.durations) - 1)]
        start = time.perf_counter()
        time.sleep(duration)
        self.actual.append(time.perf_counter() - start)


def _close(got: float, expected: float) -> bool:
    return abs(got - expected) <= 0.2 * expected + 0.003


@register(
    "benchmark_timing",
    "median_time(fn, repeats, warmup): warm up, then the median seconds per call",
    "09_mixed_precision",
)
def check_benchmark_timing(median_time, trial: Trial) -> str:
    item = "benchmark_timing"
    cases = [
        ("1 (fn sleeps 20 ms per call; repeats=5, warmup=2)", [0.02] * 7, 5, 2),
        (
            "2 (the 2 warm-up calls take 150 ms, then 10 ms per call except one 150 ms hiccup; repeats=7, warmup=2)",
            [0.15, 0.15, 0.01, 0.01, 0.15, 0.01, 0.01, 0.01, 0.01],
            7,
            2,
        ),
    ]
    for case, durations, repeats, warmup in cases:
        with trial.case(case):
            fn = _Sleeper(durations)
            got = trial.call(
                item, median_time, [("fn", fn), ("repeats", repeats), ("warmup", warmup)], case=case, name="median_time"
            )
            if isinstance(got, torch.Tensor) and got.numel() == 1:
                got = got.item()
            if isinstance(got, bool) or not isinstance(got, (int, float)):
                fail(
                    item,
                    case,
                    f"median_time should return a float (seconds); got {describe(got)}.",
                    "return one number: the median, in seconds.",
                )
            if fn.calls != warmup + repeats:
                fail(
                    item,
                    case,
                    f"fn was called {fn.calls} times; expected warmup + repeats = {warmup + repeats}.",
                    "call fn `warmup` times without timing it, then `repeats` times, timing each call.",
                )
            timed = fn.actual[warmup:]
            expected = statistics.median(timed)
            if not _close(got, expected):
                hint = "time each call with time.perf_counter() and return the median of the `repeats` timings, in seconds."
                if _close(got / 1000, expected):
                    hint = "return seconds, not milliseconds."
                elif _close(got, sum(timed)) or _close(got, sum(fn.actual)):
                    hint = "return the time of one call (the median of the timings), not the total."
                elif got > expected:
                    hint = (
                        "one slow call should not move the result: use the median of the timings, not the mean, and "
                        "do not time the warm-up calls."
                    )
                fail(
                    item,
                    case,
                    f"median_time returned {got:.4g} s; the median of the timed calls, measured by the check, "
                    f"was {expected:.4g} s.",
                    hint,
                )
    return "warm-up skipped, median per call in seconds"
