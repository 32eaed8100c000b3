"""Checks for exercise 13 (flow matching): the straight path, its velocity, SD3's training times, the loss.

The right answers are the library's (`sdedu.flow_matching`): x_t = (1 - t) x_0 + t eps
(`interpolate`), v = eps - x_0 (`velocity_target`), t = sigmoid(m + s u) with u ~ N(0, 1)
(`logit_normal_times`, Esser et al. 2024, section 3.1, eq. 19) and the loss
mean((v_theta(x_t, 1000 t) - (eps - x_0))^2) (Lipman et al. 2023, eq. 23). The known wrong versions
are the usual mistakes: x_0 - eps for the velocity, t and 1 - t swapped, uniform instead of
logit-normal times, the loss on x_0 instead of v, t not scaled to the model's 1000.

The times are random, so `flow_logit_normal_t` is checked by its distribution: 20 000 draws whose
logits must have mean m and standard deviation s (within 0.05 and 5%), and by its use of the generator.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sdedu.flow_matching import TIME_SCALE, interpolate, velocity_target
from sdedu.grading.errors import fail
from sdedu.grading.expect import expect_tensor
from sdedu.grading.registry import register
from sdedu.grading.trial import Trial

NOTEBOOK = "13_flow_matching"
SWAPPED_HINT = (
    "t and 1 - t are swapped: t = 0 is the data and t = 1 the noise, so x_t = (1 - t) x_0 + t eps "
    "(SD3 and rectified flow; some older papers run time the other way)."
)
SIGN_HINT = (
    "x0 - eps instead of eps - x0: the velocity is d x_t / d t, and x_t moves from x_0 (t = 0) to eps "
    "(t = 1), so v = eps - x0. Sampling runs t from 1 down to 0 and subtracts it."
)
RESHAPE_HINT = (
    "t has shape (B,): reshape it to (B, 1, ..., 1) (t.reshape(-1, *[1] * (x0.ndim - 1))) so that each "
    "sample gets its own t; without it t broadcasts along the last axis instead."
)
SHAPES = [(2, 2), (5, 3), (3, 3, 4, 4), (4, 1, 2, 6)]


def _times(g: torch.Generator, batch: int) -> torch.Tensor:
    """t in [0, 1], (batch,), with both ends of the path among them."""
    t = torch.rand(batch, generator=g)
    if batch >= 3:
        t[0], t[-1] = 0.0, 1.0
    return t


def _cases(trial: Trial, public_seed: int):
    g = trial.generator(public_seed)
    for k, shape in enumerate(SHAPES, start=1):
        name = f"{k} (x0 and eps of shape {shape}, t of shape ({shape[0]},))"
        yield name, torch.randn(shape, generator=g), torch.randn(shape, generator=g), _times(g, shape[0])


def _per_sample(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, *([1] * (x.ndim - 1)))


# ---- the straight path -------------------------------------------------------------------------


@register("flow_interpolate", "interpolate(x0, eps, t): the straight path x_t = (1 - t) x0 + t eps", NOTEBOOK)
def check_interpolate(interpolate_fn, trial: Trial) -> str:
    item = "flow_interpolate"
    count = 0
    for case, x0, eps, t in _cases(trial, 131):
        with trial.case(case):
            args = [("x0", x0), ("eps", eps), ("t", t)]
            got = trial.call(
                item,
                interpolate_fn,
                args,
                case=case,
                name="interpolate",
                error_hints={"must match the size": RESHAPE_HINT, "broadcast": RESHAPE_HINT},
            )
            tt = _per_sample(t, x0)
            expect_tensor(
                item,
                case,
                got,
                interpolate(x0, eps, t),
                name="x_t",
                mistakes=[
                    (lambda: tt * x0 + (1 - tt) * eps, SWAPPED_HINT),
                    (lambda: (1 - t) * x0 + t * eps, RESHAPE_HINT),
                    (lambda: t * x0 + (1 - t) * eps, RESHAPE_HINT),
                    (lambda: x0 + tt * eps, "x_t = (1 - t) x0 + t eps: the data fades out as the noise fades in."),
                ],
                default_hint="x_t = (1 - t) x0 + t eps, with t reshaped to (B, 1, ..., 1).",
            )
            count += 1
    return f"{count} cases"


@register("flow_velocity_target", "velocity_target(x0, eps): the velocity of the straight path, eps - x0", NOTEBOOK)
def check_velocity_target(velocity_fn, trial: Trial) -> str:
    item = "flow_velocity_target"
    count = 0
    for case, x0, eps, _ in _cases(trial, 132):
        with trial.case(case):
            got = trial.call(item, velocity_fn, [("x0", x0), ("eps", eps)], case=case, name="velocity_target")
            expect_tensor(
                item,
                case,
                got,
                velocity_target(x0, eps),
                name="v",
                mistakes=[
                    (lambda: x0 - eps, SIGN_HINT),
                    (
                        lambda: eps,
                        "eps alone is the target of the eps objective (DDPM); the flow's target is eps - x0.",
                    ),
                    (lambda: x0, "x0 alone is the x0 objective; the flow's target is the velocity eps - x0."),
                ],
                default_hint="differentiate x_t = (1 - t) x0 + t eps with respect to t.",
            )
            count += 1
    return f"{count} cases"


# ---- SD3's training times ---------------------------------------------------------------------------

UNIFORM_HINT = (
    "uniform vs logit-normal: these times look uniform on (0, 1). SD3 draws u ~ N(0, 1) and takes "
    "t = sigmoid(m + s u) (Esser et al. 2024, eq. 19): more times in the middle of the path, fewer at the ends."
)
SIGMOID_HINT = "t must lie in (0, 1): apply the sigmoid, t = torch.sigmoid(m + s * u)."
GENERATOR_HINT = "draw u from the generator you are given: torch.randn(batch_size, generator=generator)."


@register(
    "flow_logit_normal_t",
    "logit_normal_t(batch_size, m, s, generator): SD3's training times t = sigmoid(m + s u), u ~ N(0, 1)",
    NOTEBOOK,
)
def check_logit_normal_t(sample_fn, trial: Trial) -> str:
    item = "flow_logit_normal_t"
    count = 0
    n = 20_000
    for k, (m, s) in enumerate([(0.0, 1.0), (0.5, 0.8), (-1.0, 1.5)], start=1):
        case = f"{k} (batch_size = {n}, m = {m}, s = {s})"
        with trial.case(case):
            seed = int(torch.randint(2**31 - 1, (1,), generator=trial.generator(133 + k)))
            args = [("batch_size", n), ("m", m), ("s", s), ("generator", torch.Generator().manual_seed(seed))]
            got = trial.call(item, sample_fn, args, case=case, name="logit_normal_t")
            if not isinstance(got, torch.Tensor) or not got.is_floating_point() or tuple(got.shape) != (n,):
                what = f"{type(got).__name__}" if not isinstance(got, torch.Tensor) else f"shape {tuple(got.shape)}"
                fail(
                    item,
                    case,
                    f"t should be a floating tensor of shape ({n},); got {what}.",
                    "return one t per sample.",
                )
            t = got.detach().double()
            if not bool(((t > 0) & (t < 1)).all()):
                fail(
                    item,
                    case,
                    f"t has values outside (0, 1): from {float(t.min()):.3g} to {float(t.max()):.3g}.",
                    SIGMOID_HINT,
                )
            again = trial.call(
                item, sample_fn, args[:3] + [("generator", torch.Generator().manual_seed(seed))], case=case
            )
            if not isinstance(again, torch.Tensor) or again.shape != got.shape or not torch.equal(again, got):
                fail(item, case, "two calls with generators seeded alike gave different times.", GENERATOR_HINT)
            logit = torch.logit(t)
            mean, std = float(logit.mean()), float(logit.std())
            if abs(mean - m) > 0.05 or abs(std - s) > 0.05 * s:
                bins = torch.histc(t, bins=10, min=0.0, max=1.0) / n
                uniform = bool(((bins - 0.1).abs() < 0.015).all())
                hint = UNIFORM_HINT if uniform else "t = sigmoid(m + s u): m shifts u and s scales it (s, not s**2)."
                fail(
                    item,
                    case,
                    f"logit(t) should have mean {m:g} and standard deviation {s:g}; got {mean:.3f} and {std:.3f}.",
                    hint,
                )
            count += 1
    return f"{count} cases"


# ---- the loss ---------------------------------------------------------------------------------------


class _StandInVelocity(torch.nn.Module):
    """A fixed network v(x_t, time) for the checks: one weight matrix on the flattened sample, and the time."""

    def __init__(self, dim: int, g: torch.Generator):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(dim, dim, generator=g) / math.sqrt(dim))

    def forward(self, x_t: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(x_t.flatten(1) @ self.weight).reshape(x_t.shape)
        return h + torch.sin(time / 300.0).reshape(-1, *([1] * (x_t.ndim - 1)))


@register(
    "flow_matching_loss",
    "flow_matching_loss(model, x0, eps, t): mean((model(x_t, 1000 t) - (eps - x0))^2), differentiable",
    NOTEBOOK,
)
def check_flow_matching_loss(loss_fn, trial: Trial) -> str:
    item = "flow_matching_loss"
    count = 0
    g = trial.generator(134)
    for case, x0, eps, t in _cases(trial, 135):
        with trial.case(case):
            model = _StandInVelocity(x0[0].numel(), g)
            args = [("model", model), ("x0", x0), ("eps", eps), ("t", t)]
            got = trial.call(item, loss_fn, args, case=case, name="flow_matching_loss")
            x_t, target = interpolate(x0, eps, t), velocity_target(x0, eps)
            with torch.no_grad():
                v_pred = model(x_t, t * TIME_SCALE)
                expected = F.mse_loss(v_pred, target)
                tt = _per_sample(t, x0)
                x_swapped = tt * x0 + (1 - tt) * eps
            if isinstance(got, torch.Tensor) and got.ndim == 0 and not got.requires_grad:
                fail(
                    item,
                    case,
                    "the loss does not carry gradients to the model's parameters.",
                    "return the tensor itself: no .item(), .detach() or torch.no_grad() inside the loss.",
                )
            expect_tensor(
                item,
                case,
                got.detach() if isinstance(got, torch.Tensor) else got,
                expected,
                name="the loss",
                mistakes=[
                    (
                        lambda: F.mse_loss(v_pred, x0),
                        "the loss on x0 instead of v: the network predicts the velocity, so the target is eps - x0.",
                    ),
                    (lambda: F.mse_loss(v_pred, x0 - eps), SIGN_HINT),
                    (lambda: F.mse_loss(v_pred, eps), "eps is the DDPM target; the flow's target is eps - x0."),
                    (lambda: F.mse_loss(model(x_swapped, t * TIME_SCALE), target), SWAPPED_HINT),
                    (
                        lambda: F.mse_loss(model(x_t, t), target),
                        "the model's time input is 1000 t (as SD3's): call model(x_t, t * 1000).",
                    ),
                    (
                        lambda: (v_pred - target).pow(2).sum(),
                        "the mean squared error: .mean() (or F.mse_loss), not .sum().",
                    ),
                ],
                default_hint="x_t = (1 - t) x0 + t eps; v_pred = model(x_t, 1000 t); mean((v_pred - (eps - x0))^2).",
            )
            count += 1
    return f"{count} cases"
