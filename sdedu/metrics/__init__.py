"""Metrics: numbers that say how good an image, a batch or a model is. One module per idea:

    shapes_judge    the shapes world's transparent judge (`judge`, `measure`) and the prompt
                    adherence and diversity scores built on it
    reconstruction  `psnr`: how close an image is to its reference
    point_clouds    how far a model's samples are from the data: `mmd_rbf`, `sliced_wasserstein`,
                    `frechet_distance` (all three: `distances`) and `mode_coverage`

Everything is importable from here: `from sdedu.metrics import psnr`, `metrics.judge(images)`.
"""

from sdedu.metrics.point_clouds import distances, frechet_distance, mmd_rbf, mode_coverage, sliced_wasserstein
from sdedu.metrics.reconstruction import psnr
from sdedu.metrics.shapes_judge import (
    CENTER_RADIUS,
    FILL_CIRCLE_SQUARE,
    FILL_DIAMOND_CIRCLE,
    FILL_RANGE,
    FOREGROUND_THRESHOLD,
    LARGE_EXTENT,
    MAX_ASPECT,
    MAX_COLOR_DISTANCE,
    MAX_EXTENT,
    MIN_PIXELS,
    NONE,
    TRIANGLE_DROP,
    adherence,
    diversity,
    fill_fraction,
    judge,
    measure,
)

__all__ = [
    "CENTER_RADIUS",
    "FILL_CIRCLE_SQUARE",
    "FILL_DIAMOND_CIRCLE",
    "FILL_RANGE",
    "FOREGROUND_THRESHOLD",
    "LARGE_EXTENT",
    "MAX_ASPECT",
    "MAX_COLOR_DISTANCE",
    "MAX_EXTENT",
    "MIN_PIXELS",
    "NONE",
    "TRIANGLE_DROP",
    "adherence",
    "distances",
    "diversity",
    "fill_fraction",
    "frechet_distance",
    "judge",
    "measure",
    "mmd_rbf",
    "mode_coverage",
    "psnr",
    "sliced_wasserstein",
]
