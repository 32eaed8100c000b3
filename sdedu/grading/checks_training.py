"""Checks for exercise 04: one training step of a diffusion model, and a short training loop.

The training step (Ho et al. 2020, Algorithm 1) is random, so it cannot be compared with a
reference output. Instead the check watches it work: the model is wrapped in a spy that records
its input (x_t, t) and, through a gradient hook, the gradient of the loss with respect to its
output. For the mean squared error, d loss / d eps_pred = 2 (eps_pred - target) / N, so the
target the learner regressed onto can be read back exactly, and then:

    x_t == sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) target      (the forward process, eq. 4)

must hold element by element. The optimizer is a spy too: at `step()` it compares the gradients
with those of this step's loss alone (a missing `zero_grad()` shows as the sum of two steps).
The loop is checked by what training is for (the loss falls on 2-D toy data) in `checks_training_loop`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sdedu.grading.errors import describe, fail
from sdedu.grading.registry import register
from sdedu.grading.trial import Trial
from sdedu.schedules import NoiseSchedule

T_TOY = 20  # a short chain, so that a batch visits every timestep


class _SpyModel(nn.Module):
    """Wraps a denoiser; records (x_t, t, eps_pred) and d loss / d eps_pred of every call."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.calls: list[dict] = []

    def forward(self, x_t, t):
        call = {
            "x_t": x_t.detach().clone() if isinstance(x_t, torch.Tensor) else x_t,
            "t": t.detach().clone() if isinstance(t, torch.Tensor) else t,
            "grad": None,
        }
        self.calls.append(call)
        eps_pred = self.inner(x_t, t)
        call["eps_pred"] = eps_pred.detach().clone()
        if eps_pred.requires_grad:
            eps_pred.register_hook(lambda g: call.__setitem__("grad", g.detach().clone()))
        return eps_pred


class _SpyOptimizer(torch.optim.SGD):
    """Plain SGD that remembers the gradients and parameters it saw at every step()."""

    def __init__(self, params, lr):
        super().__init__(params, lr=lr)
        self.steps: list[dict] = []

    def step(self, closure=None):
        params = [p for group in self.param_groups for p in group["params"]]
        self.steps.append(
            {
                "params": [p.detach().clone() for p in params],
                "grads": [None if p.grad is None else p.grad.detach().clone() for p in params],
            }
        )
        return super().step(closure)


def toy_denoiser(seed: int = 0) -> nn.Module:
    """The small MLP eps-model the checks train (sdedu.models.mlp)."""
    from sdedu.models.mlp import MLPDenoiser, MLPDenoiserConfig

    torch.manual_seed(seed)
    return MLPDenoiser(MLPDenoiserConfig(data_dim=2, hidden=64, num_layers=2, time_embed_dim=32))


def toy_schedule() -> NoiseSchedule:
    """T = 20 steps, beta linear from 0.005 to 0.4: alpha_bar falls from ~1 to ~0.02."""
    return NoiseSchedule.linear(T_TOY, 0.005, 0.4)


def _forward_mistakes(alpha_bar, t):
    ab = alpha_bar[t].reshape(-1, 1)  # (B, 1)
    shifted = alpha_bar[(t - 1).clamp(min=0)].reshape(-1, 1)
    return [
        (
            ab,
            1 - ab,
            "alpha_bar_t and 1 - alpha_bar_t are variances: the coefficients of x0 and of the noise need square roots.",
        ),
        (ab.sqrt(), 1 - ab, "the noise coefficient is missing its square root."),
        (ab, (1 - ab).sqrt(), "the coefficient of x0 is missing its square root."),
        ((1 - ab).sqrt(), ab.sqrt(), "the two coefficients are swapped: at small t, x_t must be close to x0."),
        (
            shifted.sqrt(),
            (1 - shifted).sqrt(),
            "off by one: the model is told t, so x_t must use alpha_bar[t] itself (the same t you pass to the model).",
        ),
        (torch.ones_like(ab), torch.zeros_like(ab), "the model must see the noisy x_t, not the clean x0."),
    ]


def _params_grads(inner, params_before, x_t, t, target):
    """Gradients of mean((inner(x_t, t) - target)^2) at `params_before`."""
    names = [n for n, _ in inner.named_parameters()]
    values = {n: p.clone().requires_grad_(True) for n, p in zip(names, params_before)}
    eps_pred = torch.func.functional_call(inner, values, (x_t, t))
    loss = F.mse_loss(eps_pred, target)
    return torch.autograd.grad(loss, list(values.values()))


@register(
    "training_step", "training_step(model, x0, alpha_bar, optimizer, generator): one step of Algorithm 1", "04_training"
)
def check_training_step(training_step, trial: Trial) -> str:
    item = "training_step"
    schedule = toy_schedule()
    alpha_bar = schedule.alpha_bar
    inner = toy_denoiser()
    model = _SpyModel(inner)
    optimizer = _SpyOptimizer(model.parameters(), lr=0.05)
    data_gen = trial.generator(3)
    B = 256
    seen_t = []
    previous_grads = None
    for call_index in range(2):
        case = f"{call_index + 1} (call {call_index + 1} on a batch of {B} 2-D points, T = {T_TOY})"
        x0 = torch.randn(B, 2, generator=data_gen) * 0.5 + 1.0
        generator = torch.Generator().manual_seed(100 + call_index)
        model.calls.clear()
        steps_before = len(optimizer.steps)
        params_before = [p.detach().clone() for p in inner.parameters()]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(200 + call_index)
            loss = trial.call(
                item,
                training_step,
                [
                    ("model", model),
                    ("x0", x0),
                    ("alpha_bar", alpha_bar),
                    ("optimizer", optimizer),
                    ("generator", generator),
                ],
                case=case,
                name="training_step",
                frozen=("x0", "alpha_bar"),
                error_hints={
                    "out of bounds": "t must lie in 0 .. T-1: torch.randint's upper bound is exclusive.",
                    "must match the size": "alpha_bar[t] has shape (B,): reshape it to (B, 1) "
                    "so that it scales each point's two coordinates.",
                },
            )
        # 1. The model was called on (x_t, t) with one int64 timestep per example in [0, T).
        if not model.calls:
            fail(item, case, "the model was never called.", "compute eps_pred = model(x_t, t).")
        call = model.calls[-1]
        x_t, t = call["x_t"], call["t"]
        if not isinstance(t, torch.Tensor) or t.dtype != torch.int64 or tuple(t.shape) != (B,):
            fail(
                item,
                case,
                f"the model received t as {describe(t)}; expected an int64 tensor of shape ({B},).",
                "draw one integer timestep per example, e.g. with torch.randint(..., (B,), generator=generator).",
            )
        if int(t.min()) < 0 or int(t.max()) >= T_TOY:
            fail(
                item,
                case,
                f"t has values in [{int(t.min())}, {int(t.max())}]; expected [0, {T_TOY - 1}].",
                "timesteps index alpha_bar: 0 .. T-1.",
            )
        if not isinstance(x_t, torch.Tensor) or tuple(x_t.shape) != (B, 2):
            fail(
                item,
                case,
                f"the model received x_t as {describe(x_t)}; expected a tensor of shape ({B}, 2).",
                "x_t has the shape of x0.",
            )
        seen_t.append(t)
        # 2. The loss went backward, and it was the mean squared error: recover its target.
        grad = call["grad"]
        if grad is None:
            fail(
                item,
                case,
                "no gradient reached the model's output.",
                "call loss.backward() on a loss computed from the model's output (and do not .detach() it).",
            )
        N = grad.numel()
        target = call["eps_pred"] - grad * N / 2
        mse_of_target = F.mse_loss(call["eps_pred"], target).item()
        if not isinstance(loss, float):
            hint = "return loss.item(), a Python float"
            if isinstance(loss, torch.Tensor):
                hint += " (returning the tensor keeps its whole graph alive in the training loop)"
            fail(item, case, f"training_step should return the loss as a float; got {describe(loss)}.", hint + ".")
        if not math.isclose(loss, mse_of_target, rel_tol=1e-3, abs_tol=1e-6):
            hint = (
                "use the mean squared error between eps_pred and the noise (F.mse_loss, whose reduction is the mean)."
            )
            if math.isclose(
                loss, F.mse_loss(call["eps_pred"], call["eps_pred"] - grad / 2, reduction="sum").item(), rel_tol=1e-3
            ):
                hint = "the loss is summed over the batch; use the mean (F.mse_loss's default) so that its scale does not depend on the batch size."
            fail(
                item,
                case,
                f"the returned loss {loss:.6g} is not the mean squared error of the model's output "
                f"(that would be {mse_of_target:.6g}).",
                hint,
            )
        # 3. The target is the noise that made x_t from x0 (eq. 4).
        ab = alpha_bar[t].reshape(-1, 1)  # (B, 1)
        residual = x_t - (ab.sqrt() * x0 + (1 - ab).sqrt() * target)
        if residual.abs().max() > 1e-4:
            hint = None
            if torch.allclose(target, x0, atol=1e-5):
                hint = "the model is trained to predict the noise eps, not the clean data x0 (Algorithm 1, line 5)."
            elif torch.allclose(target, x_t, atol=1e-5):
                hint = "the target is the noise eps that was mixed into x0, not x_t."
            for a, b, text in _forward_mistakes(alpha_bar, t):
                if hint is None and (x_t - (a * x0 + b * target)).abs().max() < 1e-4:
                    hint = text
            fail(
                item,
                case,
                "x_t is not sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps for the eps the loss uses "
                f"(largest mismatch {residual.abs().max().item():.3g}).",
                hint
                or "make x_t from x0 and one noise tensor with the forward process, then use that same noise as the target.",
            )
        # 4. One optimizer step, on this step's gradients only.
        if len(optimizer.steps) == steps_before:
            fail(
                item,
                case,
                "the optimizer never stepped: the parameters did not change.",
                "call optimizer.step() after loss.backward().",
            )
        record = optimizer.steps[-1]
        expected = _params_grads(inner, record["params"], x_t, t, target)
        got = record["grads"]
        if any(g is None for g in got):
            fail(
                item,
                case,
                "at optimizer.step() some parameters had no gradient.",
                "call loss.backward() before optimizer.step().",
            )
        if not all(torch.allclose(g, e, atol=1e-6, rtol=1e-3) for g, e in zip(got, expected)):
            hint = "the gradients at optimizer.step() are not those of this step's loss."
            if previous_grads is not None and all(
                torch.allclose(g, e + p, atol=1e-6, rtol=1e-3) for g, e, p in zip(got, expected, previous_grads)
            ):
                hint = "gradients accumulate across calls: call optimizer.zero_grad() every step."
            fail(item, case, "the gradients used by optimizer.step() are wrong.", hint)
        previous_grads = expected
        if all(torch.equal(a, p.detach()) for a, p in zip(params_before, inner.parameters())):
            fail(item, case, "the model's parameters did not change.", "call optimizer.step() after loss.backward().")
    # 5. Over both calls, t covered the whole range uniformly enough to visit 0 and T-1.
    seen = torch.cat(seen_t)
    missing = sorted(set(range(T_TOY)) - set(seen.tolist()))
    if missing:
        hint = "draw t uniformly from all of 0 .. T-1."
        if 0 in missing:
            hint = "t = 0 (the first noisy step) is never drawn: draw t from 0 .. T-1 (code t is already 0-based)."
        elif T_TOY - 1 in missing:
            hint = "t = T-1 is never drawn: torch.randint's upper bound is exclusive, so pass T itself."
        fail(item, f"over both calls ({len(seen)} draws of t)", f"the timesteps {missing} were never drawn.", hint)
    return "2 calls: x_t, target, loss, gradients and t all right"
