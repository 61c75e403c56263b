"""The latent-variable model protocol: all that an estimator knows of a model.

A model is a joint density p(x, z) = p(z) p(x|z) with a latent vector z ∈ R^D and an
inference model q(z|x). Every estimator (AIS, BDMC, importance sampling, the ELBO,
quadrature, reconstruction and posterior diagnostics) reads its densities through this
protocol and nothing else, so a method with a learned prior, a hierarchy of latent layers
or an implicit posterior is evaluated against its own model, never against an assumed
N(0, I):

- :class:`Prior` ``p(z)``: ``sample(*shape)`` → (*shape, D) and ``log_prob(z)`` → z.shape[:-1].
  It may hold parameters and may be structured: a hierarchy of latent layers is one vector
  z = [z_1, …, z_L] whose prior's ``log_prob`` is log p(z_L) + Σ log p(z_l | z_{l+1}), and
  whose likelihood reads the layer it needs.
- :class:`Likelihood` ``p(x|z)``: ``log_prob(x, z)`` (x of shape (B, …) broadcast over z's
  leading sample dimensions), ``sample(z)`` and ``mean(z)``.
- the posterior: ``posterior(x, n)`` → :class:`PosteriorDraws`, n draws per example with
  log q(z|x) where q has a density (``has_density``), or the draws alone for an implicit
  posterior.

Parts may offer optional fast paths, which estimators use when present and replace by
autograd or a second pass when not: ``value_and_grad`` (the density and its z-gradient in
closed form, for AIS's leapfrog steps), ``log_prob_and_mean`` (both from one network pass)
and ``pairwise_log_prob`` (log p(x_b | z_c) for every example and latent point, for
quadrature). :func:`value_and_grad` and the helpers below hide the choice. A model may also
say more about its posterior and its latent vector: ``posterior_mean(x)`` → (B, D), the exact
E_q[z|x] where q has one in closed form (a Gaussian encoder's mean; otherwise estimators take the
mean of posterior draws), and ``latent_layers``, the sizes of its latent layers in the order of
z (a hierarchy's [z_1, …, z_L]; absent: one layer), for estimators that report per layer.

The shapes follow torch.distributions: a trailing event dimension, any leading batch and
sample dimensions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

import torch


@runtime_checkable
class Prior(Protocol):
    """p(z) over a flat latent vector of ``latent_dim`` entries."""

    latent_dim: int

    def sample(self, *shape: int) -> torch.Tensor:
        """Draws of shape (*shape, latent_dim)."""
        ...

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z), shape z.shape[:-1]."""
        ...


@runtime_checkable
class Likelihood(Protocol):
    """p(x|z); ``x`` (B, …) broadcasts over the leading sample dimensions of ``z`` (…, B, D)."""

    def log_prob(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x|z), shape z.shape[:-1]."""
        ...

    def sample(self, z: torch.Tensor) -> torch.Tensor:
        """x ~ p(x|z)."""
        ...

    def mean(self, z: torch.Tensor) -> torch.Tensor:
        """E[x|z]."""
        ...


class PosteriorDraws(NamedTuple):
    """Draws z ~ q(z|x), shape (n, batch, latent_dim), with log q(z|x) of shape (n, batch)
    where the posterior has a density (None for implicit posteriors such as AVB's)."""

    z: torch.Tensor
    log_q: torch.Tensor | None


@runtime_checkable
class LatentVariableModel(Protocol):
    """A prior, a likelihood and a posterior over one latent vector."""

    latent_dim: int
    prior: Prior
    likelihood: Likelihood

    @property
    def has_density(self) -> bool:
        """Whether :meth:`posterior` returns log q(z|x)."""
        ...

    def posterior(self, x: torch.Tensor, n: int = 1) -> PosteriorDraws:
        """n draws z ~ q(z|x) per example of x, with their log-density where there is one."""
        ...


@dataclass
class Model:
    """A :class:`LatentVariableModel` assembled from parts, for models outside the registry.

    ``posterior``: a callable (x, n) → :class:`PosteriorDraws`, or None where only the
    generative side is needed (AIS from the prior, BDMC, quadrature).
    """

    prior: Prior
    likelihood: Likelihood
    posterior_fn: Callable[[torch.Tensor, int], PosteriorDraws] | None = None
    has_density: bool = True

    @property
    def latent_dim(self) -> int:
        return self.prior.latent_dim

    def posterior(self, x: torch.Tensor, n: int = 1) -> PosteriorDraws:
        if self.posterior_fn is None:
            raise NotImplementedError("this model was built without a posterior")
        return self.posterior_fn(x, n)


def log_joint(model: LatentVariableModel, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x, z) = log p(x|z) + log p(z), per sample and example."""
    return model.likelihood.log_prob(x, z) + model.prior.log_prob(z)


def log_prob_and_mean(likelihood: Likelihood, x: torch.Tensor, z: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(x|z) and E[x|z], from one network pass where the likelihood offers it."""
    both = getattr(likelihood, "log_prob_and_mean", None)
    if both is not None:
        return both(x, z)
    return likelihood.log_prob(x, z), likelihood.mean(z)


def pairwise_log_prob(likelihood: Likelihood, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """log p(x_b | z_c) for every example b of x (B, …) and point c of z (C, D): shape (B, C)."""
    pairwise = getattr(likelihood, "pairwise_log_prob", None)
    if pairwise is not None:
        return pairwise(x, z)
    return likelihood.log_prob(x, z.unsqueeze(1).expand(-1, x.shape[0], -1)).T


def value_and_grad(log_density: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor,
                   closed_form: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(f(z), ∂f/∂z) for a per-row log-density f, detached: ``closed_form`` where given, else autograd."""
    if closed_form is not None:
        value, grad = closed_form(z)
        return value.detach(), grad.detach()
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        value = log_density(z)
        (grad,) = torch.autograd.grad(value.sum(), z)
    return value.detach(), grad


__all__ = ["LatentVariableModel", "Likelihood", "Model", "PosteriorDraws", "Prior", "log_joint",
           "log_prob_and_mean", "pairwise_log_prob", "value_and_grad"]
