"""The multi-sample bounds of MIWAE, PIWAE and CIWAE (Rainforth et al., ICML 2018), from log-weights.

Rainforth, Kosiorek, Le, Maddison, Igl, Wood & Teh, "Tighter Variational Bounds are Not
Necessarily Better", ICML 2018, section 5 defines three objectives on the log importance weights
log w = log p(x, z) − log q(z|x) of draws z ~ q(z|x), each with IWAE as a special case:

- MIWAE(M, K): the mean of M independent K-sample IWAE bounds,
  (1/M) Σ_m log (1/K) Σ_k w_{m,k};
- CIWAE(β): β · ELBO + (1 − β) · IWAE_K on the same K draws, ELBO = (1/K) Σ_k log w_k;
- PIWAE(M, K): the inference network on MIWAE(M, K), the generative network on the IWAE bound of
  all M·K draws.

The functions below take the log-weights of n = M·K draws, shape (n, batch), and return one bound
per example; :class:`ImportanceWeightedVariant` draws those log-weights in one encoder and one
decoder pass. The registered methods are in ``miwae.py``, ``piwae.py`` and ``ciwae.py``. No method
is registered here.
"""

from __future__ import annotations

import math

import torch

from vaebench.model import log_joint

from .iwae import IWAE


def log_mean_exp(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """log (1/n) Σ exp(log_w) along ``dim``, n its length."""
    return torch.logsumexp(log_w, dim) - math.log(log_w.shape[dim])


def iwae_bound(log_w: torch.Tensor) -> torch.Tensor:
    """The n-sample IWAE bound of log-weights (n, batch): log (1/n) Σ_i w_i, shape (batch,)."""
    return log_mean_exp(log_w, 0)


def elbo_bound(log_w: torch.Tensor) -> torch.Tensor:
    """The ELBO estimated on n draws (n, batch): (1/n) Σ_i log w_i, shape (batch,)."""
    return log_w.mean(0)


def miwae_bound(log_w: torch.Tensor, m: int) -> torch.Tensor:
    """MIWAE(M, K) of log-weights (M·K, batch), M = ``m``: the draws split into M groups of K
    consecutive draws, the K-sample IWAE bound of each group, averaged over the groups."""
    n, batch = log_w.shape
    if n % m:
        raise ValueError(f"{n} draws do not split into {m} groups of equal size")
    return log_mean_exp(log_w.reshape(m, n // m, batch), 1).mean(0)


def ciwae_bound(log_w: torch.Tensor, beta: float) -> torch.Tensor:
    """CIWAE(β) of log-weights (K, batch): β · ELBO + (1 − β) · IWAE_K, both on the same K draws."""
    return beta * elbo_bound(log_w) + (1 - beta) * iwae_bound(log_w)


class ImportanceWeightedVariant(IWAE):
    """IWAE's networks with the log importance weights of n draws exposed, for bounds built on them
    (not registered: the registered methods subclass it)."""

    def log_weights(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """log p(x, z_i) − log q(z_i|x) of n draws z_i ~ q(z|x) per example, shape (n, batch): one
        encoder pass, n reparameterised draws, one decoder pass over all of them (as
        :meth:`IWAE.iwae_bound`, whose k draws these equal under the same seed)."""
        q = self.encode(x)
        z = q.rsample((n,))  # (n, batch, latent)
        return log_joint(self, z, x) - q.log_prob(z)


__all__ = ["ImportanceWeightedVariant", "ciwae_bound", "elbo_bound", "iwae_bound", "log_mean_exp", "miwae_bound"]
