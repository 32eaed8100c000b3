"""A small MLP that predicts the noise in 2-D points: the denoiser for the toy data sets.

The smallest network that makes the reverse process work. It sees a noisy point x_t and the
timestep t and returns eps_pred, its guess of the noise that q_sample mixed in (Ho et al. 2020,
eq. 14 trains it with ||eps - eps_theta(x_t, t)||^2). Like every sdedu model it knows nothing
about beta or alpha_bar: the timestep reaches it only as an integer, turned into features by the
same sinusoidal embedding the UNet uses (`sdedu.nn.embeddings.TimestepEmbedding`).

    t   (B,)   ──sinusoids, MLP──► time (B, hidden) ───────┐ added before every hidden layer
    x_t (B, 2) ──Linear──► h ──► [ h + time ──Linear──SiLU ] × num_layers ──Linear──► eps_pred (B, 2)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sdedu._checks import check_int_range, check_tensor
from sdedu.nn.embeddings import TimestepEmbedding

__all__ = ["MLPDenoiserConfig", "MLPDenoiser"]


@dataclass
class MLPDenoiserConfig:
    """Sizes of an `MLPDenoiser`.

    data_dim: size of one data point (2 for the toy sets).
    hidden: width of every hidden layer.
    num_layers: hidden layers that each receive the time features.
    time_embed_dim: number of sinusoidal features of t (even).
    """

    data_dim: int = 2
    hidden: int = 128
    num_layers: int = 3
    time_embed_dim: int = 64

    def __post_init__(self) -> None:
        check_int_range("data_dim", self.data_dim, 1, 1_000_000)
        check_int_range("hidden", self.hidden, 1, 1_000_000)
        check_int_range("num_layers", self.num_layers, 1, 1000)
        check_int_range("time_embed_dim", self.time_embed_dim, 2, 1_000_000)
        if self.time_embed_dim % 2:
            raise ValueError(f"time_embed_dim must be even; got {self.time_embed_dim}")


class MLPDenoiser(nn.Module):
    """eps_theta(x_t, t) for vectors: an MLP with the time features added to every hidden layer."""

    def __init__(self, config: MLPDenoiserConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or MLPDenoiserConfig()
        self.time_embedding = TimestepEmbedding(config.time_embed_dim, config.hidden)
        self.input = nn.Linear(config.data_dim, config.hidden)
        self.layers = nn.ModuleList(nn.Linear(config.hidden, config.hidden) for _ in range(config.num_layers))
        self.output = nn.Linear(config.hidden, config.data_dim)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Predict the noise in `x_t`.

        Args:
            x_t: (B, data_dim) noisy points.
            t: (B,) integer timesteps in [0, T) (a 0-dim tensor is broadcast to the batch).

        Returns:
            eps_pred: (B, data_dim).
        """
        check_tensor("x_t", x_t, ndim=2, floating=True)
        if x_t.shape[1] != self.config.data_dim:
            raise ValueError(f"x_t must have shape (B, {self.config.data_dim}); got shape {tuple(x_t.shape)}")
        check_tensor("t", t)
        if t.ndim == 0:
            t = t.expand(x_t.shape[0])  # (B,)
        if tuple(t.shape) != (x_t.shape[0],):
            raise ValueError(f"t must have shape (B,) = ({x_t.shape[0]},); got shape {tuple(t.shape)}")
        # 1. Time features: sinusoids of t, then a small MLP.
        time = self.time_embedding(t).to(x_t.dtype)  # (B, hidden)
        # 2. Lift the point into the hidden width.
        h = self.input(x_t)  # (B, hidden)
        # 3. Every hidden layer sees the time again, so each can act differently at each t.
        for layer in self.layers:
            h = torch.nn.functional.silu(layer(h + time))
        # 4. Read out one noise value per coordinate (no activation: eps is unbounded).
        return self.output(h)  # (B, data_dim)
