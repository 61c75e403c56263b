"""VampPrior: the prior is a normalised mixture of the posterior at the pseudo-inputs, AIS and
importance sampling under it agree with the exact log p(x), its samples come from the mixture,
its config is checked, and it trains on an ELBO."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vaebench.ais import ais_log_likelihood
from vaebench.backbones import Architecture
from vaebench.datasets import load_dataset
from vaebench.errors import ConfigError
from vaebench.methods import create_method, method_config
from vaebench.metrics import importance_sampled_log_likelihood
from vaebench.model import Prior, log_joint
from vaebench.quadrature import midpoint_grid, quadrature_log_likelihood

TOY = torch.eye(4)


def make(components: int = 3, dtype: torch.dtype = torch.float64, spread: bool = True,
         architecture: Architecture = Architecture(hidden=(16,)), **params):
    """A VampPrior VAE on R^4 with a 2-D latent; ``spread`` moves the pseudo-inputs and the
    encoder's weights apart so that the components differ."""
    torch.manual_seed(0)
    method = create_method("vampprior", {"components": components, **params}, data_shape=(4,), latent_dim=2,
                           architecture=architecture).to(dtype)
    if spread:
        with torch.no_grad():
            method.prior.raw_pseudo_inputs.uniform_(0.0, 1.0)
            method.encoder.body.net[0].weight.mul_(4.0)
            last = method.encoder.body.net[-1]  # outputs (loc, raw scale)
            last.weight[:2] *= 8.0
            last.weight[2:] *= 0.3
            last.bias[2:] = -1.0  # σ near softplus(−1) ≈ 0.3
    return method


def reference(loc: torch.Tensor, scale: torch.Tensor) -> torch.distributions.MixtureSameFamily:
    """The uniform mixture of N(loc_k, diag scale_k²) by torch.distributions, in float64."""
    loc, scale = loc.detach().double(), scale.detach().double()
    components = torch.distributions.Independent(torch.distributions.Normal(loc, scale), 1)
    weights = torch.distributions.Categorical(logits=torch.zeros(len(loc), dtype=torch.float64))
    return torch.distributions.MixtureSameFamily(weights, components)


def box(prior) -> float:
    """Half-width of a square holding all but ~5e-19 of the prior's mass: 9 σ beyond every component's mean."""
    loc, scale = prior.component_parameters()
    return (loc.abs() + 9 * scale).max().item()


# --- the prior's density ---------------------------------------------------------------------------

def test_the_prior_integrates_to_one():
    method = make(components=3)
    prior = method.prior
    assert isinstance(prior, Prior)
    loc, scale = prior.component_parameters()
    assert torch.cdist(loc, loc).max() > 4 * scale.max()  # three distinct components, not one blob
    limit = box(prior)
    # the midpoint rule on cells of half the smallest σ, in float64 (midpoint_grid's float32 cell
    # centres are off by ~1e-7 of the box, which shows at this tolerance)
    points = math.ceil(2 * limit / (0.5 * scale.min().item()))
    h = 2 * limit / points
    axis = -limit + h * (torch.arange(points, dtype=torch.float64) + 0.5)
    z = torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        mass = (prior.log_prob(z).exp().sum() * h**2).item()
    assert abs(mass - 1) < 1e-10, (mass, points)


def test_log_prob_is_the_uniform_mixture_for_any_leading_shape():
    method = make(components=5)
    prior = method.prior
    mixture = reference(*prior.component_parameters())
    z = 2 * torch.randn(3, 7, 2, dtype=torch.float64)
    log_p = prior.log_prob(z)
    assert log_p.shape == (3, 7)
    torch.testing.assert_close(log_p, mixture.log_prob(z), rtol=0, atol=1e-10)
    assert prior.log_prob(z[0, 0]).shape == ()


def test_float32_log_prob_keeps_its_accuracy_for_sharp_components():
    """σ ≈ 1e-3 and |z| ≈ 3: the squared-distance expansion's terms are ~1e7, which float32 would
    round by about a nat; it runs in float64, so the float32 result is accurate to its own rounding."""
    method = make(components=4, dtype=torch.float32)
    with torch.no_grad():
        last = method.encoder.body.net[-1]
        last.weight.mul_(1e-3)
        last.bias.copy_(torch.tensor([3.0, -3.0, -7.0, -7.0]))  # loc ≈ (3, −3), softplus(−7) + 1e-4 ≈ 1e-3
    prior = method.prior
    loc, scale = prior.component_parameters()
    assert scale.max() < 2e-3
    z = loc[torch.arange(40) % 4] + scale[torch.arange(40) % 4] * torch.randn(40, 2)
    expected = reference(loc, scale).log_prob(z.double())
    torch.testing.assert_close(prior.log_prob(z).double(), expected, rtol=0, atol=1e-4)


def test_closed_form_gradient_equals_autograd():
    method = make(components=4)
    prior = method.prior
    z = 2 * torch.randn(5, 3, 2, dtype=torch.float64)
    value, grad = prior.value_and_grad(z)
    leaf = z.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(prior.log_prob(leaf).sum(), leaf)
    torch.testing.assert_close(value, prior.log_prob(z).detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-10)
    assert not value.requires_grad and not grad.requires_grad


def test_many_points_are_taken_in_chunks_with_the_same_values(monkeypatch):
    import vaebench.methods.vampprior as vampprior

    prior = make(components=5).prior
    z = 2 * torch.randn(4, 9, 2, dtype=torch.float64)
    whole = prior.log_prob(z), *prior.value_and_grad(z)
    monkeypatch.setattr(vampprior, "_MAX_ELEMENTS", 5 * 7)  # 7 points per chunk: 6 chunks, the last short
    assert len(prior._row_chunks(z)) == 6
    for a, b in zip(whole, (prior.log_prob(z), *prior.value_and_grad(z))):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


# --- sampling ---------------------------------------------------------------------------------------

def test_samples_come_from_the_mixture():
    method = make(components=3)
    prior = method.prior
    loc, scale = (t.detach() for t in prior.component_parameters())
    assert prior.sample(4, 6).shape == (4, 6, 2) and not prior.sample(2).requires_grad
    n = 100_000
    z = prior.sample(n)
    # the mixture's mean and variance per dimension, in closed form
    mean = loc.mean(0)
    variance = (scale.square() + loc.square()).mean(0) - mean.square()
    se_mean = (variance / n).sqrt()
    assert ((z.mean(0) - mean).abs() < 4 * se_mean).all(), (z.mean(0) - mean, se_mean)
    squares = (z - mean).square()
    se_var = squares.std(0) / math.sqrt(n)
    assert ((squares.mean(0) - variance).abs() < 4 * se_var).all(), (squares.mean(0) - variance, se_var)
    # the components are far apart relative to these errors, so drawing one component, or the
    # components with unequal weights, would miss by many standard errors
    assert (loc.std(0) > 50 * se_mean).all()


# --- AIS and importance sampling against the exact log p(x) on the toy --------------------------------

def trained_on_toy(device: torch.device, steps: int = 300):
    """A VampPrior VAE (K = 8, pseudo-inputs from the data) trained briefly on the 4-point toy,
    with the authors' linear KL warm-up over the first half (without it the posterior stays
    collapsed for the first few hundred steps and the prior is one blob)."""
    method = make(components=8, dtype=torch.float32, spread=False, pseudo_input_init="data",
                  kl_warmup_steps=steps // 2, architecture=Architecture(hidden=(32, 32), activation="elu"))
    method.init_from_data(load_dataset("toy4").train)
    method.to(device)
    g = torch.Generator().manual_seed(0)
    points = TOY.to(device)
    for _ in range(steps):
        method.update(points[torch.randint(4, (64,), generator=g).to(device)])
    return method


def test_ais_and_importance_sampling_agree_with_quadrature_on_the_toy(device):
    method = trained_on_toy(device)
    x = TOY.to(device)
    prior = method.prior
    loc, scale = prior.component_parameters()
    assert loc.device == device  # the prior followed the model
    # the learned prior is a mixture, not one Gaussian: component means further apart than their σ
    assert torch.cdist(loc, loc).max() > 2 * scale.max(), (loc, scale)
    limit = box(prior)
    exact = quadrature_log_likelihood(method, x, limit=limit, tol=1e-4)
    # the box holds the prior's mass (so it holds p(x)'s), checked on the finest grid used
    z, log_area = midpoint_grid(limit, 512, device)
    with torch.no_grad():
        assert abs(torch.logsumexp(prior.log_prob(z) + log_area, 0).exp().item() - 1) < 1e-4

    chains = 64
    ais = ais_log_likelihood(method, x, n_chains=chains, n_steps=100, leapfrog_steps=5, seed=0)  # from the prior
    ais_se = ((chains / ais.ess - 1) / chains).sqrt()  # delta method: Var(w)/E[w]² ≈ C/ESS − 1
    ais_error = ais.log_likelihood - exact.double()
    assert (ais_error.abs() < 4 * ais_se + 1e-3).all(), (ais_error, ais_se)

    k = 20_000
    with torch.no_grad():
        is_estimate = importance_sampled_log_likelihood(method, x, k)
        z, log_q = method.posterior(x, k)  # another k draws for the delta method's SE
        w = torch.softmax(log_joint(method, z, x) - log_q, 0)
    is_se = ((k * w.square().sum(0) - 1) / k).sqrt()
    is_error = is_estimate - exact
    assert (is_error.abs() < 4 * is_se + 1e-3).all(), (is_error, is_se)


# --- config -------------------------------------------------------------------------------------------

_bad_configs = st.one_of(
    st.integers(max_value=0).map(lambda k: {"components": k}),
    st.floats(allow_nan=True).filter(lambda m: not 0 < m < 1).map(lambda m: {"pseudo_input_mean": m}),
    st.floats(allow_nan=True).filter(lambda s: not 0 < s < math.inf).map(lambda s: {"pseudo_input_std": s}),
    st.text(max_size=8).filter(lambda s: s not in ("random", "data")).map(lambda s: {"pseudo_input_init": s}),
    st.just({"analytic_kl": True}),
    st.sampled_from(["1", 2.5, None, [3]]).map(lambda k: {"components": k}),
)


@settings(max_examples=60, deadline=None)
@given(params=_bad_configs)
def test_bad_configs_are_refused(params):
    with pytest.raises(ConfigError):
        method_config("vampprior", params)


@settings(max_examples=30, deadline=None)
@given(components=st.integers(1, 10_000), mean=st.floats(0, 1, exclude_min=True, exclude_max=True),
       std=st.floats(1e-6, 10), init=st.sampled_from(["random", "data"]))
def test_good_configs_are_accepted(components, mean, std, init):
    config = method_config("vampprior", {"components": components, "pseudo_input_mean": mean,
                                         "pseudo_input_std": std, "pseudo_input_init": init})
    assert (config.components, config.pseudo_input_init, config.analytic_kl) == (components, init, False)


def test_random_init_follows_the_authors_and_data_init_takes_the_first_training_images():
    default = method_config("vampprior")
    assert (default.components, default.pseudo_input_mean, default.pseudo_input_std) == (500, 0.05, 0.01)
    torch.manual_seed(0)
    method = create_method("vampprior", {}, data_shape=(4,), latent_dim=2, architecture=Architecture(hidden=(8,)))
    raw = method.prior.raw_pseudo_inputs
    assert raw.shape == (500, 4)
    assert abs(raw.mean().item() - 0.05) < 4 * 0.01 / math.sqrt(2000)
    assert abs(raw.std().item() - 0.01) < 0.001
    train = torch.rand(5, 4)
    method = create_method("vampprior", {"components": 7, "pseudo_input_init": "data"}, data_shape=(4,),
                           latent_dim=2, architecture=Architecture(hidden=(8,)))
    method.init_from_data(train)
    pseudo = method.prior.pseudo_inputs()
    assert ((pseudo >= 0) & (pseudo <= 1)).all()
    # the first 7 training images, cycling through the 5, plus N(0, 0.01²) noise, clipped to [0, 1]
    expected = train[torch.arange(7) % 5]
    assert (pseudo - expected).abs().max() < 0.06


# --- training -----------------------------------------------------------------------------------------

def test_a_training_step_runs_and_the_objective_is_the_elbo_under_the_vampprior(tiny_batch):
    torch.manual_seed(0)
    method = create_method("vampprior", {"components": 6}, data_shape=(8, 8), latent_dim=3,
                           architecture=Architecture(hidden=(16,)))
    assert method.objective_name == "elbo"
    x = tiny_batch
    # the objective is log p(x|z) + log p(z) − log q(z|x) at one draw, with log p(z) the mixture's
    torch.manual_seed(1)
    objective = method.objective(x)
    torch.manual_seed(1)
    z, log_q = method.posterior(x, 1)
    mixture = reference(*method.prior.component_parameters())
    expected = (method.likelihood.log_prob(x, z) + mixture.log_prob(z.double()).float() - log_q)[0]
    torch.testing.assert_close(objective, expected, rtol=0, atol=1e-5)
    # the training loss is its negative mean at the same draw
    torch.manual_seed(1)
    loss = method.training_step(x)["model"]
    torch.testing.assert_close(loss, -objective.mean(), rtol=0, atol=1e-5)

    before = method.prior.pseudo_inputs().detach().clone()
    losses = [method.update(x)["model"].item() for _ in range(30)]
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) / 5 < losses[0]
    after = method.prior.pseudo_inputs().detach()
    assert not torch.equal(before, after)  # the pseudo-inputs are learned
    assert ((after >= 0) & (after <= 1)).all()
