"""Exercise 14 (LoRA): right answers pass, and each known mistake is rejected with its hint."""

import math

import torch
from exercise_catalogue import assert_passes, assert_rejected, mutants, right_answers, wrong_answers


def ex_forward(x, weight, bias, lora_A, lora_B, alpha, *, scale="alpha/r", where="output", bias_on=True):
    rank = lora_A.shape[0]
    s = {"alpha/r": alpha / rank, "none": 1.0, "alpha": alpha}[scale]
    update = s * (x @ lora_A.T) @ lora_B.T
    if where == "input":
        return (x + update) @ weight.T + bias
    return x @ weight.T + (bias if bias_on else 0) + update


def ex_init(in_features, out_features, rank, generator, *, a="uniform", b="zero"):
    bound = 1 / math.sqrt(in_features)
    lora_A = {
        "uniform": lambda: (2 * torch.rand(rank, in_features, generator=generator) - 1) * bound,
        "normal": lambda: torch.randn(rank, in_features, generator=generator),
        "zero": lambda: torch.zeros(rank, in_features),
        "no generator": lambda: (2 * torch.rand(rank, in_features) - 1) * bound,
    }[a]()
    lora_B = torch.zeros(out_features, rank) if b == "zero" else torch.randn(out_features, rank, generator=generator)
    return lora_A, lora_B


def library_init(in_features, out_features, rank, generator):
    """sdedu.nn.lora.LoRALinear's own initialisation, drawn from the generator: it must pass as well."""
    lora_A = torch.empty(rank, in_features)
    torch.nn.init.kaiming_uniform_(lora_A, a=math.sqrt(5), generator=generator)
    return lora_A, torch.zeros(out_features, rank)


RIGHT = [("lora_forward", ex_forward), ("lora_init", ex_init), ("lora_init", library_init)]
WRONG = {
    "lora_forward": {
        "alpha / r missing": (lambda *a: ex_forward(*a, scale="none"), "scaled by alpha / r"),
        "alpha without r": (lambda *a: ex_forward(*a, scale="alpha"), "scaled by alpha / r"),
        "update added to the input": (lambda *a: ex_forward(*a, where="input"), "added to the layer's output"),
        "bias dropped": (lambda *a: ex_forward(*a, bias_on=False), "bias"),
        "A and B in the wrong order": (
            lambda x, w, b, A, B, alpha: x @ w.T + b + alpha / A.shape[0] * (x @ B.T) @ A.T,
            "goes through A (r, in) first",
        ),
    },
    "lora_init": {
        "B and A both random": (lambda *a: ex_init(*a, b="random"), "B must start at exactly zero"),
        "both zero": (lambda *a: ex_init(*a, a="zero"), "no gradient reaches either"),
        "A and B swapped": (lambda *a: ex_init(*a, a="zero", b="random"), "swapped"),
        "A Gaussian N(0, 1)": (lambda *a: ex_init(*a, a="normal"), "uniform on"),
        "ignores the generator": (lambda *a: ex_init(*a, a="no generator"), "generator you are given"),
    },
}
CATALOGUE = mutants(WRONG)


@right_answers(RIGHT)
def test_exercise_14_right_answers_pass(item, answer, capsys):
    assert_passes(item, answer, capsys)


@wrong_answers(CATALOGUE)
def test_exercise_14_wrong_answers_are_rejected_with_a_useful_hint(item, name, answer, keyword):
    assert_rejected(item, name, answer, keyword)


def test_the_forward_check_agrees_with_the_library_layer():
    """The check's reference, W x + b + (alpha / r) B A x, is what sdedu.nn.lora.LoRALinear computes."""
    from sdedu.nn.lora import LoRALinear

    g = torch.Generator().manual_seed(0)
    layer = LoRALinear(torch.nn.Linear(6, 10), rank=3, alpha=1.5)
    with torch.no_grad():
        layer.lora_B.weight.copy_(torch.randn(10, 3, generator=g))
    x = torch.randn(2, 4, 6, generator=g)
    expected = ex_forward(x, layer.base.weight, layer.base.bias, layer.lora_A.weight, layer.lora_B.weight, 1.5)
    torch.testing.assert_close(layer(x), expected)
