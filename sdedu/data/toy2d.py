"""Two-dimensional toy data sets: the smallest place where diffusion can be watched.

A 2-D point cloud is a distribution you can *see*: every step of the forward process
(points smearing into a Gaussian blob) and of the reverse process (the blob folding back
into moons or a spiral) fits in one scatter plot. The sets here are drawn procedurally
(no scikit-learn, no download), seeded through a `torch.Generator`, and scaled so that
each coordinate has roughly zero mean and unit spread, like the N(0, I) noise they are
mixed with.

Every function returns a float32 tensor of shape (n, 2).
"""

from __future__ import annotations

import math

import torch

from sdedu._checks import check_int_range, check_number_range

__all__ = ["make_moons", "make_swiss_roll", "make_gaussians", "make_toy2d", "TOY2D_NAMES"]

_MAX_POINTS = 10_000_000


def _generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator | None:
    """A generator from `seed` unless one was given (both given is an error)."""
    if seed is not None and generator is not None:
        raise ValueError("pass either seed or generator, not both; got both")
    if seed is not None:
        check_int_range("seed", seed, 0, 2**63 - 1)
        return torch.Generator().manual_seed(seed)
    return generator


def make_moons(
    n: int,
    noise: float = 0.05,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Two interleaving half circles ("moons"), standardised.

    Upper moon: (cos a, sin a), lower moon: (1 - cos a, 0.5 - sin a), a ~ U[0, pi];
    Gaussian jitter of std `noise` is added, then the cloud is shifted and scaled to
    roughly zero mean and unit standard deviation.

    Args:
        n: number of points, alternating between the moons (upper first).
        noise: std of the Gaussian jitter before standardising.
        seed / generator: randomness (a seed builds a fresh CPU generator).
        device: where the result lives.

    Returns:
        float32 tensor (n, 2).
    """
    check_int_range("n", n, 1, _MAX_POINTS)
    check_number_range("noise", noise, 0.0)
    gen = _generator(seed, generator)
    angle = torch.rand(n, generator=gen) * math.pi  # (n,)
    x = torch.cos(angle)
    y = torch.sin(angle)
    # Alternate the moons (even index: upper, odd: lower) so that any prefix holds both.
    lower = torch.arange(n) % 2 == 1
    x = torch.where(lower, 1.0 - x, x)
    y = torch.where(lower, 0.5 - y, y)
    points = torch.stack([x, y], dim=1)  # (n, 2)
    points = points + noise * torch.randn(n, 2, generator=gen)
    # The noiseless moons span x in [-1, 2], y in [-0.5, 1]: centre and scale them.
    points = (points - torch.tensor([0.5, 0.25])) / torch.tensor([0.87, 0.50])
    return points.to(device=device, dtype=torch.float32)


def make_swiss_roll(
    n: int,
    noise: float = 0.05,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """A 2-D Swiss roll: the spiral r = a, a ~ U[1.5 pi, 4.5 pi], standardised.

    Points are (a cos a, a sin a) / 7 (about unit spread), plus Gaussian jitter of std `noise`.

    Args:
        n: number of points.
        noise: std of the Gaussian jitter (in the final, scaled units).
        seed / generator: randomness (a seed builds a fresh CPU generator).
        device: where the result lives.

    Returns:
        float32 tensor (n, 2).
    """
    check_int_range("n", n, 1, _MAX_POINTS)
    check_number_range("noise", noise, 0.0)
    gen = _generator(seed, generator)
    angle = 1.5 * math.pi * (1.0 + 2.0 * torch.rand(n, generator=gen))  # (n,)
    points = torch.stack([angle * torch.cos(angle), angle * torch.sin(angle)], dim=1) / 7.0  # (n, 2)
    points = points + noise * torch.randn(n, 2, generator=gen)
    return points.to(device=device, dtype=torch.float32)


def make_gaussians(
    n: int,
    modes: int = 8,
    radius: float = 1.5,
    std: float = 0.1,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """A mixture of `modes` equal Gaussians whose means sit evenly on a circle.

    Mode k has mean radius * (cos 2 pi k / modes, sin 2 pi k / modes) and isotropic std `std`.

    Args:
        n: number of points.
        modes: number of mixture components (1 puts a single Gaussian at (radius, 0)).
        radius: distance of every mean from the origin.
        std: standard deviation of each component.
        seed / generator: randomness (a seed builds a fresh CPU generator).
        device: where the result lives.

    Returns:
        float32 tensor (n, 2).
    """
    check_int_range("n", n, 1, _MAX_POINTS)
    check_int_range("modes", modes, 1, 1000)
    check_number_range("radius", radius, 0.0)
    check_number_range("std", std, 0.0)
    gen = _generator(seed, generator)
    component = torch.randint(modes, (n,), generator=gen)  # (n,)
    angle = 2.0 * math.pi * component.float() / modes
    means = radius * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)  # (n, 2)
    points = means + std * torch.randn(n, 2, generator=gen)
    return points.to(device=device, dtype=torch.float32)


_MAKERS = {"moons": make_moons, "swiss_roll": make_swiss_roll, "gaussians": make_gaussians}
TOY2D_NAMES = tuple(_MAKERS)


def make_toy2d(name: str, n: int, **kwargs) -> torch.Tensor:
    """Build one of the toy sets by name: "moons", "swiss_roll" or "gaussians".

    Keyword arguments go to the matching `make_*` function.
    """
    if name not in _MAKERS:
        raise ValueError(f"name must be one of {list(TOY2D_NAMES)}; got {name!r}")
    return _MAKERS[name](n, **kwargs)
