"""AAE: the update schedule, the posterior and its ELBO story, and training."""

from __future__ import annotations

import math

import pytest
import torch

from helpers import assert_loss_falls, losses_over_steps, train_one_epoch
from vaebench.errors import ConfigError
from vaebench.methods import create_method, method_config
from vaebench.metrics import elbo, importance_sampled_log_likelihood
from vaebench.model import log_joint


def make(**params) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_method("aae", {"discriminator_hidden": [32, 32], **params}, data_shape=(8, 8), latent_dim=4)


@pytest.mark.parametrize("encoder", ["deterministic", "gaussian"])
def test_reconstruction_loss_falls_on_a_tiny_batch(tiny_batch, encoder):
    assert_loss_falls(losses_over_steps(make(encoder=encoder), tiny_batch, 20, "reconstruction"))


def test_discriminator_loss_falls_with_the_encoder_frozen(tiny_batch):
    aae = make()
    aae.configure_optimizers()
    losses = []
    for _ in range(20):
        loss = aae.discriminator_loss(tiny_batch)
        aae.apply_losses({"discriminator": loss}, ["discriminator"])
        losses.append(loss.item())
    assert_loss_falls(losses)


def test_update_is_reconstruction_then_discriminator_then_generator(tiny_batch):
    aae, manual = make(), make()
    torch.manual_seed(1)
    aae.update(tiny_batch)
    torch.manual_seed(1)
    manual.configure_optimizers()
    for name, loss_fn in (("reconstruction", manual.reconstruction_loss),
                          ("discriminator", manual.discriminator_loss),
                          ("generator", manual.generator_loss)):
        manual.apply_losses({name: loss_fn(tiny_batch)}, [name])
    for (name, a), b in zip(aae.named_parameters(), manual.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    # one Adam step per group that a parameter belongs to: the encoder is in two groups
    encoder_param = next(aae.encoder.parameters())
    assert aae.optimizers["reconstruction"].state[encoder_param]["step"] == 1
    assert aae.optimizers["generator"].state[encoder_param]["step"] == 1
    assert all(aae.optimizers["discriminator"].state[p]["step"] == 1 for p in aae.discriminator.parameters())


def test_deterministic_posterior_is_a_point_mass_with_nan_elbo(tiny_batch):
    aae = make()
    z, log_q = aae.posterior(tiny_batch, 3)
    assert z.shape == (3, 32, 4)
    assert torch.equal(z[0], z[2])
    assert not aae.has_density
    assert torch.isnan(elbo(aae, tiny_batch)).all()
    # a point mass has no density: the posterior returns none
    assert log_q is None
    assert torch.isnan(importance_sampled_log_likelihood(aae, tiny_batch, 10)).all()
    # whether q has a density follows the configuration; it cannot be set on an instance
    with pytest.raises(AttributeError):
        aae.has_density = True


def test_posterior_noise_gives_a_gaussian_density_around_the_code(tiny_batch):
    aae = make(posterior_noise_std=0.5)
    assert aae.has_density
    z, log_q = aae.posterior(tiny_batch, 4)
    assert not torch.equal(z[0], z[1])
    expected = torch.distributions.Normal(aae.encoder(tiny_batch), 0.5).log_prob(z).sum(-1)
    torch.testing.assert_close(log_q, expected)
    log_px = importance_sampled_log_likelihood(aae, tiny_batch, 10)
    assert torch.isfinite(elbo(aae, tiny_batch)).all() and torch.isfinite(log_px).all()


def test_gaussian_encoder_elbo_uses_its_density(tiny_batch):
    aae = make(encoder="gaussian")
    assert aae.has_density
    torch.manual_seed(2)
    z, log_q = aae.posterior(tiny_batch, 2)
    torch.testing.assert_close(log_q, aae.encoder(tiny_batch).log_prob(z))
    expected = (log_joint(aae, z, tiny_batch) - aae.encoder(tiny_batch).log_prob(z)).mean(0)
    torch.manual_seed(2)
    torch.testing.assert_close(elbo(aae, tiny_batch, 2), expected)


def test_objective_is_the_reconstruction_log_likelihood_at_the_code(tiny_batch):
    aae = make(posterior_noise_std=0.5)  # evaluation's noise never enters the training objective
    expected = aae.likelihood.log_prob(tiny_batch, aae.encoder(tiny_batch))
    torch.testing.assert_close(aae.objective(tiny_batch), expected)


def test_noise_with_gaussian_encoder_is_refused():
    with pytest.raises(ConfigError):
        method_config("aae", {"encoder": "gaussian", "posterior_noise_std": 0.1})


def test_one_mnist_epoch_is_finite(mnist_500):
    torch.manual_seed(0)
    aae = create_method("aae", {}, data_shape=mnist_500.image_shape, latent_dim=8)
    (record,) = train_one_epoch(aae, mnist_500)
    assert all(math.isfinite(record[f"train_{k}"]) for k in ("reconstruction", "discriminator", "generator"))
    # validation logs the AAE's own objective, the reconstruction log-likelihood, not an ELBO
    assert aae.objective_name == "recon_log_likelihood"
    assert math.isfinite(record["valid_recon_log_likelihood"]) and "valid_elbo" not in record
