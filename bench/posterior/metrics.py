"""How far draws from an approximation are from a reference: marginal quantiles and energy distance.

Both are batched over parameters and draws (no Python loop over either).
"""

from __future__ import annotations

import torch

#: the marginal quantile levels compared
QUANTILE_LEVELS = (0.05, 0.25, 0.50, 0.75, 0.95)


def marginal_quantiles(draws: torch.Tensor, levels: tuple[float, ...] = QUANTILE_LEVELS) -> torch.Tensor:
    """Each parameter's quantiles of ``draws`` (n, d) at ``levels``: shape (len(levels), d), linear
    interpolation between order statistics (numpy's default)."""
    return torch.quantile(draws.double(), torch.tensor(levels, dtype=torch.float64), dim=0)


def quantile_errors(draws: torch.Tensor, reference_quantiles: torch.Tensor,
                    levels: tuple[float, ...] = QUANTILE_LEVELS) -> torch.Tensor:
    """|quantile of ``draws`` (n, d) − the reference's quantile| per level and parameter, shape
    (len(levels), d); ``reference_quantiles`` (len(levels), d) at the same levels."""
    return (marginal_quantiles(draws, levels) - reference_quantiles.double()).abs()


def _mean_distance(a: torch.Tensor, b: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """E‖a_i − b_j‖ over all pairs (i, j), in chunks of ``a`` to bound memory."""
    total = torch.zeros((), dtype=torch.float64)
    for start in range(0, a.shape[0], chunk):
        total += torch.cdist(a[start:start + chunk], b).sum()
    return total / (a.shape[0] * b.shape[0])


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """The squared energy distance between the empirical distributions of ``x`` (n, d) and ``y`` (m, d):
    2 E‖X − Y‖ − E‖X − X′‖ − E‖Y − Y′‖, every pair counted (the V-statistic: never negative, zero
    only for equal samples, and above zero between two samples of one distribution, by O(1/n), which
    is why every value is shown beside a noise floor measured at the same sample sizes)."""
    x, y = x.double(), y.double()
    return (2 * _mean_distance(x, y) - _mean_distance(x, x) - _mean_distance(y, y)).item()
