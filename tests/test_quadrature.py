"""The grid estimators of :mod:`vaebench.quadrature` against models whose answers are known exactly."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vaebench.distributions import BernoulliDecoder, StandardNormal
from vaebench.methods import create_method
from vaebench.model import LatentVariableModel, PosteriorDraws
from vaebench.quadrature import QuadratureError, aggregate_kl, prior_bin_mass, quadrature_log_likelihood


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
    """A stand-in model with the N(0, I) prior whose posterior is N(loc, diag scale²) for every x."""

    latent_dim = 2
    has_density = True

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor) -> None:
        self.loc, self.scale = loc, scale
        self.prior = StandardNormal(2)
        self.likelihood = BernoulliDecoder(Scaled(torch.ones(2), torch.zeros(2)), (2,))  # unused by aggregate_kl

    def posterior(self, x: torch.Tensor, n: int = 1) -> PosteriorDraws:
        z = self.loc + self.scale * torch.randn(n, x.shape[0], 2)
        return PosteriorDraws(z, torch.distributions.Normal(self.loc, self.scale).log_prob(z).sum(-1))


@pytest.mark.parametrize(("loc", "scale"), [((0.0, 0.0), (1.0, 1.0)), ((1.0, -0.5), (0.4, 0.8))])
def test_aggregate_kl_matches_closed_form(loc, scale):
    torch.manual_seed(0)
    loc, scale = torch.tensor(loc), torch.tensor(scale)
    exact = (0.5 * (loc.square() + scale.square() - 1) - scale.log()).sum().item()
    model = FixedGaussianPosterior(loc, scale)
    assert isinstance(model, LatentVariableModel)
    estimate = aggregate_kl(model, torch.zeros(4, 2))
    # Error budget (see the module docstring): sampling sd sqrt(Var[log q/p] / N) ≈ 0.002
    # for N = 4e5, and a discretisation bias O(h²/σ²) ≈ 0.001 for bins of width h = 0.05.
    assert estimate == pytest.approx(exact, abs=0.01)



def _binned_normal_mass(loc: torch.Tensor, scale: torch.Tensor, limit: float = 6.0, bins: int = 240) -> torch.Tensor:
    """The exact mass of N(loc, diag scale²) in each bin of aggregate_kl's grid, plus the overflow bin last."""
    edges = torch.linspace(-limit, limit, bins + 1, dtype=torch.float64)
    per_axis = [torch.special.ndtr((edges - loc[i].double()) / scale[i].double()).diff() for i in range(2)]
    inside = torch.outer(*per_axis).flatten()
    return torch.cat([inside, (1 - inside.sum()).reshape(1)])


def test_prior_bin_mass_matches_the_standard_normal_cdf():
    """The midpoint sub-grid's bin masses against the exact N(0, I) mass of each bin (products of
    normal-CDF differences). The midpoint rule's relative error is h²(z² − 1)/24 per axis for
    sub-cells of width h = 0.0125: about 1e-5 near the origin, 1e-4 where |z| ≈ 4."""
    limit, bins = 6.0, 240
    mass = prior_bin_mass(FixedGaussianPosterior(torch.zeros(2), torch.ones(2)), limit, bins, torch.device("cpu"))
    exact = _binned_normal_mass(torch.zeros(2), torch.ones(2), limit, bins)
    assert mass.shape == (bins * bins + 1,) and mass.dtype == torch.float64
    heavy = exact[:-1] > 1e-10  # the bins that hold all but 1e-6 of the mass
    assert exact[:-1][heavy].sum() > 1 - 1e-6
    relative = (mass[:-1] - exact[:-1]).abs() / exact[:-1]
    assert relative[heavy].max() < 3e-4
    central = torch.zeros(bins, bins, dtype=torch.bool)
    central[100:140, 100:140] = True  # |z_i| < 1
    assert relative[central.flatten()].max() < 2e-5
    assert (mass[:-1] - exact[:-1]).abs().sum() < 2e-5


def test_aggregate_kl_is_finite_when_draws_leave_the_box():
    """A posterior wider than the prior puts draws outside [−6, 6]² (0.36% here). They fall in the
    overflow bin, whose prior mass is small but positive, so the binned KL is finite; its exact
    value comes from the normal CDF of both distributions on the same bins."""
    torch.manual_seed(0)
    loc, scale = torch.tensor([0.5, 0.0]), torch.tensor([2.0, 1.5])
    model = FixedGaussianPosterior(loc, scale)
    p = prior_bin_mass(model, 6.0, 240, torch.device("cpu"))
    assert p[-1] > 0  # the prior's own mass outside the box, 3.9e-9
    q = _binned_normal_mass(loc, scale)
    binned = (q * (q.log() - _binned_normal_mass(torch.zeros(2), torch.ones(2)).log())).sum().item()
    estimate = aggregate_kl(model, torch.zeros(4, 2))
    assert math.isfinite(estimate)
    # the overflow bin's log-ratio (≈ 14 nats, 0.36% of the draws) adds a sampling sd of ≈ 0.002
    assert estimate == pytest.approx(binned, abs=0.03)


def test_quadrature_widens_its_box_to_hold_a_prior_that_left_it():
    """A learned prior far from the origin: the box doubles until it holds the prior's mass, and the
    answer is the exact one; a prior that no box of the allowed sizes holds is refused."""
    from vaebench.model import Model

    class Shifted(torch.nn.Module):
        latent_dim = 2

        def __init__(self, loc: float) -> None:
            super().__init__()
            self.loc = loc

        def log_prob(self, z: torch.Tensor) -> torch.Tensor:
            return torch.distributions.Normal(self.loc, 0.5).log_prob(z).sum(-1)

    class Flat(torch.nn.Module):
        def log_prob(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
            return torch.zeros(z.shape[:-1])  # p(x|z) = 1: log p(x) is the prior's total mass, 0

    x = torch.zeros(3, 1)
    wide = quadrature_log_likelihood(Model(Shifted(8.0), Flat()), x)
    assert wide.abs().max() < 1e-4  # in [−6, 6]² it would be log P(z1 < 6, z2 < 6) ≈ −21 for loc 8
    with pytest.raises(QuadratureError, match="leaves the quadrature box"):
        quadrature_log_likelihood(Model(Shifted(100.0), Flat()), x)
