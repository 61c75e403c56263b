"""MIWAE, PIWAE and CIWAE (Rainforth et al. 2018): each bound against its definition on fixed
log-weights, their IWAE and ELBO special cases on real networks and noise, PIWAE's two losses
each reaching its own parameter group only, training, config validation and the compiled step."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import assert_loss_falls, assert_refused_in_one_line, losses_over_steps, train_one_epoch
from test_compiled_step import ARCH, _assert_same_steps, _on, _twins
from vaebench.backbones import Architecture
from vaebench.compiled_step import check_compiled_step
from vaebench.methods import create_method, method_config
from vaebench.methods.importance_bounds import ciwae_bound, elbo_bound, iwae_bound, miwae_bound
from vaebench.metrics import elbo
from vaebench.model import log_joint

SMALL = Architecture(hidden=(32,))


def make(name: str, **params) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_method(name, params, data_shape=(8, 8), latent_dim=4, architecture=SMALL)


# --- the bounds on log-weights written out by hand ----------------------------------------------

# six draws (rows) for two examples (columns): weights 1..6 and 2, 2, 2, 8, 8, 8
WEIGHTS = [[1.0, 2.0], [2.0, 2.0], [3.0, 2.0], [4.0, 8.0], [5.0, 8.0], [6.0, 8.0]]
LOG_W = torch.tensor(WEIGHTS, dtype=torch.float64).log()
log = math.log
# MIWAE(2, 3): the groups {1, 2, 3}, {4, 5, 6} and {2, 2, 2}, {8, 8, 8}
MIWAE_2_3 = [(log(6 / 3) + log(15 / 3)) / 2, (log(6 / 3) + log(24 / 3)) / 2]
# MIWAE(3, 2): the groups {1, 2}, {3, 4}, {5, 6} and {2, 2}, {2, 8}, {8, 8}
MIWAE_3_2 = [(log(3 / 2) + log(7 / 2) + log(11 / 2)) / 3, (log(4 / 2) + log(10 / 2) + log(16 / 2)) / 3]
IWAE_6 = [log(21 / 6), log(30 / 6)]
ELBO_6 = [log(1 * 2 * 3 * 4 * 5 * 6) / 6, log(2 * 2 * 2 * 8 * 8 * 8) / 6]


def _close(actual: torch.Tensor, expected: list[float]) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=0)


def test_each_bound_of_fixed_log_weights_is_its_formula():
    _close(miwae_bound(LOG_W, 2), MIWAE_2_3)
    _close(miwae_bound(LOG_W, 3), MIWAE_3_2)
    _close(miwae_bound(LOG_W, 1), IWAE_6)  # M = 1: IWAE
    _close(miwae_bound(LOG_W, 6), ELBO_6)  # K = 1: the ELBO
    _close(iwae_bound(LOG_W), IWAE_6)
    _close(elbo_bound(LOG_W), ELBO_6)
    _close(ciwae_bound(LOG_W, 0.25), [0.25 * e + 0.75 * i for e, i in zip(ELBO_6, IWAE_6)])
    _close(ciwae_bound(LOG_W, 0.0), IWAE_6)
    _close(ciwae_bound(LOG_W, 1.0), ELBO_6)


def _fixed_log_weights(method, monkeypatch) -> list[int]:
    """Make ``method.log_weights`` return LOG_W, recording how many draws each call asked for."""
    asked: list[int] = []

    def log_weights(x, n):
        asked.append(n)
        return LOG_W.clone()

    monkeypatch.setattr(method, "log_weights", log_weights)
    return asked


def test_the_methods_train_and_log_those_bounds(monkeypatch, tiny_batch):
    x = tiny_batch[:2]
    miwae = make("miwae", m=2, k=3)
    asked = _fixed_log_weights(miwae, monkeypatch)
    _close(miwae.objective(x), MIWAE_2_3)
    assert miwae.training_step(x)["model"].item() == pytest.approx(-sum(MIWAE_2_3) / 2, rel=1e-12)
    assert asked == [6, 6] and miwae.objective_name == "miwae_bound"

    piwae = make("piwae", m=3, k=2)
    asked = _fixed_log_weights(piwae, monkeypatch)
    losses = piwae.training_step(x)  # the encoder on MIWAE(3, 2), the decoder on IWAE_6, the same draws
    assert losses["inference"].item() == pytest.approx(-sum(MIWAE_3_2) / 2, rel=1e-12)
    assert losses["generative"].item() == pytest.approx(-sum(IWAE_6) / 2, rel=1e-12)
    _close(piwae.objective(x), IWAE_6)
    assert asked == [6, 6] and piwae.objective_name == "piwae_generative_bound"

    ciwae = make("ciwae", k=6, beta=0.25)
    asked = _fixed_log_weights(ciwae, monkeypatch)
    expected = [0.25 * e + 0.75 * i for e, i in zip(ELBO_6, IWAE_6)]
    _close(ciwae.objective(x), expected)
    assert ciwae.training_step(x)["model"].item() == pytest.approx(-sum(expected) / 2, rel=1e-12)
    assert asked == [6, 6] and ciwae.objective_name == "ciwae_bound"


@settings(max_examples=50, deadline=None)
@given(m=st.integers(1, 4), k=st.integers(1, 4), batch=st.integers(1, 3), seed=st.integers(0, 2**31 - 1),
       beta=st.floats(0, 1), scale=st.floats(0.01, 30))
def test_miwae_and_ciwae_lie_between_the_elbo_and_the_iwae_bound_of_the_same_draws(m, k, batch, seed, beta,
                                                                                      scale):
    """Jensen's inequality on each group and across groups: ELBO ≤ MIWAE(M, K) ≤ IWAE_{M·K} for every
    set of draws, and CIWAE(β) is the point β of the way from IWAE down to the ELBO."""
    g = torch.Generator().manual_seed(seed)
    log_w = scale * torch.randn(m * k, batch, generator=g, dtype=torch.float64)
    low, mid, high = elbo_bound(log_w), miwae_bound(log_w, m), iwae_bound(log_w)
    slack = 1e-12 * (1 + log_w.abs().max())
    assert (low <= mid + slack).all() and (mid <= high + slack).all()
    torch.testing.assert_close(ciwae_bound(log_w, beta), high - beta * (high - low), rtol=1e-12, atol=1e-12)


# --- the special cases on real networks and noise ------------------------------------------------

def test_log_weights_are_the_posteriors_draws_weighed(tiny_batch):
    miwae = make("miwae", m=2, k=3)
    torch.manual_seed(1)
    log_w = miwae.log_weights(tiny_batch, 6)
    torch.manual_seed(1)
    z, log_q = miwae.posterior(tiny_batch, 6)
    assert log_w.shape == (6, tiny_batch.shape[0])
    torch.testing.assert_close(log_w, log_joint(miwae, z, tiny_batch) - log_q, rtol=0, atol=0)


def _same_noise(bound_a, bound_b, seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    a = bound_a()
    torch.manual_seed(seed)
    return a, bound_b()


def test_miwae_and_piwae_with_one_bound_are_iwae(tiny_batch):
    iwae = make("iwae", k=5)
    miwae, piwae = make("miwae", m=1, k=5), make("piwae", m=1, k=5)
    for method in (miwae, piwae):
        method.load_state_dict(iwae.state_dict())
    expected, actual = _same_noise(lambda: iwae.iwae_bound(tiny_batch, 5), lambda: miwae.miwae_bound(tiny_batch))
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)
    expected, (inference, generative) = _same_noise(lambda: iwae.iwae_bound(tiny_batch, 5),
                                                    lambda: piwae.bounds(tiny_batch))
    torch.testing.assert_close(inference, expected, rtol=0, atol=0)
    torch.testing.assert_close(generative, expected, rtol=0, atol=0)


def test_ciwae_at_beta_0_is_iwae_and_at_beta_1_the_elbo(tiny_batch):
    iwae = make("iwae", k=7)
    at_0, at_1 = make("ciwae", k=7, beta=0.0), make("ciwae", k=7, beta=1.0)
    for method in (at_0, at_1):
        method.load_state_dict(iwae.state_dict())
    expected, actual = _same_noise(lambda: iwae.iwae_bound(tiny_batch, 7), lambda: at_0.ciwae_bound(tiny_batch))
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)
    # the suite's ELBO estimator, the mean log-weight of 7 draws
    expected, actual = _same_noise(lambda: elbo(iwae, tiny_batch, 7), lambda: at_1.ciwae_bound(tiny_batch))
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)


# --- PIWAE's two parameter groups ----------------------------------------------------------------

def test_piwae_steps_each_group_on_its_own_loss_only(tiny_batch):
    piwae = make("piwae", m=2, k=3)
    groups = piwae.param_groups()
    encoder, generative = groups["inference"], groups["generative"]
    assert {id(p) for p in encoder} == {id(p) for p in piwae.encoder.parameters()}
    assert {id(p) for p in encoder}.isdisjoint(id(p) for p in generative)
    assert len(encoder) + len(generative) == len(list(piwae.parameters()))

    twin = copy.deepcopy(piwae)
    torch.manual_seed(3)
    piwae.update(tiny_batch)  # leaves each parameter's .grad from the loss of its group
    torch.manual_seed(3)
    losses = twin.training_step(tiny_batch)
    twin_groups = twin.param_groups()

    def grads(loss: str, group: str) -> list[torch.Tensor]:
        return torch.autograd.grad(losses[loss], twin_groups[group], retain_graph=True)

    for name, params in (("inference", encoder), ("generative", generative)):
        for p, expected in zip(params, grads(name, name)):
            torch.testing.assert_close(p.grad, expected, rtol=1e-6, atol=1e-7)
    # each loss does reach the other group through the shared draws: the restriction is what keeps it out
    reach = [g.abs().max().item() for g in (*grads("generative", "inference"), *grads("inference", "generative"))]
    assert min(reach) > 0, reach
    apart = max((p.grad - g).abs().max().item() for p, g in zip(encoder, grads("generative", "inference")))
    assert apart > 1e-3, apart


def test_piwae_backward_of_one_loss_leaves_the_other_group_without_gradient(tiny_batch):
    piwae = make("piwae", m=2, k=3)
    piwae.configure_optimizers()
    losses = piwae.training_step(tiny_batch)
    piwae.apply_losses(losses, names=["inference"])  # the encoder's loss alone
    assert all(p.grad is not None for p in piwae.encoder.parameters())
    assert all(p.grad is None for p in piwae.param_groups()["generative"])


# --- training -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, params, loss", [
    ("miwae", {"m": 2, "k": 3}, "model"),
    ("piwae", {"m": 2, "k": 3}, "generative"),
    ("ciwae", {"k": 6, "beta": 0.5}, "model"),
])
def test_loss_falls_on_a_tiny_batch(name, params, loss, tiny_batch):
    assert_loss_falls(losses_over_steps(make(name, **params), tiny_batch, 20, loss))


@pytest.mark.parametrize("name, params, logged", [
    ("miwae", {"m": 2, "k": 2}, ("train_model", "valid_miwae_bound")),
    ("piwae", {"m": 2, "k": 2}, ("train_inference", "train_generative", "valid_piwae_generative_bound")),
    ("ciwae", {"k": 4, "beta": 0.5}, ("train_model", "valid_ciwae_bound")),
])
def test_one_mnist_epoch_logs_the_training_bound_under_its_own_name(name, params, logged, mnist_500):
    torch.manual_seed(0)
    method = create_method(name, params, data_shape=mnist_500.image_shape, latent_dim=4, architecture=SMALL)
    (record,) = train_one_epoch(method, mnist_500)
    assert all(math.isfinite(record[key]) for key in logged), record
    assert "valid_elbo" not in record  # none of these bounds is the ELBO


# --- config validation ----------------------------------------------------------------------------

_not_positive = st.integers(-(2**40), 0)
_bad_beta = st.one_of(st.floats(allow_nan=True, allow_infinity=True).filter(lambda b: not 0 <= b <= 1),
                      st.just(float("nan")))


@settings(max_examples=60, deadline=None)
@given(bad=st.one_of(
    st.tuples(st.sampled_from(["miwae", "piwae"]), st.just("m"), _not_positive, st.just("m must be positive")),
    st.tuples(st.sampled_from(["miwae", "piwae", "ciwae"]), st.just("k"), _not_positive,
              st.just("k must be positive")),
    st.tuples(st.just("ciwae"), st.just("beta"), _bad_beta, st.just("beta must lie in [0, 1]")),
    st.tuples(st.sampled_from(["miwae", "piwae", "ciwae"]), st.just("analytic_kl"), st.just(True),
              st.just("no analytic KL term")),
    st.tuples(st.sampled_from(["miwae", "piwae"]), st.just("m"),
              st.one_of(st.floats(), st.text(max_size=5), st.booleans()), st.just("expected an integer")),
))
def test_bad_settings_are_refused_in_one_line(bad):
    name, key, value, message = bad
    assert_refused_in_one_line(name, {key: value}, message)


@settings(max_examples=30, deadline=None)
@given(m=st.integers(1, 64), k=st.integers(1, 64), beta=st.floats(0, 1))
def test_good_settings_are_kept(m, k, beta):
    assert (method_config("miwae", {"m": m, "k": k}).m, method_config("piwae", {"m": m, "k": k}).k) == (m, k)
    assert method_config("ciwae", {"k": k, "beta": beta}).beta == beta


def test_defaults_are_the_papers_mnist_settings():
    assert (method_config("miwae").m, method_config("miwae").k) == (8, 8)
    assert (method_config("piwae").m, method_config("piwae").k) == (8, 8)
    assert (method_config("ciwae").k, method_config("ciwae").beta) == (64, 0.05)


# --- compile = "step" ------------------------------------------------------------------------------

def test_the_compiled_step_accepts_all_three(mnist_small):
    for name in ("miwae", "piwae", "ciwae"):
        method = create_method(name, {"m": 2, "k": 2} if name != "ciwae" else {"k": 4},
                               data_shape=mnist_small.image_shape, latent_dim=4, architecture=ARCH)
        method.configure_optimizers()
        check_compiled_step(method)  # raises ConfigError where it cannot run


def test_piwaes_compiled_step_takes_the_eager_steps(mnist_small, device):
    """Two optimizers, each on its own loss from one forward pass: the compiled step's per-group
    pullbacks against apply_losses's restricted backwards (MIWAE and CIWAE have one group, the
    path of the IWAE case in test_compiled_step)."""
    data = _on(mnist_small, device)
    torch.manual_seed(0)
    method = create_method("piwae", {"m": 2, "k": 3, "optimizer": "adam", "eps": 0.1, "lr": 1e-2},
                           data_shape=data.image_shape, latent_dim=4, architecture=ARCH)
    eager, compiled = _twins(method, data, device)
    _assert_same_steps(eager, compiled, data.train[:20 * 5].split(20))
