"""The estimators of :mod:`vaebench.metrics` against exact answers (the moment estimators on the
``device`` fixture; the draws come from a CPU generator, so the CPU numbers are a plain run's)."""

from __future__ import annotations

import math

import torch

from vaebench.distributions import StandardNormal
from vaebench.metrics import gaussian_entropy, gaussian_moments, kl_lower_bound, mean_and_sem, wishart_log_det_bias


def _gaussian_draws(n: int, replicates: int, seed: int = 0, device: torch.device | str = "cpu"):
    g = torch.Generator().manual_seed(seed)
    d = 4
    loc = torch.randn(d, generator=g, dtype=torch.float64)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    cov = 0.2 * a @ a.T + 0.1 * torch.eye(d, dtype=torch.float64)
    z = loc + torch.randn(n, replicates, d, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov).T
    exact = 0.5 * (cov.trace() + loc.square().sum() - d - torch.logdet(cov))
    return z.to(device), exact.item()


def _cross_entropy(z: torch.Tensor) -> torch.Tensor:
    """The draws' mean of −log p(z) under the N(0, I) prior, per replicate."""
    return -StandardNormal(z.shape[-1]).to(z.device).log_prob(z).mean(0)


def test_gaussian_kl_bound_is_unbiased_for_a_gaussian_posterior(device: torch.device) -> None:
    """For a Gaussian q the bound is KL(q ‖ p) itself; 4,000 replicates of 32 draws each
    average to it, while the uncorrected plug-in overstates it by many standard errors."""
    n = 32
    z, exact = _gaussian_draws(n, 4000, device=device)
    mean, cov = gaussian_moments(z)
    estimate = kl_lower_bound(_cross_entropy(z), cov, n)
    sem = (estimate.std() / math.sqrt(len(estimate))).item()
    assert abs(estimate.mean().item() - exact) < 4 * sem, (estimate.mean().item(), exact, sem)
    plug_in = 0.5 * (cov.diagonal(dim1=-2, dim2=-1).sum(-1) + mean.square().sum(-1) - 4 - torch.logdet(cov))
    assert plug_in.mean().item() - exact > 10 * sem


def test_kl_bound_under_the_standard_normal_prior_is_the_gaussian_closed_form(device: torch.device) -> None:
    """Under p = N(0, I) the cross-entropy of the draws is ½(|m̂|² + (n−1)/n tr Ŝ + d log 2π), so
    E_q[−log p] − H(N(m, S)) is, replicate by replicate, the moment-corrected closed form
    KL(N(m, S) ‖ N(0, I)) = ½(tr S + |m|² − d − log det S), with |m|² ≈ |m̂|² − tr Ŝ / n and the
    Wishart correction of log det Ŝ."""
    n, d = 32, 4
    z, _ = _gaussian_draws(n, 500, seed=2, device=device)
    mean, cov = gaussian_moments(z)
    trace = cov.diagonal(dim1=-2, dim2=-1).sum(-1)
    log_det = torch.logdet(cov) - wishart_log_det_bias(d, n)
    closed_form = 0.5 * (trace + mean.square().sum(-1) - trace / n - d - log_det)
    torch.testing.assert_close(kl_lower_bound(_cross_entropy(z), cov, n), closed_form, rtol=1e-10, atol=1e-10)
    entropy = 0.5 * (d * (1 + math.log(2 * math.pi)) + log_det)
    torch.testing.assert_close(gaussian_entropy(cov, n), entropy, rtol=1e-12, atol=1e-12)


def test_wishart_correction_matches_monte_carlo(device: torch.device) -> None:
    z, _ = _gaussian_draws(10, 20000, seed=1, device=device)
    _, cov = gaussian_moments(z)
    _, true_cov = gaussian_moments(_gaussian_draws(200000, 1, seed=1)[0])
    bias = (torch.logdet(cov) - torch.logdet(true_cov[0])).mean().item()
    assert abs(bias - wishart_log_det_bias(4, 10)) < 0.03, (bias, wishart_log_det_bias(4, 10))


def test_point_mass_posterior_has_infinite_kl_bound() -> None:
    z = torch.ones(16, 3, 2)
    _, cov = gaussian_moments(z)
    assert (kl_lower_bound(_cross_entropy(z), cov, 16) == math.inf).all()


def test_mean_and_sem() -> None:
    out = mean_and_sem({"a": torch.tensor([1.0, 2.0, 3.0, 6.0]), "b": torch.tensor([5.0])})
    assert out["a"] == 3.0 and math.isclose(out["a_sem"], math.sqrt(14 / 3) / 2)
    assert out["b"] == 5.0 and math.isnan(out["b_sem"])
