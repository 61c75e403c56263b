"""Two stochastic layers (vae-2l, iwae-2l): the prior is p(z2) p(z1|z2) and integrates to 1, its
samples are ancestral draws of that density, q(z1|x) q(z2|z1) has the exact log q, the likelihood
reads z1 alone, and AIS over both layers from the prior agrees with importance sampling and with
quadrature on a small model (d1 = d2 = 1); BDMC simulates from the hierarchical prior; training
steps run on the ELBO and on the k-sample bound; configs are checked."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vaebench.ais import ais_log_likelihood, bdmc
from vaebench.backbones import Architecture
from vaebench.errors import ConfigError
from vaebench.methods import create_method, method_config
from vaebench.metrics import importance_sampled_log_likelihood
from vaebench.model import LatentVariableModel, log_joint
from vaebench.quadrature import midpoint_grid, quadrature_log_likelihood

TOY = torch.eye(4)
LOG_2PI = math.log(2 * math.pi)


def make(name: str = "vae-2l", **params):
    """A two-layer model on R^4 with d1 = d2 = 1 and 8-unit networks, weights set so that the
    decoder depends strongly on z1, p(z1|z2) bends with z2 (σ about 0.2 to 0.7), and q is wide."""
    torch.manual_seed(0)
    method = create_method(name, {"top_latent_dim": 1, "top_hidden": [8], **params}, data_shape=(4,),
                           latent_dim=1, architecture=Architecture(hidden=(8,)))
    with torch.no_grad():
        for layer in (method.decoder.net[0], method.decoder.net[-1]):
            layer.weight.mul_(3.0)
        first, last = method.prior.conditional.body[0], method.prior.conditional.body[-1]
        first.weight.mul_(2.0)
        first.bias.uniform_(-1.0, 1.0)
        last.weight[0] *= 3.0  # the mean of z1 given z2: a bent function of z2
        last.weight[1] *= 0.5
        last.bias[:] = torch.tensor([0.5, -1.0])  # log σ near −1
        for head in (method.encoder.body.net[-1], method.encoder_top.body[-1]):
            head.bias[1] = math.log(1.5)  # q wider than the posterior, so that IS has light tails
    return method


def conditional_by_hand(method, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and σ of p(z1|z2) from the weights: tanh(W1 z2 + b1), then (μ, log σ) = W2 h + b2."""
    first, last = method.prior.conditional.body[0], method.prior.conditional.body[-1]
    h = torch.tanh(z2.unsqueeze(-1) * first.weight[:, 0] + first.bias)
    out = h @ last.weight.T + last.bias
    return out[..., 0], out[..., 1].exp()


def box(method) -> float:
    """Half-width of a square holding the prior's mass: 9 σ in z2 (N(0, 1)) and 9 σ of p(z1|z2)
    beyond its mean for every z2 in that range."""
    z2 = torch.linspace(-9, 9, 2001)
    with torch.no_grad():
        loc, scale = conditional_by_hand(method, z2)
    return max(9.0, (loc.abs() + 9 * scale).max().item())


# --- the prior ----------------------------------------------------------------------------------------

def test_the_latent_vector_is_z1_then_z2_and_the_study_latent_size_is_z1s():
    method = make()
    assert isinstance(method, LatentVariableModel)
    assert (method.latent_dim, method.prior.latent_dim, method.bottom_latent_dim, method.top_latent_dim) == (2, 2, 1, 1)
    assert method.decoder.net[0].in_features == 1  # the shared decoder is built on z1's size
    # unset, z2 has half of z1's units rounded up, as the authors' 100 and 50
    default = create_method("iwae-2l", {"k": 2}, data_shape=(4,), latent_dim=32, architecture=Architecture(hidden=(8,)))
    assert (default.latent_dim, default.top_latent_dim, default.config.top_hidden) == (48, 16, (100, 100))
    assert default.posterior(TOY, 3).z.shape == (3, 4, 48) and default.prior.sample(5).shape == (5, 48)


def test_prior_log_prob_is_the_two_gaussian_layers_by_hand():
    method = make()
    z = torch.randn(3, 5, 2) * 2
    z1, z2 = z[..., 0], z[..., 1]
    loc, scale = conditional_by_hand(method, z2)
    by_hand = (-0.5 * z2**2 - 0.5 * LOG_2PI) + (-0.5 * ((z1 - loc) / scale) ** 2 - scale.log() - 0.5 * LOG_2PI)
    with torch.no_grad():
        torch.testing.assert_close(method.prior.log_prob(z), by_hand, atol=1e-5, rtol=1e-5)
        # the authors' σ = exp(linear(h)): the raw output is log σ
        q = method.prior.conditional(z2.unsqueeze(-1))
        torch.testing.assert_close(q.base_dist.scale.squeeze(-1), scale)


def test_the_prior_integrates_to_one():
    method = make()
    z, log_area = midpoint_grid(box(method), 1024)
    with torch.no_grad():
        mass = torch.logsumexp(method.prior.log_prob(z).double() + log_area, 0).exp().item()
    assert abs(mass - 1) < 1e-6, mass


def test_prior_samples_are_ancestral_draws_of_its_density():
    """Moments of 100,000 draws against the same moments of exp(log_prob) on a grid, within 4 SE."""
    method = make()
    torch.manual_seed(1)
    n = 100_000
    draws = method.prior.sample(n).double()
    assert draws.shape == (n, 2) and not draws.requires_grad
    z, log_area = midpoint_grid(box(method), 1024)
    with torch.no_grad():
        weight = (method.prior.log_prob(z).double() + log_area).exp()
    z = z.double()
    features = lambda v: torch.stack([v[:, 0], v[:, 1], v[:, 0] ** 2, v[:, 1] ** 2, v[:, 0] * v[:, 1]], -1)  # noqa: E731
    exact = (weight.unsqueeze(-1) * features(z)).sum(0)
    f = features(draws)
    se = f.std(0) / math.sqrt(n)
    assert ((f.mean(0) - exact).abs() < 4 * se).all(), (f.mean(0) - exact, se)
    # z1 and z2 are dependent (so a product of marginals would fail the cross moment)
    cov = exact[4] - exact[0] * exact[1]
    assert abs(cov) > 20 * se[4], cov


# --- posterior and likelihood --------------------------------------------------------------------------

def log_q_at(method, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """log q(z1|x) + log q(z2|z1) at given points z (…, B, 2), by hand from the layers' outputs."""
    out1 = method.encoder.body(x)  # (B, 2): μ, log σ of q(z1|x)
    z1, z2 = z[..., :1], z[..., 1:]
    out2 = method.encoder_top.body(z1)  # (…, B, 2): μ, log σ of q(z2|z1)

    def log_normal(v, out):
        return -0.5 * ((v[..., 0] - out[..., 0]) / out[..., 1].exp()) ** 2 - out[..., 1] - 0.5 * LOG_2PI

    return log_normal(z1, out1) + log_normal(z2, out2)


def test_posterior_log_q_is_exact_and_integrates_to_one():
    method = make()
    with torch.no_grad():
        draws = method.posterior(TOY, 7)
        assert draws.z.shape == (7, 4, 2)
        torch.testing.assert_close(draws.log_q, log_q_at(method, TOY, draws.z))
        z, log_area = midpoint_grid(12.0, 1024)
        log_q = log_q_at(method, TOY, z.unsqueeze(1).expand(-1, 4, -1))
        mass = torch.logsumexp(log_q.double() + log_area, 0).exp()
    torch.testing.assert_close(mass, torch.ones(4, dtype=torch.float64), atol=1e-6, rtol=0)


def test_the_likelihood_reads_z1_alone_and_its_gradient_is_zero_in_z2():
    method = make()
    z = torch.randn(6, 4, 2)
    moved = z.clone()
    moved[..., 1] += 5.0
    lik = method.likelihood
    with torch.no_grad():
        torch.testing.assert_close(lik.log_prob(TOY, z), lik.log_prob(TOY, moved))
        torch.testing.assert_close(lik.log_prob(TOY, z), method.decoder.log_prob(TOY, z[..., :1]))
        torch.testing.assert_close(lik.mean(z), method.decoder.mean(z[..., :1]))
    value, grad = lik.value_and_grad(TOY, z)
    z_ = z.clone().requires_grad_(True)
    (autograd,) = torch.autograd.grad(lik.log_prob(TOY, z_).sum(), z_)
    torch.testing.assert_close(value, lik.log_prob(TOY, z).detach())
    torch.testing.assert_close(grad, autograd)
    assert (grad[..., 1] == 0).all()
    grid = torch.randn(10, 2)
    torch.testing.assert_close(lik.pairwise_log_prob(TOY, grid),
                               lik.log_prob(TOY, grid.unsqueeze(1).expand(-1, 4, -1)).T.detach())


# --- estimators over both layers ----------------------------------------------------------------------

def test_ais_over_both_layers_agrees_with_importance_sampling_and_quadrature():
    method = make()
    x = TOY
    exact = quadrature_log_likelihood(method, x, limit=box(method)).double()  # to 1e-3 nats

    chains = 32
    ais = ais_log_likelihood(method, x, n_chains=chains, n_steps=100, leapfrog_steps=5, seed=0)  # from the prior
    ais_se = ((chains / ais.ess - 1) / chains).sqrt()  # delta method: Var(w)/E[w]² ≈ C/ESS − 1
    ais_error = ais.log_likelihood.double() - exact
    assert (ais_error.abs() < 4 * ais_se + 1e-3).all(), (ais_error, ais_se)

    k = 20_000
    torch.manual_seed(2)
    with torch.no_grad():
        is_estimate = importance_sampled_log_likelihood(method, x, k).double()
        w = torch.softmax(method.log_weights(x, k), 0)  # another k draws for the delta method's SE
    is_se = ((k * w.square().sum(0) - 1) / k).sqrt().double()
    is_error = is_estimate - exact
    assert (is_error.abs() < 4 * is_se + 1e-3).all(), (is_error, is_se)
    assert (is_se < 0.05).all(), is_se  # sharp enough to catch an error of a tenth of a nat
    # the two Monte Carlo estimates agree with each other too
    assert ((ais.log_likelihood.double() - is_estimate).abs() < 4 * (ais_se**2 + is_se**2).sqrt() + 2e-3).all()


def test_bdmc_simulates_from_the_hierarchical_prior():
    """BDMC's pairs are z from the prior's ancestral sampler, then x ~ p(x|z1), under its seed. (That
    its bounds bracket the exact log p(x) under a hierarchical prior is tested in
    test_model_protocol.py; here, with 8 chains on 16 pairs, the mean reverse-AIS bound minus the
    exact value was −0.039 with a per-example sd of 0.108, i.e. within its Monte Carlo error, and
    +0.007 ± 0.010 with 32 chains, so the short run below checks the simulation only.)"""
    method = make()
    result = bdmc(method, 16, n_chains=2, n_steps=10, leapfrog_steps=2, seed=4)
    with torch.random.fork_rng():
        torch.manual_seed(4)
        z = method.prior.sample(16)
        x = method.likelihood.sample(z)
    torch.testing.assert_close(result.z, z)
    torch.testing.assert_close(result.x, x)
    assert torch.isfinite(result.lower).all() and torch.isfinite(result.upper).all()


# --- training ------------------------------------------------------------------------------------------

def test_training_steps_run_and_the_objectives_are_the_elbo_and_the_k_sample_bound():
    vae, iwae = make("vae-2l"), make("iwae-2l", k=3)
    assert (vae.objective_name, iwae.objective_name) == ("elbo", "iwae_bound")
    assert iwae.state_dict().keys() == vae.state_dict().keys()
    iwae.load_state_dict(vae.state_dict())
    x = TOY
    torch.manual_seed(3)
    elbo = vae.objective(x)
    torch.manual_seed(3)
    z, log_q = vae.posterior(x, 1)
    torch.testing.assert_close(elbo, (log_joint(vae, z, x) - log_q)[0])
    torch.manual_seed(3)
    bound = iwae.objective(x)
    torch.manual_seed(3)
    z, log_q = iwae.posterior(x, 3)
    torch.testing.assert_close(bound, torch.logsumexp(log_joint(iwae, z, x) - log_q, 0) - math.log(3))

    for method in (vae, iwae):
        before = {name: p.detach().clone() for name, p in method.named_parameters()}
        losses = method.update(x)
        assert torch.isfinite(losses["model"])
        # every part learns: both encoders, the prior's p(z1|z2) and the decoder
        for part in ("encoder.", "encoder_top.", "prior.conditional.", "decoder."):
            assert any(not torch.equal(p, before[n]) for n, p in method.named_parameters() if n.startswith(part)), part


def test_softplus_scale_is_offered():
    method = make(scale="softplus")
    with torch.no_grad():
        out = method.prior.conditional.body(torch.zeros(1, 1))
        scale = method.prior.conditional(torch.zeros(1, 1)).base_dist.scale
    torch.testing.assert_close(scale, torch.nn.functional.softplus(out[..., 1:]) + 1e-4)


# --- config -------------------------------------------------------------------------------------------

_bad_configs = st.one_of(
    st.integers(max_value=0).map(lambda d: ("vae-2l", {"top_latent_dim": d})),
    st.sampled_from(["1", 2.5, [3]]).map(lambda d: ("iwae-2l", {"top_latent_dim": d})),
    st.lists(st.integers(max_value=0), min_size=1, max_size=3).map(lambda h: ("vae-2l", {"top_hidden": h})),
    st.text(max_size=8).filter(lambda s: s not in ("exp", "softplus")).map(lambda s: ("iwae-2l", {"scale": s})),
    st.integers(max_value=0).map(lambda k: ("iwae-2l", {"k": k})),
    st.just(("vae-2l", {"k": 5})),  # the VAE trains the one-sample ELBO: no k
    st.floats(max_value=0).map(lambda lr: ("vae-2l", {"lr": lr})),
)


@settings(max_examples=60, deadline=None)
@given(case=_bad_configs)
def test_bad_configs_are_refused(case):
    name, params = case
    with pytest.raises(ConfigError):
        method_config(name, params)


@settings(max_examples=30, deadline=None)
@given(top=st.none() | st.integers(1, 1000), hidden=st.lists(st.integers(1, 1000), max_size=3),
       scale=st.sampled_from(["exp", "softplus"]), k=st.integers(1, 5000))
def test_good_configs_are_accepted(top, hidden, scale, k):
    config = method_config("iwae-2l", {"top_latent_dim": top, "top_hidden": hidden, "scale": scale, "k": k})
    assert (config.top_latent_dim, config.top_hidden, config.scale, config.k) == (top, tuple(hidden), scale, k)
    assert config.top_size(7) == (4 if top is None else top)
