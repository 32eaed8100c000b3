"""Checks for exercise 10: visualisation tools (an image grid, cross-attention maps per word).

Both return arrays, so they are checked through what they return, before anything is drawn:

- `image_grid(images, ncols)`: (N, 3, H, W) in [0, 1] -> one (rows * H, ncols * W, 3) array,
  row-major, empty cells black (how a denoising trajectory is laid out).
- `word_attention_maps(probs, height, width)`: cross-attention probabilities (B, heads, H*W, L)
  -> (B, L, H, W), the mean over heads, each map scaled so that its maximum is 1 (Hertz et al.
  2022 show such maps per word). The pixel tokens are the feature map flattened row by row
  (index = row * W + column), so a map must be reshaped to (H, W), not (W, H).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from sdedu.grading.errors import describe, fail
from sdedu.grading.expect import expect_tensor
from sdedu.grading.registry import register
from sdedu.grading.trial import Trial

NOTEBOOK = "10_visualisation"


def grid_reference(images: torch.Tensor, ncols: int, *, column_major=False) -> np.ndarray:
    N, C, H, W = images.shape
    rows = math.ceil(N / ncols)
    grid = np.zeros((rows * H, ncols * W, C), dtype=np.float32)
    for i in range(N):
        r, c = (i % rows, i // rows) if column_major else (i // ncols, i % ncols)
        grid[r * H : (r + 1) * H, c * W : (c + 1) * W] = images[i].permute(1, 2, 0).numpy()  # (H, W, C)
    return grid


@register("image_grid", "image_grid(images, ncols): a row-major grid as one (rows*H, ncols*W, 3) array", NOTEBOOK)
def check_image_grid(image_grid, trial: Trial) -> str:
    item = "image_grid"
    g = trial.generator(0)
    cases = [
        ("1 (6 images 4 x 5, 3 columns)", torch.rand(6, 3, 4, 5, generator=g), 3),
        ("2 (5 images 3 x 3, 2 columns: the last row is half empty)", torch.rand(5, 3, 3, 3, generator=g), 2),
        ("3 (4 images 2 x 6, 4 columns: one row)", torch.rand(4, 3, 2, 6, generator=g), 4),
    ]
    for case, images, ncols in cases:
        with trial.case(case):
            got = trial.call(item, image_grid, [("images", images), ("ncols", ncols)], case=case, name="image_grid")
            if isinstance(got, torch.Tensor):
                got = got.detach().cpu().numpy()
            if not isinstance(got, np.ndarray):
                fail(
                    item,
                    case,
                    f"image_grid should return a numpy array (rows * H, ncols * W, 3); got {describe(got)}.",
                    "build the grid with np.zeros and fill it, or return tensor.numpy().",
                )
            expected = grid_reference(images, ncols)
            N, C, H, W = images.shape
            mistakes = [
                (
                    lambda: torch.from_numpy(grid_reference(images, ncols, column_major=True)),
                    "fill the grid row by row: image i goes to row i // ncols, column i % ncols.",
                ),
                (
                    lambda: torch.from_numpy(grid_reference(images.transpose(2, 3), ncols)),
                    "an image is (C, H, W): its rows are H; permute to (H, W, C) rather than transposing H and W.",
                ),
            ]
            expect_tensor(
                item,
                case,
                torch.from_numpy(np.asarray(got, dtype=np.float32)),
                torch.from_numpy(expected),
                name="the grid",
                atol=1e-6,
                check_dtype=False,
                mistakes=mistakes,
                shape_hint="the grid is (rows * H, ncols * W, 3) with rows = ceil(N / ncols); channels last "
                "(permute each image from (C, H, W) to (H, W, C)).",
                default_hint="image i fills rows (i // ncols) * H ... and columns (i % ncols) * W ...; empty cells stay 0.",
            )
    return "3 cases"


def maps_reference(probs, height, width, *, head=None, transpose=False, global_norm=False, normalise=True):
    maps = probs.mean(dim=1) if head is None else probs[:, head]  # (B, H*W, L)
    maps = maps.transpose(1, 2)  # (B, L, H*W)
    B, L, _ = maps.shape
    maps = maps.reshape(B, L, width, height).transpose(2, 3) if transpose else maps.reshape(B, L, height, width)
    if not normalise:
        return maps
    peak = maps.amax() if global_norm else maps.amax(dim=(2, 3), keepdim=True)  # (B, L, 1, 1)
    return maps / peak.clamp(min=1e-12)


@register("attention_maps", "word_attention_maps(probs, height, width): one (H, W) map per word", NOTEBOOK)
def check_attention_maps(word_attention_maps, trial: Trial) -> str:
    item = "attention_maps"
    g = trial.generator(1)
    cases = []
    for name, B, heads, H, W, L in [
        ("1 (batch 2, 4 heads, a 4 x 8 map, 6 tokens)", 2, 4, 4, 8, 6),
        ("2 (batch 1, 2 heads, a 3 x 5 map, 4 tokens)", 1, 2, 3, 5, 4),
    ]:
        probs = torch.randn(B, heads, H * W, L, generator=g).mul(2).softmax(dim=-1)  # rows sum to 1 over tokens
        cases.append((name, probs, H, W))
    for case, probs, H, W in cases:
        with trial.case(case):
            got = trial.call(
                item,
                word_attention_maps,
                [("probs", probs), ("height", H), ("width", W)],
                case=case,
                name="word_attention_maps",
            )
            mistakes = [
                (
                    lambda: maps_reference(probs, H, W, head=0),
                    "average the maps over all the heads (dim 1), not just head 0.",
                ),
                (
                    lambda: maps_reference(probs, H, W, transpose=True),
                    "the pixels were flattened row by row (index = row * W + column): reshape to (H, W), not (W, H).",
                ),
                (
                    lambda: maps_reference(probs, H, W, global_norm=True),
                    "scale each map by its own maximum, not by the largest value of all.",
                ),
                (lambda: maps_reference(probs, H, W, normalise=False), "scale each map so that its maximum is 1."),
            ]
            expect_tensor(
                item,
                case,
                got,
                maps_reference(probs, H, W),
                name="the maps",
                atol=1e-5,
                mistakes=mistakes,
                shape_hint="the result is (B, L, H, W): one H x W map for every token of every prompt "
                "(move the token axis before the pixel axis, then reshape).",
                default_hint="mean over heads -> (B, H*W, L); transpose -> (B, L, H*W); reshape -> (B, L, H, W); "
                "divide each map by its maximum.",
            )
    return "2 cases"
