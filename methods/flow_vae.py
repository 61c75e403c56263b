"""The VAE with an amortised normalising-flow posterior: the shared part of ``iaf``, ``planar`` and ``householder``.

q(z|x): z_0 = μ(x) + σ(x) ⊙ ε, ε ~ N(0, I), then K invertible steps z_k = f_k(z_{k−1}; φ_k(x))
whose parameters φ_k(x) come out of the encoder with μ and σ (one network pass per batch,
shared by the n draws of an example). Change of variables gives the exact density of the draws
in the same forward pass: log q(z_K|x) = log q_0(z_0|x) − Σ_k log|det ∂z_k/∂z_{k−1}|.
A subclass says how many amortised numbers its flow takes (:meth:`FlowVAE.flow_parameter_dim`)
and applies the steps (:meth:`FlowVAE.flow`). This module registers no method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vaebench.config import require

from .base import GaussianEncoder, Method, MethodConfig, PosteriorDraws


@dataclass(frozen=True)
class FlowVAEConfig(MethodConfig):
    """Settings of every amortised-flow VAE.

    ``flows``: number K of flow steps.

    ``min_scale``: floor of the base Gaussian's σ(x), as in the VAE's encoder.
    """

    flows: int = 1
    min_scale: float = 1e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.flows > 0, f"flows must be positive, got {self.flows}")
        require(self.min_scale > 0, f"min_scale must be positive, got {self.min_scale}")


class FlowVAE(Method):
    """A VAE whose q(z|x) is the VAE's diagonal Gaussian followed by K amortised flow steps.

    The encoder (the study's backbone) outputs 2·latent_dim + :meth:`flow_parameter_dim`
    numbers per example: μ and σ of the base Gaussian (as the VAE's :class:`GaussianEncoder`
    makes them) and the flow's parameters. Trained on the one-sample ELBO, which is also the
    validation objective.
    """

    config: FlowVAEConfig

    def __init__(self, config: FlowVAEConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        d = self.latent_dim
        self.encoder = self.backbone.encoder(self.architecture, self.data_shape, 2 * d + self.flow_parameter_dim())
        self.gaussian = GaussianEncoder(nn.Identity(), config.min_scale)  # [loc, raw scale] → q_0

    def flow_parameter_dim(self) -> int:
        """How many amortised numbers per example the K steps take from the encoder."""
        raise NotImplementedError

    def flow(self, z: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z_0 (…, batch, latent_dim) ↦ z_K through the K steps with the parameters ``params``
        (batch, flow_parameter_dim), and log|det ∂z_K/∂z_0| of shape z.shape[:-1]."""
        raise NotImplementedError

    def base(self, x: torch.Tensor) -> tuple[torch.distributions.Independent, torch.Tensor]:
        """The base Gaussian q_0(z_0|x) and the flow's parameters, from one encoder pass."""
        out = self.encoder(x)
        return self.gaussian(out[..., :2 * self.latent_dim]), out[..., 2 * self.latent_dim:]

    def sample_with_log_q(self, x: torch.Tensor, n: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """n reparameterised draws z_K (n, batch, latent_dim) and their exact log q(z_K|x) (n, batch)."""
        q0, params = self.base(x)
        z0 = q0.rsample((n,))
        z, log_det = self.flow(z0, params)
        return z, q0.log_prob(z0) - log_det

    def posterior(self, x: torch.Tensor, n: int = 1) -> PosteriorDraws:
        return PosteriorDraws(*self.sample_with_log_q(x, n))

    def training_step(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"model": -self.objective(batch).mean()}


__all__ = ["FlowVAE", "FlowVAEConfig"]
