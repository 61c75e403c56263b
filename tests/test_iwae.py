"""IWAE: the k-sample bound, its k = 1 case, and training."""

from __future__ import annotations

import math

import torch

from helpers import assert_loss_falls, losses_over_steps, train_one_epoch
from vaebench.methods import create_method
from vaebench.metrics import elbo
from vaebench.model import log_joint


def make(name: str, **params) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_method(name, params, data_shape=(8, 8), latent_dim=4)


def test_k1_bound_equals_vae_elbo_for_same_networks_and_noise(tiny_batch):
    vae, iwae = make("vae"), make("iwae", k=1)
    iwae.load_state_dict(vae.state_dict())
    torch.manual_seed(1)
    expected = elbo(vae, tiny_batch, 1)
    torch.manual_seed(1)
    actual = iwae.iwae_bound(tiny_batch, 1)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


def test_bound_is_the_log_mean_of_importance_weights(tiny_batch):
    iwae = make("iwae", k=3)
    torch.manual_seed(2)
    bound = iwae.iwae_bound(tiny_batch, 3)
    torch.manual_seed(2)
    z, log_q = iwae.posterior(tiny_batch, 3)
    weights = (log_joint(iwae, z, tiny_batch) - log_q).double().exp()
    torch.testing.assert_close(bound.double(), weights.mean(0).log(), rtol=1e-5, atol=1e-5)


def test_elbo_stays_the_standard_one_sample_elbo(tiny_batch):
    iwae = make("iwae", k=7)
    torch.manual_seed(3)
    z, log_q = iwae.posterior(tiny_batch, 2)
    torch.testing.assert_close(log_q, iwae.encode(tiny_batch).log_prob(z))
    expected = (log_joint(iwae, z, tiny_batch) - log_q).mean(0)
    torch.manual_seed(3)
    torch.testing.assert_close(elbo(iwae, tiny_batch, 2), expected)


def test_objective_is_the_k_sample_bound_at_the_training_k(tiny_batch):
    iwae = make("iwae", k=7)
    assert iwae.objective_name == "iwae_bound"
    torch.manual_seed(5)
    objective = iwae.objective(tiny_batch)
    torch.manual_seed(5)
    torch.testing.assert_close(objective, iwae.iwae_bound(tiny_batch, 7), rtol=0, atol=0)


def test_training_step_uses_k_samples(tiny_batch):
    iwae = make("iwae", k=5)
    torch.manual_seed(4)
    loss = iwae.training_step(tiny_batch)["model"]
    torch.manual_seed(4)
    assert math.isclose(loss.item(), -iwae.iwae_bound(tiny_batch, 5).mean().item(), rel_tol=1e-6)


def test_loss_falls_on_a_tiny_batch(tiny_batch):
    assert_loss_falls(losses_over_steps(make("iwae", k=5), tiny_batch, 20, "model"))


def test_one_mnist_epoch_is_finite(mnist_500):
    torch.manual_seed(0)
    iwae = create_method("iwae", {"k": 5}, data_shape=mnist_500.image_shape, latent_dim=8)
    (record,) = train_one_epoch(iwae, mnist_500)
    assert math.isfinite(record["train_model"]) and math.isfinite(record["valid_iwae_bound"])
    # the k-sample bound is logged under its own name: it is no ELBO
    assert "valid_elbo" not in record
