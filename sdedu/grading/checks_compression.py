"""Checks for exercise 08: int8 weight quantisation and magnitude pruning.

Symmetric per-output-channel int8 quantisation (as in Jacob et al. 2018 and PyTorch's
per-channel observers, with the zero point fixed at 0):

    scale_o = max_i |W[o, i]| / 127            one float per output row o
    q[o, i] = clamp(round(W[o, i] / scale_o), -127, 127)   stored as int8
    W ~= q * scale                              |W - q * scale| <= scale / 2

Magnitude pruning (Han et al. 2015): set to zero the fraction `sparsity` of the weights with the
smallest |W|, keeping the others exactly.
"""

from __future__ import annotations

import torch
from torch import nn

from sdedu.grading.errors import describe, fail
from sdedu.grading.registry import register
from sdedu.grading.trial import Trial

ZERO_ROW_HINT = (
    "a row of zeros (a pruned neuron) has max |W| = 0, so its scale is 0 and W / scale is 0/0 "
    "(NaN, whose conversion to int8 is undefined): keep every scale positive, e.g. clamp it to a tiny minimum."
)


def quantize_reference(weight: torch.Tensor):
    scale = (weight.abs().amax(dim=1, keepdim=True) / 127).clamp(min=1e-12)  # (out, 1)
    q = torch.round(weight / scale).clamp(-127, 127).to(torch.int8)
    return q, scale


def _quantize_cases(trial: Trial):
    g = trial.generator(0)
    w1 = torch.randn(8, 16, generator=g) * torch.logspace(-3, 0, 8).reshape(8, 1)  # rows of very different sizes
    w2 = torch.randn(6, 10, generator=g) * 0.2
    w2[2] = 0.0  # a pruned neuron
    w3 = torch.randn(32, 24, generator=g) * 0.05
    w3[5, 7] = -1.0  # one large negative outlier
    return [
        ("1 (a (8, 16) weight whose rows range from 1e-3 to 1 in size)", w1),
        ("2 (a (6, 10) weight whose row 2 is all zeros)", w2),
        ("3 (a (32, 24) weight with one large negative entry)", w3),
    ]


def _quantize_hint(weight, q, scale) -> str:
    """Name the likely mistake from the scale and q a learner returned."""
    row_max = weight.abs().amax(dim=1, keepdim=True)  # (out, 1)
    nonzero = row_max.flatten() > 0
    row_scale = scale.reshape(-1, 1).to(torch.float32).expand(weight.shape[0], 1)  # (out, 1)
    if scale.numel() == 1 or bool((row_scale[nonzero] == row_scale[nonzero][0]).all()):
        return (
            "use one scale per output channel (per row, max over dim=1): a single scale for the whole tensor "
            "wastes most of the int8 range on rows with small weights."
        )
    for divisor, text in [
        (128, "int8 is used symmetrically, -127 .. 127: divide the largest magnitude by 127."),
        (255, "a signed int8 holds -127 .. 127 here (255 levels are for unsigned uint8): divide by 127."),
        (1, "the scale maps the largest magnitude of a row onto 127: divide it by 127."),
    ]:
        if torch.allclose(row_scale[nonzero], (row_max / divisor)[nonzero], rtol=1e-4):
            return text
    if torch.allclose(row_scale[nonzero], (weight.amax(dim=1, keepdim=True) / 127)[nonzero], rtol=1e-4):
        return "the scale must come from the largest *magnitude* |W| of the row (a large negative weight counts too)."
    ref_q, ref_scale = quantize_reference(weight)
    if torch.allclose(row_scale[nonzero], ref_scale[nonzero], rtol=1e-4):
        return "round to the nearest integer before casting: .to(torch.int8) truncates towards zero."
    return "scale = max |W| per row / 127, then q = round(W / scale), clamped to [-127, 127], as int8."


@register("quantize_int8", "quantize_int8(weight) -> (q, scale): symmetric per-channel int8", "08_model_compression")
def check_quantize_int8(quantize_int8, trial: Trial) -> str:
    item = "quantize_int8"
    for case, weight in _quantize_cases(trial):
        with trial.case(case):
            out = trial.call(
                item,
                quantize_int8,
                [("weight", weight)],
                case=case,
                name="quantize_int8",
                error_hints={
                    "must match the size": "the scale has one value per row: keep its shape (out_features, 1) "
                    "(keepdim=True) so that it broadcasts along each row."
                },
            )
            if not (isinstance(out, tuple) and len(out) == 2):
                fail(
                    item,
                    case,
                    f"quantize_int8 should return a pair (q, scale); got {describe(out)}.",
                    "return q, scale",
                )
            q, scale = out
            rows = weight.shape[0]
            if not isinstance(q, torch.Tensor) or q.dtype != torch.int8:
                fail(
                    item,
                    case,
                    f"q should be a torch.int8 tensor; got {describe(q)}.",
                    "round, clamp, then convert with .to(torch.int8): one byte per weight is what makes it 4x smaller than float32.",
                )
            if tuple(q.shape) != tuple(weight.shape):
                fail(item, case, f"q should have the weight's shape {tuple(weight.shape)}; got {tuple(q.shape)}.", None)
            if not isinstance(scale, torch.Tensor) or not scale.is_floating_point() or scale.numel() not in (1, rows):
                fail(
                    item,
                    case,
                    f"scale should be a float tensor of shape ({rows}, 1), one per output row; got {describe(scale)}.",
                    "scale = weight.abs().amax(dim=1, keepdim=True) / ...",
                )
            row_max = weight.abs().amax(dim=1, keepdim=True)  # (out, 1)
            row_scale = scale.detach().reshape(-1, 1).to(torch.float32).expand(rows, 1)  # (out, 1)
            zero_rows = (row_max == 0).flatten()
            if not torch.isfinite(row_scale).all() or (row_scale <= 0).any() or (q[zero_rows] != 0).any():
                fail(
                    item,
                    case,
                    "scale has zero, NaN or inf values, or an all-zero row was not quantised to zeros.",
                    ZERO_ROW_HINT,
                )
            if int(q.min()) < -127:
                fail(
                    item,
                    case,
                    f"q reaches {int(q.min())}; the symmetric range is -127 .. 127.",
                    _quantize_hint(weight, q, scale)
                    + " (Values beyond the int8 range wrap around when cast: clamp first.)",
                )
            ref_q, ref_scale = quantize_reference(weight)
            restored = q.to(torch.float32) * row_scale
            error = (restored - weight).abs()
            bad = error > row_scale / 2 * (1 + 1e-3) + 1e-12
            if (
                scale.numel() != rows
                or not torch.allclose(row_scale[~zero_rows], ref_scale[~zero_rows], rtol=1e-4)
                or bad.any()
            ):
                detail = ""
                if bad.any():
                    where = tuple(int(i) for i in bad.nonzero()[0])
                    detail = (
                        f" At {list(where)}: W = {weight[where].item():.6g}, q * scale = {restored[where].item():.6g}."
                    )
                fail(
                    item,
                    case,
                    "q * scale should reproduce W to within half a quantisation step (scale / 2) with the "
                    f"finest scale per row; largest error {error.max().item():.3g}.{detail}",
                    _quantize_hint(weight, q, scale),
                )
    # The size and the effect on a small model's outputs.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8))
    x = torch.randn(16, 32, generator=torch.Generator().manual_seed(1))
    float_bytes = int_bytes = 0
    with torch.no_grad():
        expected = model(x)
        for layer in model:
            if isinstance(layer, nn.Linear):
                q, scale = quantize_int8(layer.weight.detach().clone())
                float_bytes += layer.weight.numel() * layer.weight.element_size()
                int_bytes += q.numel() * q.element_size() + scale.numel() * scale.element_size()
                layer.weight.copy_(q.to(torch.float32) * scale.reshape(-1, 1).to(torch.float32))
        got = model(x)
    relative = ((got - expected).abs().max() / expected.abs().max()).item()
    if relative > 0.02:
        fail(
            item,
            "4 (a 3-layer MLP with every weight quantised)",
            f"the outputs changed by {relative:.2%} of their range; int8 weights should change them by well under 2%.",
            None,
        )
    return (
        f"3 weights exact to half a step; an MLP's outputs move by {relative:.2%}; "
        f"weights {float_bytes / int_bytes:.1f}x smaller"
    )


def _prune_cases(trial: Trial):
    g = trial.generator(2)
    return [
        ("1 (a (16, 32) weight, sparsity 0.5)", torch.randn(16, 32, generator=g), 0.5),
        ("2 (a (10, 10) weight, sparsity 0.3)", torch.randn(10, 10, generator=g) * 0.1, 0.3),
        ("3 (a (7, 13) weight, sparsity 0.9)", torch.randn(7, 13, generator=g), 0.9),
        ("4 (a (4, 6) weight, sparsity 0.0: nothing to prune)", torch.randn(4, 6, generator=g), 0.0),
    ]


@register("magnitude_prune", "magnitude_prune(weight, sparsity): zero the smallest |W|", "08_model_compression")
def check_magnitude_prune(magnitude_prune, trial: Trial) -> str:
    item = "magnitude_prune"
    for case, weight, sparsity in _prune_cases(trial):
        with trial.case(case):
            got = trial.call(
                item,
                magnitude_prune,
                [("weight", weight), ("sparsity", sparsity)],
                case=case,
                name="magnitude_prune",
                error_hints={
                    "kthvalue": "with sparsity 0 there is nothing to prune: k = 0 is a special case.",
                    "selected index k out of range": "with sparsity 0 there is nothing to prune: k = 0 is a special case.",
                },
            )
            if not isinstance(got, torch.Tensor):
                fail(
                    item,
                    case,
                    f"magnitude_prune should return a tensor; got {describe(got)}.",
                    "return the pruned copy of the weight.",
                )
            if tuple(got.shape) != tuple(weight.shape) or got.dtype != weight.dtype:
                fail(
                    item,
                    case,
                    f"the result should be a {weight.dtype} tensor of shape {tuple(weight.shape)}; got {describe(got)}.",
                    "keep the weight's shape and dtype: multiply by a mask or use torch.where.",
                )
            n = weight.numel()
            allowed = {int(sparsity * n), round(sparsity * n)}
            zeros = int((got == 0).sum())
            kept = got != 0
            if not torch.equal(got[kept], weight[kept]):
                fail(
                    item,
                    case,
                    "some weights that were kept changed value.",
                    "pruning only sets weights to zero; the others stay exactly as they were.",
                )
            if zeros not in allowed:
                hint = "sparsity is the fraction of weights set to zero: k = round(sparsity * numel) of them."
                if n - zeros in allowed:
                    hint = "you kept the fraction `sparsity` and pruned the rest: sparsity is the fraction set to zero."
                fail(
                    item,
                    case,
                    f"{zeros} of {n} weights are zero; expected {' or '.join(map(str, sorted(allowed)))}.",
                    hint,
                )
            if zeros and kept.any() and weight[~kept].abs().max() > weight[kept].abs().min():
                hint = "prune by magnitude |W|: the smallest in absolute value go, large negative weights stay."
                if weight[~kept].abs().min() >= weight[kept].abs().max():
                    hint = "the weights with the *smallest* magnitude are the ones to remove."
                fail(
                    item,
                    case,
                    "a pruned weight is larger in magnitude than a kept one "
                    f"({weight[~kept].abs().max().item():.4g} pruned, {weight[kept].abs().min().item():.4g} kept).",
                    hint,
                )
    return "4 cases: exact sparsity, smallest magnitudes removed, the rest unchanged"
