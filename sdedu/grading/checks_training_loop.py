"""Check of exercise 04's training loop (solutions/04_training.ipynb): `train` makes the toy denoiser's
loss fall on the two moons. The training step's checks, and the toy model and schedule both use, are in
`checks_training`.
"""

from __future__ import annotations

import math

import torch

from sdedu.grading.checks_training import T_TOY, toy_denoiser, toy_schedule
from sdedu.grading.errors import describe, fail
from sdedu.grading.registry import register
from sdedu.grading.trial import Trial


@register(
    "training_loop", "train(model, data, alpha_bar, steps, batch_size, lr, generator): the loss falls", "04_training"
)
def check_training_loop(train, trial: Trial) -> str:
    item = "training_loop"
    from sdedu.data.toy2d import make_moons

    data = make_moons(1024, seed=0)
    model = toy_denoiser(seed=1)
    alpha_bar = toy_schedule().alpha_bar
    steps = 300
    case = f"1 (moons, {steps} steps of batch 128, lr 3e-3, T = {T_TOY})"
    before = [p.detach().clone() for p in model.parameters()]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        losses = trial.call(
            item,
            train,
            [
                ("model", model),
                ("data", data),
                ("alpha_bar", alpha_bar),
                ("steps", steps),
                ("batch_size", 128),
                ("lr", 3e-3),
                ("generator", torch.Generator().manual_seed(0)),
            ],
            case=case,
            name="train",
            frozen=("data", "alpha_bar"),
        )
    if not isinstance(losses, (list, tuple)) or len(losses) != steps:
        fail(
            item,
            case,
            f"train should return a list of {steps} losses, one per step; got "
            f"{describe(losses) if not isinstance(losses, (list, tuple)) else f'a list of {len(losses)}'}.",
            "append the float returned by training_step at every step and return the list.",
        )
    if not all(isinstance(v, float) and math.isfinite(v) for v in losses):
        bad = next(v for v in losses if not (isinstance(v, float) and math.isfinite(v)))
        fail(
            item,
            case,
            f"every loss should be a finite float; found {describe(bad)}.",
            "collect the floats training_step returns (loss.item()); a NaN means the learning rate is far too large.",
        )
    if all(torch.equal(a, p.detach()) for a, p in zip(before, model.parameters())):
        fail(
            item,
            case,
            "the model's parameters did not change.",
            "build the optimizer over model.parameters() of the model you were given, and step it.",
        )
    window = steps // 10
    first = sum(losses[:window]) / window
    last = sum(losses[-window:]) / window
    if not last < 0.85 * first:
        fail(
            item,
            case,
            f"the loss did not fall: mean of the first {window} steps {first:.3f}, of the last {window} {last:.3f}.",
            "use the `lr` argument for torch.optim.Adam, draw a fresh random batch of `batch_size` points every "
            "step, and create the optimizer once, before the loop.",
        )
    return f"loss fell from {first:.3f} to {last:.3f} in {steps} steps"
