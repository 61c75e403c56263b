"""The grid estimators of :mod:`vaebench.quadrature` against models whose answers are known exactly."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vaebench.methods import create_method
from vaebench.quadrature import QuadratureError, aggregate_kl, quadrature_log_likelihood


class Scaled(nn.Module):
    """logits = scale ⊙ z (+ bias): a decoder whose marginal is known in closed form."""

    def __init__(self, scale: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.scale, self.bias = scale, bias

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.scale + self.bias


def model_with_decoder(net: nn.Module, latent_dim: int = 2):
    method = create_method("vae", {}, data_shape=(2,), latent_dim=latent_dim)
    method.decoder.net = net
    return method


def test_decoder_ignoring_z_gives_its_own_likelihood():
    bias = torch.tensor([0.7, -1.9])
    method = model_with_decoder(Scaled(torch.zeros(2), bias))
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    exact = (x * bias - nn.functional.softplus(bias)).sum(-1)  # p(x) = p(x|z) for every z
    assert torch.allclose(quadrature_log_likelihood(method, x), exact, atol=1e-3, rtol=0)


@pytest.mark.parametrize("sharpness", [1.0, 30.0])
def test_symmetric_decoder_has_uniform_marginal(sharpness):
    # Pixel d has logit a·z_d: since σ(−t) = 1 − σ(t) and N(0, 1) is symmetric, each pixel is
    # a fair coin whatever a, and the two are independent, so p(x) = 1/4 for all four x.
    # A large a makes p(x|z) nearly a step function: the refinement must handle it.
    method = model_with_decoder(Scaled(torch.full((2,), sharpness), torch.zeros(2)))
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    result = quadrature_log_likelihood(method, x)
    assert torch.allclose(result, torch.full((4,), -math.log(4)), atol=1e-3, rtol=0)


def test_quadrature_refuses_other_latent_sizes():
    method = create_method("vae", {}, data_shape=(2,), latent_dim=3)
    with pytest.raises(QuadratureError):
        quadrature_log_likelihood(method, torch.zeros(1, 2))


class FixedGaussianPosterior:
    """A stand-in method whose posterior is N(loc, diag scale²) for every x."""

    latent_dim = 2

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor) -> None:
        self.loc, self.scale = loc, scale

    def sample_posterior(self, x: torch.Tensor, n: int = 1) -> torch.Tensor:
        return self.loc + self.scale * torch.randn(n, x.shape[0], 2)


@pytest.mark.parametrize(("loc", "scale"), [((0.0, 0.0), (1.0, 1.0)), ((1.0, -0.5), (0.4, 0.8))])
def test_aggregate_kl_matches_closed_form(loc, scale):
    torch.manual_seed(0)
    loc, scale = torch.tensor(loc), torch.tensor(scale)
    exact = (0.5 * (loc.square() + scale.square() - 1) - scale.log()).sum().item()
    estimate = aggregate_kl(FixedGaussianPosterior(loc, scale), torch.zeros(4, 2))
    # Error budget (see the module docstring): sampling sd sqrt(Var[log q/p] / N) ≈ 0.002
    # for N = 4e5, and a discretisation bias O(h²/σ²) ≈ 0.001 for bins of width h = 0.05.
    assert estimate == pytest.approx(exact, abs=0.01)
