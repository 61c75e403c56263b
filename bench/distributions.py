"""The standard parts of the model protocol (:mod:`vaebench.model`): the N(0, I) prior and the
Bernoulli likelihood that the suite's methods share, each with the protocol's closed-form
fast paths."""

from __future__ import annotations

import math

import torch
from torch import nn

LOG_2PI = math.log(2 * math.pi)


class StandardNormal(nn.Module):
    """The prior p(z) = N(0, I) over ``latent_dim`` dimensions."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        # A buffer, so that the prior follows the model to its device.
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    @property
    def dim(self) -> int:
        return self.latent_dim

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z), summed over the last dimension."""
        return -0.5 * (z.square().sum(-1) + self.latent_dim * LOG_2PI)

    def value_and_grad(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log p(z) and its gradient −z, without autograd."""
        return self.log_prob(z), -z

    def sample(self, *shape: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(*shape, self.latent_dim, device=self._anchor.device, dtype=self._anchor.dtype,
                           generator=generator)


def bernoulli_log_prob(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Σ_d log Bernoulli(x_d; sigmoid(logits_d)), stable for large |logits|."""
    return (x * logits - nn.functional.softplus(logits)).sum(-1)


class BernoulliDecoder(nn.Module):
    """p(x|z): independent Bernoulli pixels whose logits a network computes from z."""

    def __init__(self, net: nn.Module, data_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.net = net
        self.data_shape = tuple(data_shape)

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)

    def log_prob(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x|z) per example; z may carry leading sample dimensions, x broadcasts over them."""
        return bernoulli_log_prob(x, self.logits(z))

    def mean(self, z: torch.Tensor) -> torch.Tensor:
        """E[x|z], the pixel probabilities."""
        return torch.sigmoid(self.logits(z))

    def sample(self, z: torch.Tensor) -> torch.Tensor:
        """Binary x ~ p(x|z)."""
        return torch.bernoulli(self.mean(z))

    def log_prob_and_mean(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log p(x|z) and E[x|z] from one pass of the network."""
        logits = self.logits(z)
        return bernoulli_log_prob(x, logits), torch.sigmoid(logits)

    def pairwise_log_prob(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x_b|z_c) for every example b and point c, (B, C): one matmul instead of a
        (B, C, pixels) tensor."""
        logits = self.logits(z)
        return x @ logits.T - nn.functional.softplus(logits).sum(-1)

    def value_and_grad(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log p(x|z) and ∂/∂z of it, detached.

        The gradient at the logits, x − σ(logits), is written out and backpropagated through
        the network alone: autograd through the log-density would make several more full
        passes over the (samples × batch) × pixels logits.
        """
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            logits = self.logits(z)
        detached = logits.detach()
        ll = (x * detached).sum(-1) - nn.functional.softplus(detached).sum(-1)
        (grad,) = torch.autograd.grad(logits, z, grad_outputs=x - torch.sigmoid(detached))
        return ll, grad


__all__ = ["BernoulliDecoder", "LOG_2PI", "StandardNormal", "bernoulli_log_prob"]
