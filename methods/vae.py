"""The standard variational autoencoder (Kingma & Welling 2014; Rezende et al. 2014)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import GaussianEncoder, Method, MethodConfig, PosteriorDraws
from .registry import register


@dataclass(frozen=True)
class VAEConfig(MethodConfig):
    """``analytic_kl``: train with the closed-form KL(q(z|x) ‖ p(z)) instead of its one-sample
    Monte Carlo estimate (lower-variance gradients; the evaluated ELBO is the same quantity)."""

    analytic_kl: bool = True


@register("vae")
class VAE(Method):
    """Gaussian q(z|x) with diagonal covariance, N(0, I) prior, Bernoulli decoder."""

    config_class = VAEConfig
    config: VAEConfig

    def __init__(self, config: VAEConfig, **kwargs) -> None:
        super().__init__(config, **kwargs)
        self.encoder = GaussianEncoder(
            self.backbone.encoder(self.architecture, self.data_shape, 2 * self.latent_dim)
        )

    def encode(self, x: torch.Tensor) -> torch.distributions.Independent:
        """q(z|x) as a distribution."""
        return self.encoder(x)

    def posterior(self, x: torch.Tensor, n: int = 1) -> PosteriorDraws:
        q = self.encode(x)  # one encoder pass for the draws and their log q
        z = q.rsample((n,))
        return PosteriorDraws(z, q.log_prob(z))

    def training_step(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        q = self.encode(batch)
        z = q.rsample()
        if self.config.analytic_kl:
            loc, scale = q.base_dist.loc, q.base_dist.scale
            kl = 0.5 * (loc.square() + scale.square() - 1).sum(-1) - scale.log().sum(-1)
        else:
            kl = q.log_prob(z) - self.prior.log_prob(z)
        elbo = self.decoder.log_prob(batch, z) - kl
        return {"model": -elbo.mean()}
