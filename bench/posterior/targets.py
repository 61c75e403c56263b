"""Unnormalised target densities, as the authors' ``notebooks/Stan-example.ipynb`` defines them.

Every log density takes a batch ``z`` of shape (n, d) and returns (n,). The eight-schools
density is the full log joint log p(y, μ, τ, η) with every normalising constant, so an ELBO of
it is a lower bound on the log evidence log p(y); the 2-D densities are unnormalised, their
normalisers known (:func:`torus_log_normaliser` in closed form, :func:`rosenbrock_log_normaliser`
by a 1-D integral after integrating x1 out analytically).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

#: the notebook's data: the eight-schools effects and standard errors, both divided by 10
#: (the classic y = 28, 8, −3, …; σ = 15, 10, 16, …, rounded and rescaled by the authors)
SCHOOLS_Y = (2.8, 0.8, -0.3, 0.7, -0.1, 0.1, 1.8, 1.2)
SCHOOLS_SIGMA = (0.8, 0.5, 0.8, 0.6, 0.5, 0.6, 0.5, 0.4)
#: the notebook's prior standard deviations of η, μ and τ (``psigma_eta``, ``psigma_mu``, ``psigma_tau``)
PRIOR_SD_ETA = PRIOR_SD_MU = PRIOR_SD_TAU = 1.0
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def _normal_log_pdf(x: torch.Tensor, mean: torch.Tensor | float, sd: torch.Tensor | float) -> torch.Tensor:
    sd = torch.as_tensor(sd, dtype=x.dtype, device=x.device)
    return -0.5 * ((x - mean) / sd) ** 2 - torch.log(sd) - _LOG_SQRT_2PI


def eight_schools_log_density(z: torch.Tensor) -> torch.Tensor:
    """log p(y, μ, τ, η) of the notebook's non-centred eight-schools model, z = (μ, τ, η_1..η_8):
    θ_j = μ + τ η_j, y_j ~ N(θ_j, σ_j²), μ ~ N(0, 1), τ ~ N(0, 1) on the whole real line (the
    notebook's Stan model declares ``real tau`` without a lower bound, so the posterior is
    symmetric under (τ, η) → (−τ, −η)), η_j ~ N(0, 1)."""
    y = torch.tensor(SCHOOLS_Y, dtype=z.dtype, device=z.device)
    sigma = torch.tensor(SCHOOLS_SIGMA, dtype=z.dtype, device=z.device)
    mu, tau, eta = z[:, :1], z[:, 1:2], z[:, 2:]
    theta = mu + tau * eta
    return (_normal_log_pdf(y, theta, sigma).sum(-1) + _normal_log_pdf(eta, 0.0, PRIOR_SD_ETA).sum(-1)
            + _normal_log_pdf(mu[:, 0], 0.0, PRIOR_SD_MU) + _normal_log_pdf(tau[:, 0], 0.0, PRIOR_SD_TAU))


def rosenbrock_log_density(z: torch.Tensor) -> torch.Tensor:
    """The notebook's "Rosenbrock": −(x1 − 1)² − (x2² − x1)², unnormalised (a banana bent along x1 = x2²)."""
    x1, x2 = z[:, 0], z[:, 1]
    return -(x1 - 1) ** 2 - (x2**2 - x1) ** 2


def torus_log_density(z: torch.Tensor) -> torch.Tensor:
    """The notebook's "torus": −(x1² + x2² − 2)², unnormalised (a ring of radius about √2)."""
    return -(z[:, 0] ** 2 + z[:, 1] ** 2 - 2) ** 2


def torus_log_normaliser() -> float:
    """log ∫ exp(−(r² − 2)²) dx in closed form: in polar coordinates with s = r², the integral is
    π ∫_0^∞ exp(−(s − 2)²) ds = π · √π / 2 · (1 + erf 2)."""
    return math.log(math.pi * math.sqrt(math.pi) / 2 * (1 + math.erf(2.0)))


def rosenbrock_log_normaliser() -> float:
    """log ∫∫ exp(−(x1 − 1)² − (x2² − x1)²) dx1 dx2. Completing the square in x1 gives
    (x1 − 1)² + (x1 − x2²)² = 2 (x1 − (1 + x2²)/2)² + (x2² − 1)²/2, so integrating x1 out leaves
    √(π/2) ∫ exp(−(x2² − 1)²/2) dx2, a 1-D integral done by adaptive quadrature."""
    from scipy import integrate

    inner, _ = integrate.quad(lambda x: math.exp(-((x * x - 1) ** 2) / 2), -math.inf, math.inf, epsabs=1e-13)
    return 0.5 * math.log(math.pi / 2) + math.log(inner)


@dataclass(frozen=True)
class Target:
    """A density to approximate.

    ``name``; ``parameters``: a label per coordinate; ``log_density``: z (n, d) → (n,);
    ``contrast_mean``, ``contrast_sd``: the fixed Gaussian reference p0 = N(mean, sd²) that plain
    AVB's adversary contrasts q with (the notebook's ``Ez0``, ``stdz0``); ``box``: for a 2-D target
    the square [−box, box]² on which its grid reference is exact (its mass outside is below the
    grid's resolution), else None; ``log_normaliser``: log Z where it is known, else None (the
    eight-schools density is a normalised joint, so its Z is the unknown evidence p(y));
    ``pair``: the two coordinates that the figures draw."""

    name: str
    parameters: tuple[str, ...]
    log_density: Callable[[torch.Tensor], torch.Tensor]
    contrast_mean: tuple[float, ...]
    contrast_sd: tuple[float, ...]
    box: float | None = None
    log_normaliser: Callable[[], float] | None = None
    pair: tuple[int, int] = (0, 1)

    @property
    def dim(self) -> int:
        return len(self.parameters)


EIGHT_SCHOOLS = Target(
    name="eight-schools",
    parameters=("mu", "tau") + tuple(f"eta[{j + 1}]" for j in range(len(SCHOOLS_Y))),
    log_density=eight_schools_log_density,
    contrast_mean=(0.0,) * (2 + len(SCHOOLS_Y)),
    # the notebook's stdz0: the prior standard deviations of μ, τ and each η
    contrast_sd=(PRIOR_SD_MU, PRIOR_SD_TAU) + (PRIOR_SD_ETA,) * len(SCHOOLS_Y),
)
# the notebook's stdz0 for both 2-D densities is 1000: a nearly flat p0
ROSENBROCK = Target(name="rosenbrock", parameters=("x1", "x2"), log_density=rosenbrock_log_density,
                    contrast_mean=(0.0, 0.0), contrast_sd=(1000.0, 1000.0), box=7.0,
                    log_normaliser=rosenbrock_log_normaliser)
TORUS = Target(name="torus", parameters=("x1", "x2"), log_density=torus_log_density,
               contrast_mean=(0.0, 0.0), contrast_sd=(1000.0, 1000.0), box=4.0,
               log_normaliser=torus_log_normaliser)
TARGETS = {t.name: t for t in (EIGHT_SCHOOLS, ROSENBROCK, TORUS)}
