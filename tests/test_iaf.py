"""IAF: exact log q by change of variables, the autoregressive structure, and training."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd.functional import jacobian

from helpers import assert_loss_falls, losses_over_steps, train_one_epoch
from vaebench.methods import create_method
from vaebench.metrics import elbo
from vaebench.model import log_joint


def make(**params) -> torch.nn.Module:
    torch.manual_seed(0)
    params = {"made_hidden": [24, 24], "context_dim": 5, "flows": 3, **params}
    iaf = create_method("iaf", params, data_shape=(8, 8), latent_dim=3).double()
    with torch.no_grad():  # move the gates well away from the identity so the test has teeth
        for p in iaf.steps.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return iaf


def test_log_q_matches_numerical_change_of_variables(tiny_batch):
    iaf, x = make(), tiny_batch[:4].double()
    q0, h = iaf.base(x)
    eps = torch.randn(4, 3, dtype=torch.double, generator=torch.Generator().manual_seed(1))
    for b in range(4):
        def to_z(e: torch.Tensor, b: int = b) -> torch.Tensor:
            return iaf.flow(q0.base_dist.loc[b] + q0.base_dist.scale[b] * e, h[b])[0]

        log_abs_det = torch.linalg.slogdet(jacobian(to_z, eps[b]))[1]
        expected = torch.distributions.Normal(0.0, 1.0).log_prob(eps[b]).sum() - log_abs_det
        z = to_z(eps[b])
        # by inversion: z is a fresh tensor, not the cached sample
        actual = iaf.log_q_by_inversion(z[None, None], x[b:b + 1])[0, 0]
        torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-9)


def test_forward_and_inverted_log_q_agree(tiny_batch):
    iaf, x = make(), tiny_batch.double()
    z, log_q = iaf.posterior(x, 5)
    torch.testing.assert_close(log_q, iaf.log_q_by_inversion(z, x), rtol=1e-9, atol=1e-9)


def test_steps_are_autoregressive_in_alternating_orders(tiny_batch):
    iaf = make()
    h = iaf.base(tiny_batch[:1].double())[1][0]
    z = torch.randn(3, dtype=torch.double)
    for t, step in enumerate(iaf.steps):
        jac = jacobian(lambda v: step(v, h)[0], z)
        off_diagonal = jac.triu(1) if t % 2 == 0 else jac.tril(-1)
        assert torch.equal(off_diagonal, torch.zeros_like(jac)), (t, jac)
        assert (jac.tril(-1) if t % 2 == 0 else jac.triu(1)).abs().sum() > 0


def test_elbo_is_the_monte_carlo_elbo_with_exact_log_q(tiny_batch):
    iaf, x = make(), tiny_batch.double()
    torch.manual_seed(3)
    z = iaf.posterior(x, 2).z
    expected = (log_joint(iaf, z, x) - iaf.log_q_by_inversion(z.clone(), x)).mean(0)
    torch.manual_seed(3)
    torch.testing.assert_close(elbo(iaf, x, 2), expected)


@pytest.mark.parametrize("flows", [1, 2])
def test_loss_falls_on_a_tiny_batch(tiny_batch, flows):
    torch.manual_seed(0)
    iaf = create_method("iaf", {"flows": flows, "made_hidden": [32]}, data_shape=(8, 8), latent_dim=4)
    assert_loss_falls(losses_over_steps(iaf, tiny_batch, 20, "model"))


def test_one_mnist_epoch_is_finite(mnist_500):
    torch.manual_seed(0)
    iaf = create_method("iaf", {}, data_shape=mnist_500.image_shape, latent_dim=8)
    (record,) = train_one_epoch(iaf, mnist_500)
    assert iaf.objective_name == "elbo"
    assert math.isfinite(record["train_model"]) and math.isfinite(record["valid_elbo"])
