"""How far a model's samples are from the data, both taken as point clouds X (n, D) and Y (m, D).

None of these needs a density, so they score a GAN, a VAE and a diffusion model alike:
- `mmd_rbf`: squared maximum mean discrepancy with Gaussian kernels (Gretton et al. 2012),
      MMD^2 = mean k(x, x') + mean k(y, y') - 2 mean k(x, y),   k(a, b) = exp(-||a - b||^2 / (2 h^2))
  summed over a few bandwidths h (0 when the distributions are equal).
- `sliced_wasserstein`: project both clouds on random unit directions and average the 1-D
  Wasserstein-1 distances, which sorting computes exactly (Rabin et al. 2011; Bonneel et al. 2015).
- `frechet_distance`: FID's formula (Heusel et al. 2017) on any features: fit a Gaussian to each
  cloud and compare, ||mu_x - mu_y||^2 + Tr(S_x + S_y - 2 (S_x S_y)^(1/2)). Blind to everything
  but the first two moments: two clouds with equal means and covariances score 0.
- `distances`: all three at once.
- `mode_coverage`: for a mixture with known centres, how many points land on each mode, how many
  modes are hit at all (a GAN may drop some: mode collapse) and how many points fall between them
  (a VAE's blur).
"""

from __future__ import annotations

import torch

from sdedu._checks import check_int_range, check_number_range, check_tensor, describe

__all__ = ["mmd_rbf", "sliced_wasserstein", "frechet_distance", "distances", "mode_coverage"]


def _check_clouds(x, y) -> tuple[torch.Tensor, torch.Tensor]:
    check_tensor("x", x, ndim=2, floating=True)
    check_tensor("y", y, ndim=2, floating=True)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same number of features; got {describe(x)} and {describe(y)}")
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError(f"x and y must hold at least 2 points each; got {describe(x)} and {describe(y)}")
    return x.detach().double(), y.detach().double()


def mmd_rbf(x: torch.Tensor, y: torch.Tensor, bandwidths=(0.1, 0.2, 0.5, 1.0, 2.0)) -> float:
    """Squared MMD between the clouds x (n, D) and y (m, D) with a sum of Gaussian kernels.

    The biased (V-statistic) estimate of Gretton et al. 2012, eq. 5: never negative, 0 for
    identical clouds, and small (of order 1/n) for two samples of the same distribution.
    """
    x, y = _check_clouds(x, y)
    xy = torch.cat([x, y])  # (n + m, D)
    sq = torch.cdist(xy, xy).pow(2)  # (n + m, n + m)
    kernel = sum(torch.exp(-sq / (2.0 * h * h)) for h in bandwidths)
    n = x.shape[0]
    k_xx, k_yy, k_xy = kernel[:n, :n].mean(), kernel[n:, n:].mean(), kernel[:n, n:].mean()
    return float(k_xx + k_yy - 2.0 * k_xy)


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, num_projections: int = 256, seed: int = 0) -> float:
    """Mean over random unit directions theta of W1(theta . x, theta . y).

    In 1-D the optimal transport pairs the sorted values, so W1 is the mean absolute difference
    of matching quantiles (computed at max(n, m) evenly spaced levels when n != m).
    """
    x, y = _check_clouds(x, y)
    check_int_range("num_projections", num_projections, 1, 100_000)
    generator = torch.Generator().manual_seed(seed)
    # 1. Random directions on the unit sphere.
    theta = torch.randn(x.shape[1], num_projections, generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)  # (D, P)
    # 2. Project and sort: each column is a 1-D distribution.
    px, py = (x @ theta).sort(dim=0).values, (y @ theta).sort(dim=0).values  # (n, P), (m, P)
    # 3. Compare quantiles at the same levels.
    k = max(px.shape[0], py.shape[0])
    levels = torch.linspace(0, 1, k, dtype=torch.float64)
    qx = torch.quantile(px, levels, dim=0) if px.shape[0] != k else px  # (k, P)
    qy = torch.quantile(py, levels, dim=0) if py.shape[0] != k else py
    return float((qx - qy).abs().mean())


def frechet_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """||mu_x - mu_y||^2 + Tr(S_x + S_y - 2 (S_x S_y)^(1/2)) of Gaussians fitted to x and y (FID's formula).

    The trace of the matrix square root is the sum of the square roots of the eigenvalues of
    S_x S_y (real and >= 0 for covariance matrices), so no matrix square root is formed.
    """
    x, y = _check_clouds(x, y)
    mu_x, mu_y = x.mean(0), y.mean(0)
    cov_x, cov_y = torch.cov(x.T).reshape(x.shape[1], -1), torch.cov(y.T).reshape(y.shape[1], -1)  # (D, D)
    eigenvalues = torch.linalg.eigvals(cov_x @ cov_y).real.clamp(min=0)
    return float((mu_x - mu_y).pow(2).sum() + torch.trace(cov_x) + torch.trace(cov_y) - 2 * eigenvalues.sqrt().sum())


def distances(x: torch.Tensor, y: torch.Tensor) -> dict:
    """All three distances between clouds x and y: {"mmd": ..., "sliced_w1": ..., "frechet": ...}."""
    return {"mmd": mmd_rbf(x, y), "sliced_w1": sliced_wasserstein(x, y), "frechet": frechet_distance(x, y)}


def mode_coverage(points: torch.Tensor, centres: torch.Tensor, radius: float) -> dict:
    """For mixtures: how many points sit within `radius` of each centre, and how many modes are hit.

    Args:
        points: (n, D) samples.
        centres: (K, D) the mixture's means.
        radius: a point counts for its nearest centre if it is closer than this.
    Returns:
        {"counts": [K ints], "modes_covered": modes with at least 1% of the points,
         "off_mode_fraction": the fraction of points near no centre}.
    """
    check_tensor("points", points, ndim=2, floating=True)
    check_tensor("centres", centres, ndim=2, floating=True)
    if points.shape[1] != centres.shape[1]:
        raise ValueError(
            f"points and centres must have the same number of features; got {describe(points)} and {describe(centres)}"
        )
    check_number_range("radius", radius, 0.0)
    d = torch.cdist(points.double(), centres.double())  # (n, K)
    nearest, index = d.min(dim=1)
    on_mode = nearest < radius
    counts = torch.bincount(index[on_mode], minlength=centres.shape[0])
    return {
        "counts": counts.tolist(),
        "modes_covered": int((counts >= max(1, 0.01 * points.shape[0])).sum()),
        "off_mode_fraction": float(1.0 - on_mode.float().mean()),
    }
