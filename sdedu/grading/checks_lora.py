"""Checks for exercise 14 (LoRA): the low-rank layer's forward and its zero initialisation.

The right answers are the library's (`sdedu.nn.lora.LoRALinear`, Hu et al. 2022, section 4.1):

    h = W x + b + (alpha / r) B A x        A (r, in), B (out, r), r = A.shape[0]
    A ~ U(-1/sqrt(in), 1/sqrt(in))  (kaiming_uniform(a=sqrt(5)), as peft),  B = 0

The known wrong versions: the update not scaled by alpha / r (or by alpha alone), the update added
to the input instead of the output, the bias dropped; A and B both random (the wrapped layer no
longer starts as the base layer), both zero (no gradient reaches either), or A and B swapped.

The initialisation is random, so `lora_init` is checked by what must hold for every draw: B exactly
zero, A inside +-1/sqrt(in) with the standard deviation of that uniform (within 15%), and A drawn
from the generator it is given (same seed, same A).
"""

from __future__ import annotations

import math

import torch

from sdedu.grading.errors import describe, fail
from sdedu.grading.expect import expect_tensor
from sdedu.grading.registry import register
from sdedu.grading.trial import Trial

NOTEBOOK = "14_lora"
SCALE_HINT = (
    "the update is scaled by alpha / r, with r = lora_A.shape[0] (the rank): h = W x + b + (alpha / r) B A x. "
    "Dividing by r keeps the update's size when r changes, so alpha need not be tuned again (Hu et al. 2022, 4.1)."
)
INPUT_HINT = (
    "the update is added to the layer's output, not to its input: h = W x + b + (alpha / r) B A x, where "
    "B A x has the output's size (out). W (x + (alpha / r) B A x) only runs when in = out, and computes another thing."
)
ORDER_HINT = (
    "x (..., in) goes through A (r, in) first, then B (out, r): (x @ lora_A.T) @ lora_B.T, times alpha / r. "
    "Rows of x are samples, so each matrix multiplies from the right, transposed (as nn.Linear does)."
)
SWAP_HINT = (
    "A and B are swapped: B (out, r) starts at zero and A (r, in) is random (Hu et al. 2022, 4.1; peft). "
    "Both orders make B A = 0, but the course's layers and peft's weights name them this way."
)
BOTH_RANDOM_HINT = (
    "B must start at exactly zero: then B A = 0 and the wrapped layer computes what the base layer computed, "
    "so training starts from the pretrained model. With A and B both random it starts from a perturbed one."
)
BOTH_ZERO_HINT = (
    "A must be random: with A = 0 and B = 0 no gradient reaches either (dL/dB needs A x, dL/dA needs B), "
    "so training never moves them. Only B starts at zero."
)
UNIFORM_HINT = (
    "draw A as nn.Linear's default weights and peft do: uniform on (-1/sqrt(in), 1/sqrt(in)), e.g. "
    "(2 * torch.rand(rank, in_features, generator=generator) - 1) / math.sqrt(in_features)."
)
GENERATOR_HINT = "draw A from the generator you are given: torch.rand(..., generator=generator)."

# (batch shape, in, out, rank, alpha): square layers first (the input mistake is computable there).
FORWARD_CASES = [((4,), 8, 8, 2, 4.0), ((2, 3), 6, 10, 3, 1.5), ((5,), 16, 16, 4, 16.0), ((3,), 12, 5, 1, 2.0)]
INIT_CASES = [(64, 32, 8), (100, 100, 4), (48, 16, 16)]


def _forward_cases(trial: Trial):
    g = trial.generator(141)
    for k, (batch, n_in, n_out, rank, alpha) in enumerate(FORWARD_CASES, start=1):
        name = f"{k} (x {(*batch, n_in)}, weight ({n_out}, {n_in}), rank {rank}, alpha {alpha:g})"
        x = torch.randn(*batch, n_in, generator=g)
        weight = torch.randn(n_out, n_in, generator=g) / math.sqrt(n_in)
        bias = torch.randn(n_out, generator=g)
        lora_a = torch.randn(rank, n_in, generator=g) / math.sqrt(n_in)
        lora_b = torch.randn(n_out, rank, generator=g)  # trained: not zero, or the update would not show
        yield name, x, weight, bias, lora_a, lora_b, alpha


@register(
    "lora_forward",
    "lora_forward(x, weight, bias, lora_A, lora_B, alpha): W x + b + (alpha / r) B A x, r = lora_A.shape[0]",
    NOTEBOOK,
)
def check_lora_forward(forward_fn, trial: Trial) -> str:
    item = "lora_forward"
    count = 0
    for case, x, weight, bias, lora_a, lora_b, alpha in _forward_cases(trial):
        with trial.case(case):
            args = [("x", x), ("weight", weight), ("bias", bias), ("lora_A", lora_a), ("lora_B", lora_b)]
            got = trial.call(
                item,
                forward_fn,
                args + [("alpha", alpha)],
                case=case,
                name="lora_forward",
                error_hints={"must match the size": INPUT_HINT, "cannot be multiplied": ORDER_HINT},
            )
            rank = lora_a.shape[0]
            base = x @ weight.T + bias
            update = (x @ lora_a.T) @ lora_b.T
            mistakes = [
                (lambda: base + update, SCALE_HINT),
                (lambda: base + alpha * update, SCALE_HINT),
                (lambda: base + rank / alpha * update, SCALE_HINT),
                (lambda: x @ weight.T + alpha / rank * update, "add the base layer's bias b: h = W x + b + ..."),
                (lambda: alpha / rank * update, "the base layer's output W x + b is kept: h = W x + b + the update."),
            ]
            if weight.shape[0] == weight.shape[1]:
                mistakes.append((lambda: (x + alpha / rank * update) @ weight.T + bias, INPUT_HINT))
                mistakes.append((lambda: x + alpha / rank * update, INPUT_HINT))
            expect_tensor(
                item,
                case,
                got,
                base + alpha / rank * update,
                name="h",
                mistakes=mistakes,
                default_hint="h = x @ weight.T + bias + (alpha / r) * (x @ lora_A.T) @ lora_B.T with r = lora_A.shape[0].",
            )
            count += 1
    return f"{count} cases"


def _pair(item: str, case: str, got, n_in: int, n_out: int, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The (lora_A, lora_B) the learner returned, after checking their types and shapes."""
    if not (isinstance(got, (tuple, list)) and len(got) == 2 and all(isinstance(t, torch.Tensor) for t in got)):
        fail(
            item,
            case,
            f"lora_init should return two tensors (lora_A, lora_B); got {describe(got)}.",
            "return lora_A, lora_B",
        )
    lora_a, lora_b = got
    if tuple(lora_a.shape) == (n_out, rank) and tuple(lora_b.shape) == (rank, n_in) and n_in != n_out:
        fail(item, case, "lora_A and lora_B have each other's shapes.", f"lora_A is (rank, in) = ({rank}, {n_in}).")
    for name, tensor, shape in (("lora_A", lora_a, (rank, n_in)), ("lora_B", lora_b, (n_out, rank))):
        if tuple(tensor.shape) != shape or not tensor.is_floating_point():
            fail(
                item,
                case,
                f"{name} should be a float tensor of shape {shape}; got {tensor.dtype} of shape {tuple(tensor.shape)}.",
                "lora_A is (rank, in_features): it maps x down to r numbers; lora_B is (out_features, rank).",
            )
    return lora_a.detach().double(), lora_b.detach().double()


@register(
    "lora_init",
    "lora_init(in_features, out_features, rank, generator): A ~ U(+-1/sqrt(in)) from the generator, B = 0",
    NOTEBOOK,
)
def check_lora_init(init_fn, trial: Trial) -> str:
    item = "lora_init"
    count = 0
    for k, (n_in, n_out, rank) in enumerate(INIT_CASES, start=1):
        case = f"{k} (in_features {n_in}, out_features {n_out}, rank {rank})"
        with trial.case(case):
            seed = int(torch.randint(2**31 - 1, (1,), generator=trial.generator(142 + k)))
            args = [("in_features", n_in), ("out_features", n_out), ("rank", rank)]
            got = trial.call(
                item, init_fn, args + [("generator", torch.Generator().manual_seed(seed))], case=case, name="lora_init"
            )
            lora_a, lora_b = _pair(item, case, got, n_in, n_out, rank)
            a_zero, b_zero = not bool(lora_a.any()), not bool(lora_b.any())
            if a_zero and b_zero:
                fail(item, case, "lora_A and lora_B are both zero.", BOTH_ZERO_HINT)
            if a_zero:
                fail(item, case, "lora_A is zero and lora_B is not.", SWAP_HINT)
            if not b_zero:
                biggest = float((lora_b @ lora_a).abs().max())
                fail(item, case, f"lora_B is not zero: B A has entries up to {biggest:.3g}.", BOTH_RANDOM_HINT)
            bound = 1 / math.sqrt(n_in)
            reach, std = float(lora_a.abs().max()), float(lora_a.std())
            if reach > bound * (1 + 1e-5) or abs(std - bound / math.sqrt(3)) > 0.15 * bound / math.sqrt(3):
                fail(
                    item,
                    case,
                    f"lora_A should be uniform on (-{bound:.4f}, {bound:.4f}) (standard deviation "
                    f"{bound / math.sqrt(3):.4f}); its entries reach {reach:.4f}, standard deviation {std:.4f}.",
                    UNIFORM_HINT,
                )
            again = trial.call(item, init_fn, args + [("generator", torch.Generator().manual_seed(seed))], case=case)
            same = isinstance(again, (tuple, list)) and len(again) == 2 and isinstance(again[0], torch.Tensor)
            if not (same and again[0].shape == got[0].shape and torch.equal(again[0], got[0])):
                fail(item, case, "two calls with generators seeded alike gave different lora_A.", GENERATOR_HINT)
            count += 1
    return f"{count} cases"
