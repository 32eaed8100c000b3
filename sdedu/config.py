"""Run-time switches shared by the library and the notebooks, and the commands' argument parser.

`SDEDU_QUICK=1` (set by `make test`) shrinks training runs and sample counts so that every
notebook finishes in about a minute on a 2-core CPU. Without it a notebook does the real thing.
`OneLineParser` is the argparse parser of `sdedu` and `python -m sdedu.train`: one line per error.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported on use, so that `sdedu --help` stays fast
    import torch


def quick_mode() -> bool:
    """True when the environment variable SDEDU_QUICK is set to 1/true/yes."""
    return os.environ.get("SDEDU_QUICK", "").strip().lower() in {"1", "true", "yes"}


def pick(quick, full):
    """Return `quick` in quick mode and `full` otherwise: `steps = pick(200, 3000)`."""
    return quick if quick_mode() else full


def default_device() -> torch.device:
    """The GPU when one is visible, else the CPU."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class OneLineParser(argparse.ArgumentParser):
    """argparse, with every error on one line: `<prog>: error: <message> (see <prog> --help)`, exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {' '.join(str(message).split())} (see {self.prog} --help)\n")


def device_argument(text: str) -> str:
    """argparse type of --device: a device torch knows and this machine has ('gpu' is refused by name)."""
    if text == "cpu":  # the default, always there: no need to import torch for it
        return text
    from sdedu._checks import check_device

    try:
        check_device("device", text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text
