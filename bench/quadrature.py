"""Exact evaluation of models with a 2-D latent space on a grid.

``quadrature_log_likelihood``: log p(x) = log ∫ p(x|z) p(z) dz by the midpoint rule on a
square grid over [−limit, limit]², refined until doubling the resolution moves every
example's value by less than ``tol`` nats. The box leaves out prior mass
P(max|z_i| > limit); since p(x|z) ≤ 1 for Bernoulli pixels, that bounds the absolute
error of p(x), which for limit = 6 and the N(0, I) prior is below 4e-9 (negligible for the
toy data, where p(x) ≈ 1/4). For another prior the bound is its own mass outside the box.
Both functions read the model through :mod:`vaebench.model` alone: its prior's density,
its likelihood and its posterior draws.

``aggregate_kl``: KL(q(z) ‖ p(z)) for the aggregate posterior q(z) = E_x q(z|x) over the
given examples, from posterior samples (so it works for implicit posteriors too): the
KL between the histogram of the samples on the grid (plus one overflow bin) and the
prior's mass in each bin (by the midpoint rule on a finer grid, the overflow bin taking
the rest), with the Miller–Madow correction for the plug-in bias
of the histogram's entropy. Discretising can only lower a KL (data processing), by
O(bin width²); the remaining error is sampling noise, O(N^-1/2).
"""

from __future__ import annotations

import math

import torch

from .errors import VaebenchError
from .model import LatentVariableModel, pairwise_log_prob

#: half-width of the integration box; see the module docstring for the error it causes
LIMIT = 6.0
#: decoder outputs (cells × pixels) per chunk of grid cells, bounding memory
_MAX_ELEMENTS = 1 << 24


class QuadratureError(VaebenchError):
    """Raised when the quadrature does not converge to the requested tolerance."""


def midpoint_grid(limit: float, points: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, float]:
    """Cell centres of a ``points`` × ``points`` grid on [−limit, limit]², shape (points², 2),
    and the log of one cell's area."""
    h = 2 * limit / points
    axis = -limit + h * (torch.arange(points, device=device, dtype=torch.float32) + 0.5)
    zz = torch.cartesian_prod(axis, axis)
    return zz, 2 * math.log(h)


#: the prior's mass outside the box bounds the error of p(x) (p(x|z) ≤ 1): 1e-4 is under 1e-3
#: nats for the toy's p(x) ≈ 1/4; the box is doubled until the mass on the grid (itself a
#: midpoint sum, converged with log p(x)) is short of 1 by less than this, at most
#: ``_MAX_WIDENINGS`` times, else the quadrature refuses
PRIOR_MASS_OUTSIDE = 1e-4
_MAX_WIDENINGS = 3


def _log_marginal(model: LatentVariableModel, x: torch.Tensor, limit: float, points: int
                  ) -> tuple[torch.Tensor, float]:
    """Midpoint-rule log p(x) per example on one grid (batched over examples and grid cells), and
    the prior's mass on the same grid."""
    z, log_area = midpoint_grid(limit, points, x.device)
    parts, prior = [], []
    for chunk in z.split(max(1, _MAX_ELEMENTS // x[0].numel())):
        log_prior = model.prior.log_prob(chunk)
        prior.append(log_prior)
        parts.append(pairwise_log_prob(model.likelihood, x, chunk) + log_prior)
    mass = (torch.logsumexp(torch.cat(prior).double(), 0) + log_area).exp().item()
    return torch.logsumexp(torch.cat(parts, dim=1), dim=1) + log_area, mass


#: the finest grid per axis: a sharp decoder (IWAE's on the toy, seed 1) moved log p(x) by 0.0023
#: nats from 1,024² to 2,048² points and by 9e-5 from 2,048² to 4,096² (51 s on one shared CPU
#: thread for the 4 toy points; 8,192² took 210 s and moved it by 1e-6)
MAX_POINTS = 4096


def quadrature_log_likelihood(model: LatentVariableModel, x: torch.Tensor, *, limit: float = LIMIT, points: int = 128,
                              tol: float = 1e-3, max_points: int = MAX_POINTS) -> torch.Tensor:
    """Exact log p(x) per example for a 2-D latent model, to within ``tol`` nats of the grid limit.

    Starts with ``points`` per axis and doubles until the largest change over the examples
    is below ``tol``; raises :class:`QuadratureError` if ``max_points`` is reached first. The
    box [−limit, limit]² must hold the prior's mass but for ``PRIOR_MASS_OUTSIDE`` (a learned
    prior may move away from the origin): it is doubled until it does, and the quadrature
    refuses a prior that still leaves it.
    """
    if model.latent_dim != 2:
        raise QuadratureError(f"quadrature needs a 2-D latent space, got latent_dim={model.latent_dim}")
    start = points
    with torch.no_grad():
        for _ in range(_MAX_WIDENINGS + 1):
            points = start
            coarse, _ = _log_marginal(model, x, limit, points)
            converged = False
            while points < max_points and not converged:
                points *= 2
                fine, mass = _log_marginal(model, x, limit, points)
                change = (fine - coarse).abs().max().item()  # one sync per refinement, not per example
                converged, coarse = change < tol, fine
            if 1 - mass < PRIOR_MASS_OUTSIDE:
                if not converged:
                    raise QuadratureError(f"quadrature did not converge to {tol} nats with {max_points}² grid "
                                          f"points (last refinement moved log p(x) by {change:.2g})")
                return fine
            limit *= 2  # the prior's mass lies (partly) outside the box: a refinement cannot help
    raise QuadratureError(f"the prior leaves the quadrature box: {1 - mass:.2g} of its mass lies outside "
                          f"[−{limit / 2:g}, {limit / 2:g}]²")


#: midpoint-rule points per axis inside each histogram bin for the prior's bin mass: its error
#: is O((bin width / this)²) relative, growing with |z|² (for N(0, I) at 240 bins of [−6, 6]:
#: about 1e-5 near the origin, up to 2e-4 in the outer bins that hold mass above 1e-10)
_BIN_SUBDIVISION = 4


def prior_bin_mass(model: LatentVariableModel, limit: float, bins: int, device: torch.device) -> torch.Tensor:
    """The prior's mass in each grid bin, flattened like ``cartesian_prod``, plus the overflow bin last.

    Both by the midpoint rule: the overflow bin integrates the ring between the box and twice
    its size on the same fine grid, rather than taking 1 − (the rest), which the rule's own
    error (1e-8 here) would swamp wherever the prior has little mass outside the box.
    """
    s = _BIN_SUBDIVISION
    z, log_area = midpoint_grid(limit, bins * s, device)
    density = (model.prior.log_prob(z).double() + log_area).exp()
    # fine cell (i, j) of the (bins·s)² grid lies in bin (i // s, j // s)
    inside = density.reshape(bins, s, bins, s).sum((1, 3)).flatten()
    outer, _ = midpoint_grid(2 * limit, 2 * bins * s, device)  # the same cell edges, twice as far
    ring = outer[(outer.abs() > limit).any(-1)]
    overflow = (model.prior.log_prob(ring).double() + log_area).exp().sum()
    return torch.cat([inside, overflow.reshape(1)])


def aggregate_kl(model: LatentVariableModel, x: torch.Tensor, *, samples: int = 400_000, limit: float = LIMIT,
                 bins: int = 240, chunk: int = 1 << 16) -> float:
    """KL(q(z) ‖ p(z)) in nats for the aggregate posterior of the examples ``x`` (2-D latents).

    Draws ⌈samples / len(x)⌉ posterior samples per example, histograms them into ``bins``²
    cells of [−limit, limit]² plus an overflow bin, and returns
    Σ_b q̂_b log(q̂_b / P_b) − (nonempty bins − 1) / (2N) with P_b the prior's mass.
    """
    if model.latent_dim != 2:
        raise QuadratureError(f"the grid KL needs a 2-D latent space, got latent_dim={model.latent_dim}")
    per_example = max(1, math.ceil(samples / len(x)))
    counts = torch.zeros(bins * bins + 1, device=x.device, dtype=torch.float64)
    h = 2 * limit / bins
    with torch.no_grad():
        draws_per_chunk = max(1, chunk // len(x))
        for start in range(0, per_example, draws_per_chunk):
            z = model.posterior(x, min(draws_per_chunk, per_example - start)).z.reshape(-1, 2)
            cell = ((z + limit) / h).floor().long()
            inside = ((cell >= 0) & (cell < bins)).all(-1)
            index = torch.where(inside, cell[:, 0] * bins + cell[:, 1], bins * bins)
            counts += torch.bincount(index, minlength=bins * bins + 1).double()
    n = counts.sum()
    q = counts / n
    p = prior_bin_mass(model, limit, bins, x.device)
    nonempty = q > 0
    kl = (q[nonempty] * (q[nonempty].log() - p[nonempty].log())).sum()
    return (kl - (nonempty.sum() - 1) / (2 * n)).item()
