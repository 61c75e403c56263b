"""β-weighted KL and its linear warm-up (``kl_weight``, ``kl_warmup_steps``) on the VAE and IWAE."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vaebench.backbones import Architecture
from vaebench.config import from_dict
from vaebench.errors import ConfigError
from vaebench.methods import METHODS, create_method
from vaebench.methods.iwae import IWAE
from vaebench.methods.kl_weight import KLWeightConfig
from vaebench.methods.vae import VAE, VAEConfig
from vaebench.training import TrainConfig, train

ARCH = Architecture(hidden=(16,), activation="tanh")


def _make(name: str, data_shape=(8, 8), **params) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_method(name, params, data_shape=data_shape, latent_dim=4, architecture=ARCH)


def test_the_weight_of_step_t_is_beta_times_min_1_t_over_the_warmup(tiny_batch):
    vae = _make("vae", kl_weight=2.0, kl_warmup_steps=4)
    assert vae.kl_weight_now(advance=False).item() == 0.0  # before the first step
    for t in range(1, 8):
        vae.training_step(tiny_batch)
        expected = 2.0 * min(1.0, t / 4)
        assert int(vae.kl_warmup_step) == t
        assert vae.kl_weight_now(advance=False).item() == expected == vae.kl_weight_at(t)
    # validation reads the weight without counting a step
    vae.objective(tiny_batch)
    assert int(vae.kl_warmup_step) == 7
    # without a warm-up the weight is β from the first step, and nothing is counted
    fixed = _make("vae", kl_weight=0.25)
    assert fixed.kl_weight_now(advance=True) == 0.25 == fixed.kl_weight_at(1)
    assert "kl_warmup_step" not in fixed.state_dict()


@pytest.mark.parametrize("analytic_kl", [True, False])
def test_the_vae_trains_on_the_reconstruction_minus_the_weighted_kl(tiny_batch, analytic_kl):
    vae = _make("vae", kl_weight=3.0, kl_warmup_steps=2, analytic_kl=analytic_kl)
    vae.training_step(tiny_batch)  # step 1 of 2: the second step has the full weight, 3
    torch.manual_seed(1)
    loss = vae.training_step(tiny_batch)["model"]
    torch.manual_seed(1)
    q = vae.encode(tiny_batch)
    z = q.rsample()
    if analytic_kl:
        kl = torch.distributions.kl_divergence(q, torch.distributions.Independent(
            torch.distributions.Normal(torch.zeros_like(z), torch.ones_like(z)), 1))
    else:
        kl = q.log_prob(z) - vae.prior.log_prob(z)
    expected = -(vae.decoder.log_prob(tiny_batch, z) - 3.0 * kl).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-5)


def test_the_iwae_weights_each_samples_kl_inside_its_importance_weight(tiny_batch):
    iwae = _make("iwae", k=5, kl_weight=0.5)
    torch.manual_seed(2)
    loss = iwae.training_step(tiny_batch)["model"]
    torch.manual_seed(2)
    z, log_q = iwae.posterior(tiny_batch, 5)
    log_w = iwae.likelihood.log_prob(tiny_batch, z) + 0.5 * (iwae.prior.log_prob(z) - log_q)
    expected = -(torch.logsumexp(log_w.double(), 0) - math.log(5)).mean()
    torch.testing.assert_close(loss.double(), expected, rtol=1e-6, atol=1e-5)
    # at β = 1 the weighted objective is the bound; at k = 1, the VAE's β-ELBO
    one = _make("iwae", k=4)
    torch.manual_seed(3)
    weighted = one.weighted_bound(tiny_batch, 4, 1.0)
    torch.manual_seed(3)
    torch.testing.assert_close(weighted, one.iwae_bound(tiny_batch, 4), rtol=1e-6, atol=1e-5)
    vae, single = _make("vae", analytic_kl=False, kl_weight=0.5), _make("iwae", k=1, kl_weight=0.5)
    single.load_state_dict(vae.state_dict())
    torch.manual_seed(4)
    a = vae.objective(tiny_batch)
    torch.manual_seed(4)
    torch.testing.assert_close(single.objective(tiny_batch), a, rtol=1e-6, atol=1e-5)


def test_a_weighted_objective_is_logged_under_a_name_that_says_so(mnist_500):
    assert _make("vae").objective_name == "elbo"
    assert _make("vae", kl_weight=1.0, kl_warmup_steps=0).objective_name == "elbo"
    assert _make("vae", kl_weight=4.0).objective_name == "beta_elbo"
    assert _make("vae", kl_warmup_steps=10).objective_name == "beta_elbo"
    assert _make("iwae", k=2, kl_weight=0.5).objective_name == "beta_iwae_bound"
    assert VAE.objective_name == "elbo" and IWAE.objective_name == "iwae_bound"  # the classes keep theirs
    torch.manual_seed(0)
    method = create_method("vae", {"kl_warmup_steps": 3}, data_shape=mnist_500.image_shape, latent_dim=4,
                           architecture=ARCH)
    (record,) = train(method, mnist_500, TrainConfig(epochs=1, batch_size=100), seed=0, dynamic_binarization=True,
                      progress=False).history
    assert "valid_beta_elbo" in record and "valid_elbo" not in record


def _warmup_run(data, epochs, folder):
    torch.manual_seed(0)
    method = create_method("iwae", {"k": 2, "kl_warmup_steps": 12, "kl_weight": 0.5, "gradient": "dreg",
                                    "optimizer": "burda-adam"},
                           data_shape=data.image_shape, latent_dim=4, architecture=ARCH)
    torch.manual_seed(7)
    result = train(method, data, TrainConfig(epochs=epochs, batch_size=100), seed=3, dynamic_binarization=True,
                   checkpoint_dir=folder, progress=False)
    return method, result


def test_a_resumed_run_continues_the_warmup_bit_identically(mnist_500, tmp_path):
    """5 steps per epoch, a warm-up of 12 steps: the run stops after 10, inside the warm-up."""
    straight, full = _warmup_run(mnist_500, 3, None)
    assert int(straight.kl_warmup_step) == 15
    first, _ = _warmup_run(mnist_500, 2, tmp_path)
    assert int(first.kl_warmup_step) == 10
    resumed, result = _warmup_run(mnist_500, 3, tmp_path)
    assert result.resumed_from_epoch == 2 and int(resumed.kl_warmup_step) == 15
    assert straight.state_dict().keys() == resumed.state_dict().keys()
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    assert [h["valid_beta_iwae_bound"] for h in result.history] == [h["valid_beta_iwae_bound"] for h in full.history]


def test_a_model_without_warmup_keeps_its_state_dict():
    """No new buffer unless the warm-up is on: checkpoints written before these options load."""
    assert set(_make("vae").state_dict()) == set(_make("vae", kl_weight=2.0).state_dict())
    assert set(_make("vae", kl_warmup_steps=5).state_dict()) - set(_make("vae").state_dict()) == {"kl_warmup_step"}


# --- options and refusals ------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(kl_weight=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 3), st.text(max_size=4),
                           st.booleans(), st.none()),
       warmup=st.one_of(st.integers(-10**6, 10**6), st.floats(), st.text(max_size=4), st.booleans()))
def test_kl_options_are_checked_with_one_line(kl_weight, warmup):
    valid_weight = (isinstance(kl_weight, (int, float)) and not isinstance(kl_weight, bool)
                    and math.isfinite(kl_weight) and kl_weight > 0)
    valid_warmup = isinstance(warmup, int) and not isinstance(warmup, bool) and warmup >= 0
    for config in (VAEConfig, KLWeightConfig):
        params = {"kl_weight": kl_weight, "kl_warmup_steps": warmup}
        if valid_weight and valid_warmup:
            parsed = from_dict(config, params)
            assert parsed.kl_weight == kl_weight and parsed.kl_warmup_steps == warmup
            assert parsed.weighted_kl == (kl_weight != 1 or warmup > 0)
        else:
            with pytest.raises(ConfigError) as error:
                from_dict(config, params)
            assert len(str(error.value).splitlines()) == 1


def test_a_subclass_that_replaces_the_training_step_refuses_a_weight_it_would_ignore():
    class OwnStep(VAE):
        def training_step(self, batch):
            return {"model": -self.objective(batch).mean()}

    OwnStep(VAEConfig(), data_shape=(8,), latent_dim=2)  # unweighted: nothing to ignore
    with pytest.raises(ConfigError, match="a weighted KL .* is implemented in vae's training_step, objective, which "
                                          "OwnStep overrides \\(training_step\\)"):
        OwnStep(VAEConfig(kl_weight=2.0), data_shape=(8,), latent_dim=2)


@pytest.mark.parametrize("name", [n for n in METHODS.names()
                                  if "kl_weight" in METHODS.get(n).config_class.__dataclass_fields__])
def test_every_method_with_a_kl_weight_uses_it_or_refuses_it(name, tiny_batch):
    """A registered method whose config has ``kl_weight`` (inherited, say) either refuses β ≠ 1
    when built or trains with it: another loss from the same noise."""
    try:
        weighted = _make(name, kl_weight=0.5)
    except ConfigError as error:
        assert len(str(error).splitlines()) == 1
        return
    plain = _make(name)
    plain.load_state_dict(weighted.state_dict())
    losses = []
    for method in (plain, weighted):
        torch.manual_seed(5)
        losses.append(method.training_step(tiny_batch)["model"].item())
    assert losses[0] != losses[1], losses
    assert weighted.objective_name.startswith("beta_")


def test_a_held_warmup_weighs_every_step_of_a_block_as_the_vampprior_code_weighs_an_epoch(tiny_batch):
    """kl_warmup_hold = steps per epoch: epoch e's steps all have β · min(1, e / warm-up epochs), their
    utils/training.py (beta = epoch / warmup, epochs from 1). Here 3 steps an epoch, 2 warm-up epochs."""
    vae = _make("vae", kl_weight=1.0, kl_warmup_steps=6, kl_warmup_hold=3, analytic_kl=False)
    weights = []
    for _ in range(9):
        vae.training_step(tiny_batch)
        weights.append(vae.kl_weight_now(advance=False).item())
    assert weights == [0.5] * 3 + [1.0] * 6
    assert [vae.kl_weight_at(t) for t in range(1, 10)] == weights
    with pytest.raises(ConfigError, match="set kl_warmup_steps too"):
        _make("vae", kl_warmup_hold=3)
