"""Exponential moving average of model weights (Polyak averaging), as every diffusion model uses.

    theta_ema <- decay * theta_ema + (1 - decay) * theta        after every optimizer step

The averaged weights are smoother than the last iterate, which jitters with each mini-batch's
noise; samples from them are visibly cleaner (Ho et al. 2020 used decay 0.9999; Song & Ermon
2020, section 3.4, explain why). With a short training run a fixed decay of 0.999 would still
remember the random initialisation for the first thousand steps, so the decay warms up as in
LDM's `LitEma`: decay_n = min(decay, (1 + n) / (10 + n)) at the n-th update.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from sdedu._checks import check_number_range


class EMA:
    """A shadow copy of `model` whose parameters track their exponential moving average.

    Args:
        model: the model being trained (its current weights start the average).
        decay: the long-run decay (0.999 averages over roughly the last 1000 steps).
        warmup: use decay_n = min(decay, (1 + n) / (10 + n)) so early averages forget the start.

    Attributes:
        module: the averaged model (evaluate and ship this one), in eval mode, no gradients.
        num_updates: how many times `update` ran.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True):
        self.decay = check_number_range("decay", decay, 0.0, 1.0)
        self.warmup = bool(warmup)
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.num_updates = 0

    def current_decay(self) -> float:
        """The decay the next update will use."""
        if not self.warmup:
            return self.decay
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """theta_ema <- d * theta_ema + (1 - d) * theta for every parameter; buffers are copied."""
        d = self.current_decay()
        for ema_p, p in zip(self.module.parameters(), model.parameters()):
            ema_p.lerp_(p.detach(), 1.0 - d)  # ema + (1 - d) * (p - ema)
        for ema_b, b in zip(self.module.buffers(), model.buffers()):
            ema_b.copy_(b)
        self.num_updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict, num_updates: int) -> None:
        self.module.load_state_dict(state)
        self.num_updates = int(num_updates)
