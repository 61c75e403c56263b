"""Evaluation metrics, each batched over examples and samples (no Python loop per example).

Every metric reads the model through the protocol of :mod:`vaebench.model` (prior,
likelihood, posterior draws) and nothing else. Names say what a number is: ``log_likelihood_is`` is an estimate of log p(x) (a negative
number, in nats); ``recon_bernoulli_nll`` is a negative log-likelihood, so lower is better.

:func:`posterior_pass` computes every sample-based column of one batch of test images from
one set of posterior draws: importance sampling, the ELBO and reconstruction where q(z|x) has
a density; for implicit posteriors, the Gaussian-moment bound on the KL term and the upper
bound on the ELBO that it gives. The draws' moments also define the Gaussian that AIS
starts from.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from .model import LatentVariableModel, log_joint, log_prob_and_mean

# Decoder outputs per chunk of posterior draws: bounds memory at ~ 4 bytes × this.
_MAX_ELEMENTS = 1 << 24
LOG_2PI = math.log(2 * math.pi)


def batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Apply a per-example function to ``x`` in batches, without gradients; concatenate the results."""
    with torch.no_grad():
        return torch.cat([fn(chunk) for chunk in x.split(batch_size)])


def batched_mean(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int) -> float:
    return batched(fn, x, batch_size).mean().item()


def mean_and_sem(per_example: Mapping[str, torch.Tensor | np.ndarray]) -> dict[str, float]:
    """``name`` → mean of the per-example values, ``name_sem`` → its standard error (NaN for one value).

    A NaN or infinite value makes the mean NaN or infinite: a column is never averaged over
    a silently smaller set of examples.
    """
    out: dict[str, float] = {}
    for name, values in per_example.items():
        v = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=np.float64)
        with np.errstate(invalid="ignore"):  # inf − inf in the spread of an infinite column: NaN is right
            out[name] = float(v.mean()) if len(v) else math.nan
            out[f"{name}_sem"] = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan
    return out


def elbo(model: LatentVariableModel, x: torch.Tensor, n_samples: int = 1) -> torch.Tensor:
    """Monte Carlo ELBO per example, E_q[log p(x, z) − log q(z|x)] over ``n_samples`` draws: a
    lower bound on log p(x) in expectation. NaN for a posterior without a density."""
    z, log_q = model.posterior(x, n_samples)
    if log_q is None:
        return torch.full(x.shape[:1], math.nan, device=x.device)
    return (log_joint(model, z, x) - log_q).mean(0)


class Proposal:
    """A distribution per example given by ``sample(n)`` → (n, B, Dz) and ``log_prob(z)`` → (n, B)."""

    def __init__(self, sample: Callable[[int], torch.Tensor], log_prob: Callable[[torch.Tensor], torch.Tensor]):
        self.sample = sample
        self.log_prob = log_prob


def _draw_chunk(n_samples: int, x: torch.Tensor) -> int:
    """Posterior draws per chunk, so that likelihood outputs stay near ``_MAX_ELEMENTS``."""
    return max(1, min(n_samples, _MAX_ELEMENTS // max(1, x.numel())))


def importance_sampled_log_likelihood(model: LatentVariableModel, x: torch.Tensor, n_samples: int,
                                      proposal: Proposal | None = None) -> torch.Tensor:
    """log p(x) ≈ log (1/K) Σ_k p(x, z_k) / r(z_k|x), z_k ~ r, per example; r defaults to q(z|x).

    A stochastic lower bound in expectation (Jensen), tightening as K grows. Without a
    ``proposal``, a model with no posterior density (an implicit posterior) gets NaN: there
    is nothing to weight by. Samples are drawn in chunks so memory stays bounded for large K.
    """
    if proposal is None and not model.has_density:
        return torch.full(x.shape[:1], math.nan, device=x.device)
    chunk = _draw_chunk(n_samples, x)
    parts = []
    for start in range(0, n_samples, chunk):
        n = min(chunk, n_samples - start)
        if proposal is None:
            z, log_q = model.posterior(x, n)
        else:
            z = proposal.sample(n)
            log_q = proposal.log_prob(z)
        parts.append(log_joint(model, z, x) - log_q)
    return torch.logsumexp(torch.cat(parts), 0) - math.log(n_samples)


def wishart_log_det_bias(dim: int, n: int) -> float:
    """E[log det Ŝ] − log det S for the unbiased sample covariance Ŝ of n Gaussian draws in ``dim`` dims.

    (n − 1) Ŝ ~ Wishart(S, n − 1), so E[log det Ŝ] = log det S + Σ_{i=1..d} ψ((n − i)/2)
    + d log(2/(n − 1)); the bias is negative (Jensen), so a plug-in log det understates the
    entropy and overstates a KL.
    """
    i = torch.arange(1, dim + 1, dtype=torch.float64)
    return (torch.special.digamma((n - i) / 2).sum() + dim * math.log(2 / (n - 1))).item()


def gaussian_moments(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (B, D) and unbiased covariance (B, D, D), in float64, of draws ``z`` of shape (n, B, D)."""
    z = z.double()
    mean = z.mean(0)
    r = z - mean
    return mean, torch.einsum("nbi,nbj->bij", r, r) / (z.shape[0] - 1)


def gaussian_entropy(cov: torch.Tensor, n: int) -> torch.Tensor:
    """H(N(m, S)) per example, unbiased from the sample covariance ``cov`` (B, D, D) of n draws.

    The plug-in log det Ŝ is biased low (:func:`wishart_log_det_bias`), which is corrected. A
    singular covariance (a point-mass posterior) gives −inf, its true entropy.
    """
    d = cov.shape[-1]
    sign, log_det = torch.linalg.slogdet(cov)
    log_det = torch.where(sign > 0, log_det, -math.inf) - wishart_log_det_bias(d, n)
    return 0.5 * (d * (1 + LOG_2PI) + log_det)


def kl_lower_bound(cross_entropy: torch.Tensor, cov: torch.Tensor, n: int) -> torch.Tensor:
    """A lower bound on KL(q(z|x) ‖ p(z)) per example from n draws of q: E_q[−log p(z)] − H(N(m, S)).

    Among densities with covariance S the Gaussian has the largest entropy, so
    KL(q ‖ p) = −H(q) + E_q[−log p(z)] ≥ −H(N(m, S)) + E_q[−log p(z)]. ``cross_entropy`` is the
    draws' mean of −log p(z) under the model's own prior (unbiased), and the entropy is
    unbiased too (:func:`gaussian_entropy`), so the estimate is unbiased for the bound, for any
    prior. A point-mass posterior (det S = 0) gives +inf, its true KL.
    """
    return cross_entropy - gaussian_entropy(cov, n)


@dataclass
class PosteriorPass:
    """One batch's per-example columns (``columns``: name → (B,)), and the draws' mean and covariance."""

    columns: dict[str, torch.Tensor]
    mean: torch.Tensor
    cov: torch.Tensor


def posterior_pass(model: LatentVariableModel, x: torch.Tensor, n_samples: int, *,
                   is_samples: int = 0) -> PosteriorPass:
    """Every sample-based column of ``x`` from one set of ``n_samples`` posterior draws per example.

    All models: ``recon_bernoulli_nll`` (E_q[−log p(x|z)], nats per image), ``recon_mse``
    (per pixel, between x and E[x|z]), ``recon_pixel_error`` (fraction of pixels where
    E[x|z] > 0.5 disagrees with binary x), each averaged over the draws, and
    ``posterior_sd_median`` (median over latent dimensions of the draws' sd).
    Posteriors with a density: ``elbo``, the Monte Carlo ELBO over all draws, and, with
    ``is_samples`` > 0, ``log_likelihood_is`` from the first ``is_samples`` draws.
    Implicit posteriors: ``kl_gaussian_lower_bound`` (:func:`kl_lower_bound`, under the
    model's own prior) and ``elbo_upper_bound`` = E_q[log p(x|z)] − that bound, an upper bound
    on the true ELBO.
    """
    density = model.has_density
    if n_samples < 2 or (is_samples > n_samples):
        raise ValueError(f"posterior_pass needs 2 ≤ is_samples ≤ n_samples, got {is_samples} and {n_samples}")
    chunk = _draw_chunk(n_samples, x)
    draws, log_lik, log_prior, log_w = [], [], [], []
    mse = torch.zeros(x.shape[0], device=x.device)
    error = torch.zeros(x.shape[0], device=x.device)
    for start in range(0, n_samples, chunk):
        z, log_q = model.posterior(x, min(chunk, n_samples - start))
        ll, mean = log_prob_and_mean(model.likelihood, x, z)
        lp = model.prior.log_prob(z)
        mse += (x - mean).square().mean(-1).sum(0)
        error += ((mean > 0.5).to(x.dtype) != x).to(x.dtype).mean(-1).sum(0)
        draws.append(z)
        log_lik.append(ll)
        log_prior.append(lp)
        if density:
            log_w.append(ll + lp - log_q)
    z = torch.cat(draws)
    expected_ll = torch.cat(log_lik).double().mean(0)
    mean, cov = gaussian_moments(z)
    columns = {
        "recon_bernoulli_nll": -expected_ll,
        "recon_mse": mse / n_samples,
        "recon_pixel_error": error / n_samples,
        "posterior_sd_median": cov.diagonal(dim1=-2, dim2=-1).sqrt().median(-1).values,
    }
    if density:
        w = torch.cat(log_w).double()
        columns["elbo"] = w.mean(0)
        if is_samples:
            columns["log_likelihood_is"] = torch.logsumexp(w[:is_samples], 0) - math.log(is_samples)
    else:
        kl = kl_lower_bound(-torch.cat(log_prior).double().mean(0), cov, n_samples)
        columns["kl_gaussian_lower_bound"] = kl
        columns["elbo_upper_bound"] = expected_ll - kl
    return PosteriorPass(columns, mean, cov)
