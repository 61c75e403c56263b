import math

import pytest
import torch

from vaebench.errors import ConfigError
from vaebench.metrics import elbo, importance_sampled_log_likelihood
from vaebench.methods import create_method
from vaebench.model import log_joint


def _vae(data, latent_dim=8, **params):
    return create_method("vae", params, data_shape=data.image_shape, latent_dim=latent_dim)


def test_vae_loss_falls_on_a_small_subset(mnist_small):
    model = _vae(mnist_small)
    batch = mnist_small.train[:100]
    first = model.update(batch)["model"].item()
    for _ in range(60):
        last = model.update(batch)["model"].item()
    assert last < first - 100, (first, last)  # from ~543 nats to well below


def test_analytic_and_monte_carlo_kl_agree_in_expectation(mnist_small):
    torch.manual_seed(1)
    analytic = _vae(mnist_small, analytic_kl=True)
    monte_carlo = _vae(mnist_small, analytic_kl=False)
    monte_carlo.load_state_dict(analytic.state_dict())
    x = mnist_small.test[:50].expand(400, -1, -1).reshape(-1, 784)
    with torch.no_grad():
        a = analytic.training_step(x)["model"]
        b = monte_carlo.training_step(x)["model"]
    assert abs(a - b) < 0.5, (a, b)


def test_importance_sampling_is_at_least_the_elbo_on_average(mnist_small):
    model = _vae(mnist_small)
    for _ in range(30):
        model.update(mnist_small.train[:200])
    x = mnist_small.test[:100]
    with torch.no_grad():
        bound = elbo(model, x, n_samples=100).mean()
        log_px = importance_sampled_log_likelihood(model, x, n_samples=100).mean()
        one = importance_sampled_log_likelihood(model, x, n_samples=1).mean()
    assert log_px < 0
    assert log_px > bound + 0.5, (log_px, bound)
    # with one sample, importance sampling is the ELBO estimator itself
    assert abs(one - bound) < 2.0, (one, bound)


def test_importance_sampling_refuses_a_point_mass_proposal(mnist_small):
    from vaebench.methods import create_method

    model = create_method("aae", {}, data_shape=mnist_small.image_shape, latent_dim=4)
    with torch.no_grad():
        estimate = importance_sampled_log_likelihood(model, mnist_small.test[:5], n_samples=10)
    assert torch.isnan(estimate).all()


def test_the_analytic_kl_is_refused_for_a_prior_that_is_not_the_standard_normal(tiny_batch):
    """The closed-form KL is the KL to N(0, I): a VAE whose prior was replaced trains on the
    Monte Carlo KL to its own prior, and refuses the closed form in one clear error."""
    class Shifted(torch.nn.Module):
        latent_dim = 2

        def log_prob(self, z):
            return -0.5 * ((z - 1.0).square().sum(-1) + 2 * math.log(2 * math.pi))

        def sample(self, *shape):
            return 1.0 + torch.randn(*shape, 2)

    for analytic in (True, False):
        model = create_method("vae", {"analytic_kl": analytic}, data_shape=(64,), latent_dim=2)
        model.prior = Shifted()
        if analytic:
            with pytest.raises(ConfigError, match="analytic_kl is the KL to N\\(0, I\\)"):
                model.training_step(tiny_batch)
        else:
            torch.manual_seed(1)
            loss = model.training_step(tiny_batch)["model"]
            torch.manual_seed(1)
            z, log_q = model.posterior(tiny_batch, 1)
            torch.testing.assert_close(loss, -(log_joint(model, z, tiny_batch) - log_q).mean())
