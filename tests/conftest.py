"""Shared test setup: one thread per worker, a headless matplotlib, deterministic seeds."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))


@pytest.fixture
def generator():
    """A seeded CPU generator, so that every test draws the same numbers every run."""
    return torch.Generator().manual_seed(0)
