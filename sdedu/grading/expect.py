"""Comparing a learner's result with the reference, and saying how it differs.

`expect_tensor` checks type, shape, dtype, NaN/inf and values in that order and names the first
that is wrong (with the first mismatching entries); when the values are wrong, the known wrong
implementations a check lists are tried on the same case and the one that matches gives the hint.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from sdedu.grading.errors import describe, fail

__all__ = ["expect_tensor", "expect_number"]


def _index(flat_index: int, shape) -> tuple[int, ...]:
    index = []
    for size in reversed(shape):
        index.append(flat_index % size)
        flat_index //= size
    return tuple(reversed(index))


def expect_tensor(
    item_id: str,
    case: str,
    got,
    expected: torch.Tensor,
    *,
    name: str = "the result",
    atol: float = 1e-5,
    rtol: float = 1e-4,
    check_dtype: bool = True,
    mistakes: list[tuple[Callable[[], Any], str]] | None = None,
    default_hint: str | None = None,
    shape_hint: str | None = None,
) -> None:
    """Compare `got` with `expected` and fail with a diagnosis if they differ.

    mistakes: [(make_wrong_result, hint), ...]: known wrong implementations, evaluated lazily on
        this case; when `got` matches one of them, its hint is the one shown.
    """
    __tracebackhide__ = True
    if not isinstance(got, torch.Tensor):
        hint = "return a torch.Tensor"
        if isinstance(got, tuple):
            hint += " (one tensor, not a tuple: is there a stray comma after `return ...`?)"
        elif got is None:
            hint += " (did you forget the `return` statement?)"
        fail(item_id, case, f"{name} should be a torch.Tensor; got {describe(got)}.", hint + ".")
    if tuple(got.shape) != tuple(expected.shape):
        hint = (
            _matching_hint(got, mistakes)
            or shape_hint
            or "check how the tensors broadcast: print the shape of every intermediate."
        )
        fail(
            item_id,
            case,
            f"{name} has the wrong shape: expected {tuple(expected.shape)}, got {tuple(got.shape)}.",
            hint,
        )
    if check_dtype and got.dtype != expected.dtype:
        fail(
            item_id,
            case,
            f"{name} has the wrong dtype: expected {expected.dtype}, got {got.dtype}.",
            "keep the dtype of the inputs: avoid creating float64 constants or converting with .double()/.int().",
        )
    got_c = got.detach().to("cpu", expected.dtype)
    expected_c = expected.detach().to("cpu")
    bad_values = ~torch.isfinite(got_c) & torch.isfinite(expected_c) if got_c.is_floating_point() else None
    if bad_values is not None and bad_values.any():
        where = _index(int(bad_values.flatten().nonzero()[0]), got_c.shape)
        fail(
            item_id,
            case,
            f"{name} contains {int(bad_values.sum())} NaN/inf values (the first at index {list(where)}).",
            _matching_hint(got, mistakes)
            or "NaN comes from the square root of a negative number, 0/0, or log(0); "
            "inf from dividing by zero. Print the intermediate values for this case.",
        )
    close = torch.isclose(got_c, expected_c, atol=atol, rtol=rtol) if got_c.is_floating_point() else got_c == expected_c
    if bool(close.all()):
        return
    wrong = (~close).flatten().nonzero().flatten()
    shown = []
    for flat in wrong[:3].tolist():
        i = _index(flat, got_c.shape)
        shown.append(f"at {list(i)} expected {expected_c[i].item():.6g}, got {got_c[i].item():.6g}")
    max_diff = (got_c.double() - expected_c.double()).abs().max().item()
    hint = _matching_hint(got, mistakes) or default_hint
    fail(
        item_id,
        case,
        f"{name} has the right shape {tuple(expected.shape)} and dtype {expected.dtype} but wrong values: "
        f"{len(wrong)} of {expected.numel()} differ (largest difference {max_diff:.3g}).\n  " + "\n  ".join(shown),
        hint,
    )


def _matching_hint(got, mistakes) -> str | None:
    for make_wrong, hint in mistakes or []:
        try:
            wrong = make_wrong()
        except Exception:  # noqa: BLE001 - a mistake that cannot even run on this case
            continue
        if (
            isinstance(wrong, torch.Tensor)
            and isinstance(got, torch.Tensor)
            and wrong.shape == got.shape
            and torch.allclose(
                got.detach().cpu().to(wrong.dtype), wrong.detach().cpu(), atol=1e-5, rtol=1e-4, equal_nan=True
            )
        ):
            return hint
    return None


def expect_number(
    item_id: str,
    case: str,
    got,
    expected: float,
    *,
    name: str = "the result",
    rel: float = 1e-3,
    abs_tol: float = 1e-9,
    hint: str | None = None,
) -> float:
    """Require a real number close to `expected`; returns it as a float."""
    __tracebackhide__ = True
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.item()
    if isinstance(got, bool) or not isinstance(got, (int, float)):
        fail(item_id, case, f"{name} should be a number; got {describe(got)}.", "give a Python int or float.")
    if not math.isfinite(got):
        fail(item_id, case, f"{name} is {got}.", hint)
    if not math.isclose(got, expected, rel_tol=rel, abs_tol=abs_tol):
        fail(item_id, case, f"{name} is wrong: got {got:.6g}.", hint)
    return float(got)
