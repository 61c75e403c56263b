"""Evaluation metrics, each batched over examples and samples (no Python loop per example).

Names say what a number is: ``log_likelihood_is`` is an estimate of log p(x) (a negative
number, in nats); ``recon_bernoulli_nll`` is a negative log-likelihood, so lower is better.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from vaebench.methods import Method
from vaebench.methods.base import bernoulli_log_prob

# Decoder outputs per chunk of importance samples: bounds memory at ~ 4 bytes × this.
_MAX_ELEMENTS = 1 << 24
#: below this spread (in any latent dimension) a Gaussian fitted to posterior samples is a point mass
MIN_FITTED_STD = 1e-4


def batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Apply a per-example function to ``x`` in batches, without gradients; concatenate the results."""
    with torch.no_grad():
        return torch.cat([fn(chunk) for chunk in x.split(batch_size)])


def batched_mean(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int) -> float:
    return batched(fn, x, batch_size).mean().item()


def mean_and_sem(per_example: dict[str, list[torch.Tensor]]) -> dict[str, float]:
    """``name`` → mean over the concatenated per-example values, ``name_sem`` → its standard error."""
    out: dict[str, float] = {}
    for name, parts in per_example.items():
        values = torch.cat(parts).double()
        out[name] = values.mean().item()
        out[f"{name}_sem"] = (values.std() / len(values) ** 0.5).item() if len(values) > 1 else float("nan")
    return out


def elbo(method: Method, x: torch.Tensor, n_samples: int = 1) -> torch.Tensor:
    """The method's own ELBO estimate per example (for AVB, E_q[log p(x|z) − T(x, z)])."""
    return method.elbo(x, n_samples)


class Proposal:
    """A proposal distribution per example for importance sampling: ``sample(n)`` and ``log_prob(z)``.

    ``degenerate`` marks examples whose proposal has collapsed to (almost) a point, where
    importance weights are meaningless: estimates for them are reported as NaN.
    """

    def __init__(self, sample: Callable[[int], torch.Tensor], log_prob: Callable[[torch.Tensor], torch.Tensor],
                 degenerate: torch.Tensor | None = None):
        self.sample = sample
        self.log_prob = log_prob
        self.degenerate = degenerate


def fitted_gaussian(method: Method, x: torch.Tensor, n_fit: int = 256, inflate: float = 1.0) -> Proposal:
    """A diagonal Gaussian moment-matched to ``n_fit`` posterior draws per example.

    The proposal for methods whose posterior has no density (AVB): importance sampling
    stays unbiased for any proposal with full support; ``inflate`` widens it for safety.
    """
    z = method.sample_posterior(x, n_fit)
    std = z.std(0)
    q = torch.distributions.Normal(z.mean(0), std * inflate + 1e-6, validate_args=False)
    # A deterministic encoder gives no spread to fit: such a proposal is no basis for an estimate.
    degenerate = std.amin(-1) < MIN_FITTED_STD
    return Proposal(lambda n: q.sample((n,)), lambda z: q.log_prob(z).sum(-1), degenerate)


def posterior_proposal(method: Method, x: torch.Tensor) -> Proposal:
    """q(z|x) itself where the method has a density, else a Gaussian fitted to its samples."""
    if method.has_density:
        return Proposal(lambda n: method.sample_posterior(x, n), lambda z: method.log_q(z, x))
    return fitted_gaussian(method, x, inflate=1.2)


def importance_sampled_log_likelihood(method: Method, x: torch.Tensor, n_samples: int,
                                      proposal: Proposal | None = None) -> torch.Tensor:
    """log p(x) ≈ log (1/K) Σ_k p(x, z_k) / r(z_k|x), z_k ~ r, per example; r defaults to the posterior.

    A stochastic lower bound in expectation (Jensen), tightening as K grows.
    Samples are drawn in chunks so memory stays bounded for large K.
    """
    proposal = proposal or posterior_proposal(method, x)
    chunk = max(1, min(n_samples, _MAX_ELEMENTS // max(1, x.shape[0] * method.data_dim)))
    parts = []
    for start in range(0, n_samples, chunk):
        z = proposal.sample(min(chunk, n_samples - start))
        parts.append(method.log_joint(z, x) - proposal.log_prob(z))
    log_w = torch.cat(parts)
    estimate = torch.logsumexp(log_w, 0) - math.log(n_samples)
    if proposal.degenerate is not None:
        estimate = estimate.masked_fill(proposal.degenerate, float("nan"))
    return estimate


def reconstruction_metrics(method: Method, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-example reconstruction error at one posterior draw z ~ q(z|x).

    ``recon_bernoulli_nll``: −log p(x|z) in nats per image. ``recon_mse``: mean squared error
    between x and E[x|z], per pixel. ``recon_pixel_error``: fraction of pixels where the
    thresholded reconstruction (E[x|z] > 0.5) differs from binary x.
    """
    z = method.sample_posterior(x, 1)[0]
    logits = method.decoder.logits(z)
    mean = torch.sigmoid(logits)
    return {
        "recon_bernoulli_nll": -bernoulli_log_prob(x, logits),
        "recon_mse": (x - mean).square().mean(-1),
        "recon_pixel_error": ((logits > 0).to(x.dtype) != x).to(x.dtype).mean(-1),
    }
