"""Every estimator reads the model through the protocol of vaebench.model, and none assumes N(0, I).

A linear-Gaussian model with a hierarchical, learnable prior (z2 ~ N(m2, s2²), z1 | z2 ~
N(a·z2 + m1, s1²)) and a Gaussian likelihood has log p(x), the ELBO of a Gaussian q and
KL(q ‖ p) in closed form; AIS, BDMC, importance sampling, the ELBO, the Gaussian KL bound
and quadrature are checked against them. The prior is far from N(0, I), so an estimator
that assumed N(0, I) anywhere would miss by nats (checked too). Then every registered
method goes through ``evaluate``, and a plugin method with a learned prior, written as the
README says, gets AIS and importance sampling from the same model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from vaebench.ais import Gaussian, ais_log_likelihood, bdmc
from vaebench.distributions import StandardNormal
from vaebench.evaluation import EvalConfig, evaluate
from vaebench.metrics import elbo, gaussian_moments, importance_sampled_log_likelihood, posterior_pass
from vaebench.methods import METHODS, create_method, list_methods, register
from vaebench.methods.vae import VAE, VAEConfig
from vaebench.model import LatentVariableModel, Model, PosteriorDraws, log_joint
from vaebench.quadrature import aggregate_kl, quadrature_log_likelihood

Normal = torch.distributions.MultivariateNormal


class HierarchicalPrior(nn.Module):
    """z = [z1, z2]: z2 ~ N(m2, s2²), z1 | z2 ~ N(a z2 + m1, s1²), with learnable parameters and
    no closed-form gradient (AIS must use autograd)."""

    latent_dim = 2

    def __init__(self, m1: float = 2.0, m2: float = -1.5, a: float = 0.8, s1: float = 0.4, s2: float = 0.7):
        super().__init__()
        self.m1, self.m2, self.a = (nn.Parameter(torch.tensor(v, dtype=torch.float64)) for v in (m1, m2, a))
        self.log_s1, self.log_s2 = (nn.Parameter(torch.tensor(math.log(v), dtype=torch.float64)) for v in (s1, s2))

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        z1, z2 = z[..., 0], z[..., 1]
        top = torch.distributions.Normal(self.m2, self.log_s2.exp()).log_prob(z2)
        return top + torch.distributions.Normal(self.a * z2 + self.m1, self.log_s1.exp()).log_prob(z1)

    def sample(self, *shape: int) -> torch.Tensor:
        z2 = self.m2 + self.log_s2.exp() * torch.randn(*shape, dtype=torch.float64)
        z1 = self.a * z2 + self.m1 + self.log_s1.exp() * torch.randn(*shape, dtype=torch.float64)
        return torch.stack([z1, z2], -1).detach()

    def joint(self) -> Normal:
        """The same prior as one Gaussian over [z1, z2]."""
        with torch.no_grad():
            s1, s2 = self.log_s1.exp(), self.log_s2.exp()
            mean = torch.stack([self.a * self.m2 + self.m1, self.m2])
            cov = torch.stack([torch.stack([self.a**2 * s2**2 + s1**2, self.a * s2**2]),
                               torch.stack([self.a * s2**2, s2**2])])
            return Normal(mean, cov)


class GaussianLikelihood(nn.Module):
    """p(x|z) = N(W z + b, σ² I) on R^3."""

    def __init__(self) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.tensor([[1.0, -0.5], [0.3, 0.8], [-0.7, 0.4]], dtype=torch.float64))
        self.b = nn.Parameter(torch.tensor([0.2, -0.1, 0.5], dtype=torch.float64))
        self.sigma = 0.6

    def mean(self, z: torch.Tensor) -> torch.Tensor:
        return z.to(self.W.dtype) @ self.W.T + self.b

    def log_prob(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return torch.distributions.Normal(self.mean(z), self.sigma).log_prob(x).sum(-1)

    def sample(self, z: torch.Tensor) -> torch.Tensor:
        return (self.mean(z) + self.sigma * torch.randn_like(self.mean(z))).detach()


@dataclass
class Exact:
    """Closed forms of the linear-Gaussian model."""

    prior: HierarchicalPrior
    likelihood: GaussianLikelihood

    def log_px(self, x: torch.Tensor, prior: Normal | None = None) -> torch.Tensor:
        p = prior or self.prior.joint()
        with torch.no_grad():
            W = self.likelihood.W
            cov = W @ p.covariance_matrix @ W.T + self.likelihood.sigma**2 * torch.eye(3, dtype=torch.float64)
            return Normal(p.mean @ W.T + self.likelihood.b, cov).log_prob(x)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (B, 2) and covariance (2, 2) of the exact p(z|x)."""
        with torch.no_grad():
            p, W, s2 = self.prior.joint(), self.likelihood.W, self.likelihood.sigma**2
            precision = p.precision_matrix + W.T @ W / s2
            cov = torch.linalg.inv(precision)
            mean = (p.precision_matrix @ p.mean + (x - self.likelihood.b) @ W / s2) @ cov
            return mean, cov


def _model(shift: float = 0.3, widen: float = 1.5, density: bool = True) -> tuple[Model, Exact, torch.Tensor]:
    """The model with q(z|x) a diagonal Gaussian near (not at) the exact posterior, and 6 data points."""
    prior, likelihood = HierarchicalPrior(), GaussianLikelihood()
    exact = Exact(prior, likelihood)

    def q(x: torch.Tensor) -> torch.distributions.Distribution:
        mean, cov = exact.posterior(x)
        scale = widen * cov.diagonal().sqrt().expand_as(mean)
        return torch.distributions.Independent(torch.distributions.Normal(mean + shift, scale), 1)

    def posterior(x: torch.Tensor, n: int) -> PosteriorDraws:
        dist = q(x)
        z = dist.sample((n,))
        return PosteriorDraws(z, dist.log_prob(z) if density else None)

    model = Model(prior, likelihood, posterior, has_density=density)
    model.q = q  # for the closed-form ELBO and KL below
    with torch.random.fork_rng():
        torch.manual_seed(3)
        x = likelihood.sample(prior.sample(6))
    return model, exact, x


def test_the_model_satisfies_the_protocol_and_is_far_from_a_standard_normal_prior():
    model, exact, x = _model()
    assert isinstance(model, LatentVariableModel)
    standard = Normal(torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64))
    # what an estimator that assumed N(0, I) would target: nats away, so every check below can fail
    assert (exact.log_px(x) - exact.log_px(x, standard)).abs().min() > 1.0


def test_quadrature_under_a_hierarchical_prior_is_exact():
    model, exact, x = _model()
    torch.testing.assert_close(quadrature_log_likelihood(model, x, tol=1e-6), exact.log_px(x), atol=1e-4, rtol=0)


@pytest.mark.parametrize("start", ["prior", "posterior"])
def test_ais_under_a_hierarchical_prior_matches_the_exact_log_likelihood(start):
    model, exact, x = _model()
    initial = None
    if start == "posterior":
        mean, cov = exact.posterior(x)
        initial = Gaussian(mean + 0.2, 1.3 * cov.expand(len(x), 2, 2))
    chains = 32
    result = ais_log_likelihood(model, x, n_chains=chains, n_steps=150, leapfrog_steps=5, initial=initial, seed=0)
    error = result.log_likelihood - exact.log_px(x)
    # Monte Carlo error of log mean_c w_c by the delta method: Var(w)/E[w]² ≈ C/ESS − 1
    se = ((chains / result.ess - 1) / chains).sqrt()
    assert (error.abs() < 4 * se + 0.02).all(), (error, se)
    # the parameters of the model's prior and likelihood were frozen during AIS and are trainable again
    assert all(p.requires_grad for p in (*model.prior.parameters(), *model.likelihood.parameters()))


def test_importance_sampling_and_elbo_use_the_models_prior():
    model, exact, x = _model()
    torch.manual_seed(1)
    k = 20000
    is_estimate = importance_sampled_log_likelihood(model, x, k)
    # its Monte Carlo error by the delta method, from another set of k weights
    z, log_q = model.posterior(x, k)
    w = torch.softmax(log_joint(model, z, x) - log_q, 0)
    se = ((k * w.square().sum(0) - 1) / k).sqrt()
    error = is_estimate - exact.log_px(x)
    assert (error.abs() < 4 * se).all() and (se < 0.01).all(), (error, se)
    # the ELBO of a Gaussian q in closed form: E_q log p(x|z) + E_q log p(z) + H(q)
    q, lik, p = model.q(x), model.likelihood, model.prior.joint()
    m, v = q.base_dist.loc, q.base_dist.scale.square()
    with torch.no_grad():
        expected_lik = lik.log_prob(x, m) - (v @ lik.W.square().T).sum(-1) / (2 * lik.sigma**2)
        expected_prior = p.log_prob(m) - 0.5 * (p.precision_matrix.diagonal() * v).sum(-1)
        closed = expected_lik + expected_prior + q.entropy()
    n = 40000
    estimate = elbo(model, x, n)
    z, log_q = model.posterior(x, n)
    se = (log_joint(model, z, x) - log_q).std(0) / math.sqrt(n)
    assert ((estimate - closed).abs() < 4 * se).all(), (estimate - closed, se)
    assert (closed < exact.log_px(x)).all()


def test_the_gaussian_kl_bound_is_the_exact_kl_for_a_gaussian_posterior_under_any_prior():
    model, exact, x = _model(density=False)
    torch.manual_seed(2)
    result = posterior_pass(model, x, 20000)
    q, p = model.q(x), model.prior.joint()
    with torch.no_grad():
        exact_kl = torch.stack([torch.distributions.kl_divergence(
            Normal(q.base_dist.loc[b], torch.diag(q.base_dist.scale[b].square())), p) for b in range(len(x))])
    torch.testing.assert_close(result.columns["kl_gaussian_lower_bound"], exact_kl, atol=0.03, rtol=0)


def test_bdmc_simulates_from_the_models_prior_and_brackets_the_exact_answer():
    model, exact, _ = _model()
    result = bdmc(model, 64, n_chains=8, n_steps=100, leapfrog_steps=5, seed=4)
    p = model.prior.joint()
    # 64 draws of z from the hierarchical prior, not N(0, I): the mean is within 4 SE of the prior's
    se = p.covariance_matrix.diagonal().sqrt() / 8
    assert ((result.z.mean(0) - p.mean).abs() < 4 * se).all(), result.z.mean(0)
    truth = exact.log_px(result.x)
    assert (result.lower.mean() - truth.mean()).item() < 0.02
    assert (result.upper.mean() - truth.mean()).item() > -0.02
    assert (result.upper - result.lower).mean().item() < 0.05


def test_the_aggregate_kl_uses_the_models_prior():
    prior = HierarchicalPrior()
    # posterior draws that are prior draws: the aggregate posterior is the prior, KL 0
    model = Model(prior, GaussianLikelihood(), lambda x, n: PosteriorDraws(prior.sample(n, len(x)).float(), None),
                  has_density=False)
    torch.manual_seed(5)
    kl = aggregate_kl(model, torch.zeros(40, 3), samples=400_000)
    assert abs(kl) < 0.01, kl


# --- every registered method, through evaluate ---------------------------------------------------

SMALL = EvalConfig(examples=8, is_samples=16, moment_samples=16, batch_size=8, ais_steps=3, ais_chains=2,
                   ais_leapfrog=2, ais_pilot_steps=2, bdmc_examples=2)


@pytest.mark.parametrize("name", list_methods())
def test_every_registered_method_goes_through_evaluate(name, tiny_batch):
    from vaebench.backbones import Architecture

    method = create_method(name, None, data_shape=(64,), latent_dim=2, architecture=Architecture(hidden=(16,)))
    result = evaluate(method, tiny_batch, SMALL, progress=False)
    per = result.per_example
    assert {"recon_bernoulli_nll", "recon_mse", "recon_pixel_error", "posterior_sd_median", "log_likelihood_ais",
            } <= set(per)
    assert result.summary["bdmc_gap"] == result.summary["bdmc_gap"]  # computed, not NaN
    declared = {c.name for c in type(method).columns}
    assert {c.name for c in result.columns} == declared and declared <= set(per)
    if method.has_density:
        # IS and the ELBO from the same 16 draws: log-mean-exp ≥ mean, exactly
        assert (per["log_likelihood_is"] >= per["elbo"] - 1e-4).all()
        assert "kl_gaussian_lower_bound" not in per
    else:
        assert {"kl_gaussian_lower_bound", "elbo_upper_bound"} <= set(per) and "elbo" not in per
    objective = method.objective(tiny_batch[:5])
    assert objective.shape == (5,) and torch.isfinite(objective).all()
    assert method.objective_name.isidentifier()


@dataclass(frozen=True)
class ShiftedPriorConfig(VAEConfig):
    shift: float = 2.0


class ShiftedNormal(nn.Module):
    """A learned prior N(loc, I), loc a parameter: a model the N(0, I) assumption gets wrong."""

    def __init__(self, latent_dim: int, shift: float) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.loc = nn.Parameter(torch.full((latent_dim,), shift))

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return StandardNormal(self.latent_dim).log_prob(z - self.loc)

    def sample(self, *shape: int) -> torch.Tensor:
        return (self.loc + torch.randn(*shape, self.latent_dim, device=self.loc.device)).detach()


def test_a_plugin_with_a_learned_prior_gets_ais_and_is_from_the_same_model(tiny_batch):
    @register("test-shifted-prior-vae")
    class ShiftedPriorVAE(VAE):
        config_class = ShiftedPriorConfig

        def __init__(self, config, **kwargs):
            super().__init__(config, **kwargs)
            self.prior = ShiftedNormal(self.latent_dim, config.shift)  # the VAE built the encoder

    try:
        from vaebench.backbones import Architecture

        method = create_method("test-shifted-prior-vae", None, data_shape=(64,), latent_dim=2,
                               architecture=Architecture(hidden=(16,)))
        config = EvalConfig(examples=8, is_samples=1000, batch_size=8, ais_steps=200, ais_chains=16,
                            ais_initial="prior", quadrature=True)
        torch.manual_seed(6)
        result = evaluate(method, tiny_batch, config, progress=False)
        per = result.per_example
        exact, ais, is_ = per["exact_log_likelihood"], per["log_likelihood_ais"], per["log_likelihood_is"]
        se = ((16 / per["ais_ess"] - 1) / 16) ** 0.5  # delta-method Monte Carlo error of AIS
        assert (abs(ais - exact) < 4 * se + 0.05).all(), (ais - exact, se)
        assert float((is_ - exact).mean()) < 0.05  # a lower bound in expectation, of the same model
        # AIS under N(0, I) targets another model, nats away from this one's exact answer
        standard = Model(StandardNormal(2), method.likelihood)
        wrong = ais_log_likelihood(standard, tiny_batch[:8], n_chains=16, n_steps=200, seed=0).log_likelihood
        assert abs(wrong.numpy() - exact).mean() > 1.0
    finally:
        METHODS._entries.pop("test-shifted-prior-vae")


def test_the_readmes_method_example_runs_through_evaluate(tiny_batch):
    """The 'Adding a method' code of README.md, as written, registers and evaluates."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## Adding a method"):]
    code = section[section.index("```python") + len("```python"):]
    code = code[:code.index("```")]
    namespace: dict = {}
    try:
        exec(compile(code, "README.md", "exec"), namespace)
        from vaebench.backbones import Architecture

        method = create_method("my-vae", {"beta": 1.0}, data_shape=(64,), latent_dim=2,
                               architecture=Architecture(hidden=(16,)))
        result = evaluate(method, tiny_batch, SMALL, progress=False)
        assert [c.name for c in result.columns] == ["kl"] and np.isfinite(result.per_example["kl"]).all()
        losses = method.update(tiny_batch)
        assert torch.isfinite(losses["model"])
    finally:
        METHODS._entries.pop("my-vae", None)
