"""The shared part of methods that train on codes z = f(x) (the adversarial and Wasserstein
auto-encoders): a deterministic or Gaussian encoder, one training code per example, and the
posterior that evaluation reads, a point mass where the encoder is deterministic."""

from __future__ import annotations

import math
from typing import Any

import torch

from .base import LOG_2PI, GaussianEncoder, Method, PosteriorDraws


class CodeMethod(Method):
    """A method whose config has ``encoder`` (``deterministic`` or ``gaussian``) and, optionally,
    ``posterior_noise_std``: s > 0 evaluates the deterministic encoder with q_s(z|x) = N(f(x), s²I)."""

    def __init__(self, config: Any, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        gaussian = config.encoder == "gaussian"
        body = self.backbone.encoder(self.architecture, self.data_shape, (2 if gaussian else 1) * self.latent_dim)
        self.encoder = GaussianEncoder(body) if gaussian else body

    @property
    def _noise_std(self) -> float:
        return getattr(self.config, "posterior_noise_std", 0.0)

    def code(self, x: torch.Tensor) -> torch.Tensor:
        """One training code per example: f(x), or a reparameterised Gaussian draw."""
        if self.config.encoder == "gaussian":
            return self.encoder(x).rsample()
        return self.encoder(x)

    @property
    def has_density(self) -> bool:
        """The Gaussian encoder's q(z|x), or N(f(x), s²I) with s > 0, has a density; the
        deterministic encoder's point mass has none."""
        return self.config.encoder == "gaussian" or self._noise_std > 0

    def posterior(self, x: torch.Tensor, n: int = 1) -> PosteriorDraws:
        """n draws from q(z|x); the deterministic encoder repeats f(x), plus N(0, s²) noise when
        ``posterior_noise_std`` s > 0.

        With the deterministic encoder and no noise q(z|x) is a point mass: no density, so no
        ELBO (its entropy is −∞) and no importance sampling; AIS, which then starts from the
        prior, still gives the decoder's log-likelihood.
        """
        if self.config.encoder == "gaussian":
            q = self.encoder(x)
            z = q.rsample((n,))
            return PosteriorDraws(z, q.log_prob(z))
        code = self.encoder(x)
        z = code.expand(n, *x.shape[:-1], self.latent_dim)
        s = self._noise_std
        if s == 0:
            return PosteriorDraws(z, None)
        z = z + s * torch.randn_like(z)
        u = (z - code) / s
        return PosteriorDraws(z, -0.5 * (u.square().sum(-1) + self.latent_dim * (LOG_2PI + 2 * math.log(s))))
