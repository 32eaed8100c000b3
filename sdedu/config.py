"""Run-time switches shared by the library and the notebooks.

`SDEDU_QUICK=1` (set by `make test`) shrinks training runs and sample counts so that every
notebook finishes in about a minute on a 2-core CPU. Without it a notebook does the real thing.
"""

import os

import torch


def quick_mode() -> bool:
    """True when the environment variable SDEDU_QUICK is set to 1/true/yes."""
    return os.environ.get("SDEDU_QUICK", "").strip().lower() in {"1", "true", "yes"}


def pick(quick, full):
    """Return `quick` in quick mode and `full` otherwise: `steps = pick(200, 3000)`."""
    return quick if quick_mode() else full


def default_device() -> torch.device:
    """The GPU when one is visible, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
