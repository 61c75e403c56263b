"""SIVI: the surrogate bound against its formula, below the exact ELBO of the semi-implicit
posterior (Bernoulli noise has finitely many values, so q(z|x) is an exact finite mixture on
the toy) and below the exact log p(x) from quadrature, rising with K; the evaluation's columns
for a posterior without density; noise at every stage; training; config validation."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import assert_refused_in_one_line
from vaebench.backbones import Architecture
from vaebench.datasets import DataConfig, load_dataset
from vaebench.evaluation import EvalConfig, evaluate
from vaebench.methods import create_method, method_config
from vaebench.methods.sivi import DIAGNOSTIC_MIXING, SIVI
from vaebench.quadrature import quadrature_log_likelihood
from vaebench.training import TrainConfig, train

TOY = torch.eye(4)  # the 4-point toy: four one-hot vectors of R^4


def toy_model(noise_dims=(2, 2), **params) -> SIVI:
    """A SIVI on the toy (2-D latent) with fixed nontrivial weights: the mixing network's output
    scaled up and σ ≈ 0.05, so that q(ψ|x) has well separated atoms and L_K depends on K."""
    torch.manual_seed(0)
    method = create_method("sivi", {"noise_dims": list(noise_dims), **params}, data_shape=(4,), latent_dim=2,
                           architecture=Architecture(hidden=(16, 16)))
    with torch.no_grad():
        method.mixing.rest[-1][-1].weight.mul_(4.0)
        method.scale_net.net[-1].bias.fill_(-3.0)
    return method


def test_the_surrogate_bound_is_its_formula():
    """log p(x, z) − log((1/(K+1)) Σ_k N(z; ψ^(k), σ²)), term by term with torch's Normal in float64."""
    method = toy_model().double()
    g = torch.Generator().manual_seed(1)
    x = TOY.double()
    S, K = 3, 5
    scale = torch.rand(4, 2, generator=g, dtype=torch.float64) + 0.2
    psi = torch.randn(S, 4, 2, generator=g, dtype=torch.float64)
    extra = torch.randn(K, 4, 2, generator=g, dtype=torch.float64)
    z = psi + scale * torch.randn(S, 4, 2, generator=g, dtype=torch.float64)
    got = method.surrogate_bound(x, z, psi, extra, scale)
    assert got.shape == (S, 4)
    for s in range(S):
        for b in range(4):
            kernels = [psi[s, b]] + [extra[k, b] for k in range(K)]
            densities = [torch.distributions.Normal(m, scale[b]).log_prob(z[s, b]).sum().exp().item()
                         for m in kernels]
            log_h = math.log(sum(densities) / (K + 1))
            log_joint = (method.likelihood.log_prob(x[b:b + 1], z[s, b:b + 1])
                         + torch.distributions.Normal(0.0, 1.0).log_prob(z[s, b]).sum()).item()
            assert got[s, b].item() == pytest.approx(log_joint - log_h, abs=1e-10)


@pytest.fixture(scope="module")
def exact_log_px() -> torch.Tensor:
    """log p(x) of the four toy points under :func:`toy_model`'s generative model, by quadrature."""
    with torch.no_grad():
        return quadrature_log_likelihood(toy_model(), TOY)


def test_the_bound_rises_with_k_and_lies_below_the_exact_elbo_and_log_px(exact_log_px):
    """N = 1000 independent estimates per toy example, each z with its own ψ^(0) and its own 100
    ψ^(k); L_0, L_1, L_10, L_100 from the same draws (the first K of the 100). With Bernoulli
    noise of 2 + 2 bits, q(ψ|x) has 16 equally likely atoms, so log q(z|x) is an exact
    16-component mixture and the ELBO is estimated from the same z. Measured: L_1 − L_0 ≈
    0.19–0.34, L_10 − L_1 ≈ 0.20–0.35, L_100 − L_10 ≈ 0.035–0.07 (SE ≤ 0.02, ≤ 0.01), ELBO −
    L_100 ≈ 0.004–0.009 (SE ≈ 0.003), log p(x) − ELBO ≈ 4.4–4.6 (SE ≈ 0.03)."""
    method = toy_model()
    exact = exact_log_px
    n = 1000
    with torch.no_grad():
        x = TOY.repeat(n, 1)  # row r is example r % 4: every row an independent estimate
        scale = method.scale(x)
        psi = method.mixing_draws(x, 1 + 100)
        own, extra = psi[:1], psi[1:]
        z = own + scale * torch.randn_like(own)
        bound = {k: method.surrogate_bound(x, z, own, extra[:k], scale)[0].view(n, 4) for k in (0, 1, 10, 100)}

        bits = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)))  # every noise value
        noise = [bits[:, None, :2].expand(16, 4 * n, 2), bits[:, None, 2:].expand(16, 4 * n, 2)]
        atoms = method.mixing(x, noise)  # (16, 4n, 2)
        log_q = torch.logsumexp(method.kernel_log_prob(z[0], atoms, scale), 0) - math.log(16)
        elbo = (method.likelihood.log_prob(x, z[0]) + method.prior.log_prob(z[0]) - log_q).view(n, 4)

    def paired(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = b - a
        return d.mean(0), d.std(0) / n ** 0.5

    for lower, higher in ((0, 1), (1, 10), (10, 100)):
        mean, se = paired(bound[lower], bound[higher])
        assert (mean > 3 * se).all(), (lower, higher, mean, se)
    mean, se = paired(bound[100], elbo)  # L_100 ≤ ELBO: no estimate above it beyond its error
    assert (mean > -3 * se).all() and (mean < 0.05).all(), (mean, se)
    elbo_se = elbo.std(0) / n ** 0.5
    assert (elbo.mean(0) < exact - 3 * elbo_se).all(), (elbo.mean(0), exact)
    for k, values in bound.items():
        assert (values.mean(0) < exact - 3 * values.std(0) / n ** 0.5).all(), k


def test_the_posterior_has_no_density_and_the_evaluation_says_so(exact_log_px):
    method = toy_model()
    draws = method.posterior(TOY, 7)
    assert draws.z.shape == (7, 4, 2) and draws.log_q is None and not method.has_density
    config = EvalConfig(examples=4, moment_samples=64, batch_size=4, ais_steps=5, ais_chains=4,
                        ais_leapfrog=2, ais_pilot_steps=2, bdmc_examples=2)
    result = evaluate(method, TOY, config, progress=False)
    per = result.per_example
    assert "elbo" not in per and "log_likelihood_is" not in per
    assert {"kl_gaussian_lower_bound", "log_likelihood_ais", "sivi_bound_k100"} <= set(per)
    assert [c.name for c in result.columns] == [c.name for c in SIVI.columns] == [f"sivi_bound_k{DIAGNOSTIC_MIXING}"]
    # the column is a lower bound on log p(x); far below it for these fixed weights (measured ≈ 4.4 nats)
    assert (per["sivi_bound_k100"] < exact_log_px.numpy() - 1.0).all()


def test_noise_enters_at_every_stage():
    """As in the authors' sample_psi: with the noise of one stage alone varying, ψ varies for every
    example (at these weights the spread is ≈ 1e-4 from the first stage, ≈ 5e-3 from the second
    and ≈ 0.1 from the last: earlier noise passes through more layers); with that stage's noise
    map zeroed, ψ does not vary at all."""
    method = toy_model(noise_dims=(8, 8, 8))
    x = TOY
    base = method.sample_noise(1, 4, x)
    with torch.no_grad():
        for stage in range(3):
            noise = [e.expand(64, 4, e.shape[-1]).clone() for e in base]
            noise[stage] = method.sample_noise(64, 4, x)[stage]
            assert (method.mixing(x, noise).std(0) > 1e-6).all(), stage
            saved = method.mixing.from_noise[stage].weight.clone()
            method.mixing.from_noise[stage].weight.zero_()
            assert (method.mixing(x, noise).std(0) == 0).all(), stage
            method.mixing.from_noise[stage].weight.copy_(saved)


def test_a_training_step_moves_every_network_and_logs_the_sivi_bound():
    torch.manual_seed(0)
    method = create_method("sivi", {"noise_dims": [4, 2], "mixing_samples": 5}, data_shape=(4,), latent_dim=2,
                           architecture=Architecture(hidden=(16,)))
    before = {k: v.clone() for k, v in method.state_dict().items()}
    losses = method.update(TOY.repeat(4, 1))
    assert set(losses) == {"model"} and torch.isfinite(losses["model"])
    moved = {k.split(".")[0] for k, v in method.state_dict().items() if not torch.equal(v, before[k])}
    assert {"mixing", "scale_net", "decoder"} <= moved

    data = load_dataset("toy4", DataConfig(train_subset=200))
    result = train(method, data, TrainConfig(epochs=1, batch_size=100, valid_batch_size=100), seed=0,
                   dynamic_binarization=False, progress=False)
    (record,) = result.history
    assert method.objective_name == "sivi_bound"
    assert "valid_sivi_bound" in record and "valid_elbo" not in record
    assert math.isfinite(record["valid_sivi_bound"]) and record["valid_sivi_bound"] < 0


# --- config validation ---------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(bad=st.one_of(
    st.tuples(st.just("mixing_samples"), st.integers(max_value=-1), st.just("mixing_samples must be non-negative")),
    st.tuples(st.just("mixing_samples"), st.one_of(st.floats(allow_nan=True), st.text(max_size=4)),
              st.just("expected an integer")),
    st.tuples(st.just("noise_dims"), st.one_of(
        st.just([]), st.lists(st.integers(max_value=0), min_size=1, max_size=3),
        st.lists(st.integers(), min_size=1, max_size=4).filter(lambda d: any(v <= 0 for v in d))),
        st.just("noise_dims must be one or more positive widths")),
    st.tuples(st.just("noise"), st.text(max_size=10).filter(lambda s: s not in ("bernoulli", "gaussian")),
              st.just("expected one of 'bernoulli', 'gaussian'")),
))
def test_bad_settings_are_refused_in_one_line(bad):
    key, value, message = bad
    assert_refused_in_one_line("sivi", {key: value}, message)


@settings(max_examples=30, deadline=None)
@given(k=st.integers(0, 10_000), dims=st.lists(st.integers(1, 1000), min_size=1, max_size=5),
       noise=st.sampled_from(["bernoulli", "gaussian"]))
def test_good_settings_are_kept(k, dims, noise):
    config = method_config("sivi", {"mixing_samples": k, "noise_dims": dims, "noise": noise})
    assert (config.mixing_samples, config.noise_dims, config.noise) == (k, tuple(dims), noise)


def test_defaults_are_the_authors_mnist_settings():
    config = method_config("sivi")
    assert (config.mixing_samples, config.noise_dims, config.noise) == (1, (150, 100, 50), "bernoulli")
