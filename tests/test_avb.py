"""AVB: losses fall, MNIST trains, the encoder's noise enters every layer, the inner-product
adversary learns log q − log p, and the diagnostics report what the adversary estimates."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vaebench.backbones import Architecture
from vaebench.datasets import DataConfig, load_dataset
from vaebench.methods import create_method
from vaebench.methods.adversarial_nets import NoiseEveryLayerMLP
from vaebench.methods.avb import AVB, DIAGNOSTIC_DRAWS, AdversarialTerms
from vaebench.training import TrainConfig, train

METHODS = ["avb", "avb-ac"]
SMALL = Architecture(hidden=(32, 32))
SMALL_ADVERSARY = {"adversary_hidden": [32, 32], "adversary_features": 16}


@pytest.mark.parametrize("name", METHODS)
def test_losses_fall_on_a_tiny_batch(name):
    torch.manual_seed(0)
    small_basis = {"noise_basis": 4, "basis_hidden": [16], "moment_samples": 32} if name == "avb-ac" else {}
    method = create_method(name, {"lr": 1e-3, "adversary_lr": 1e-3, "noise_dim": 4, **SMALL_ADVERSARY, **small_basis},
                           data_shape=(4,), latent_dim=2, architecture=SMALL)
    batch = torch.eye(4).repeat(8, 1)
    history = torch.stack([torch.stack([losses["model"], losses["adversary"]])
                           for losses in (method.update(batch) for _ in range(300))])
    model, adversary = history[:, 0], history[:, 1]
    # Both players' losses fall by a clear margin (first vs last 20 steps; noise is ~0.1).
    assert model[-20:].mean() < model[:20].mean() - 0.5
    if name == "avb":
        assert adversary[-20:].mean() < adversary[:20].mean() - 0.5
    else:
        # AC's contrast r(z|x) has q's moments, so u is close to N(0, I): its adversary starts
        # above the loss of a guess, 2 log 2 (at 1.72, from the ½‖u‖² term), and falls to it or
        # a little below (per-step losses scatter by ~0.04, a mean of 20 by ~0.01).
        assert adversary[-20:].mean() < adversary[:20].mean() - 0.3
        assert adversary[-20:].mean() < 2 * math.log(2) + 0.05


@pytest.mark.parametrize("name", METHODS)
def test_one_mnist_epoch_has_finite_losses(name):
    torch.manual_seed(0)
    data = load_dataset("mnist", DataConfig(train_subset=500, valid_subset=100, test_subset=100))
    method = create_method(name, {"adversary_hidden": [64, 64], "adversary_features": 64},
                           data_shape=data.image_shape, latent_dim=8, architecture=Architecture(hidden=(64, 64)))
    result = train(method, data, TrainConfig(epochs=1, batch_size=100), seed=0,
                   dynamic_binarization=True, progress=False)
    (record,) = result.history
    assert result.steps == 5
    assert method.objective_name == "adversary_elbo_estimate"
    assert {"train_model", "train_adversary", "valid_adversary_elbo_estimate"} <= set(record)
    # the adversary's estimate is no bound, so it is not logged as an ELBO
    assert "valid_elbo" not in record
    assert all(math.isfinite(v) for v in record.values())
    # 784 binary pixels: log p(x|z) is far below 0 at any T this early
    assert record["valid_adversary_elbo_estimate"] < 0


def test_encoder_noise_enters_every_layer():
    """As in the authors' full0.py: ε is added (through its own linear map) before every
    layer, the output layer included. With only layer k's noise map left on, the output still
    depends on ε, for every k; with all of them off, it does not."""
    torch.manual_seed(0)
    method = create_method("avb", {"noise_dim": 3, **SMALL_ADVERSARY}, data_shape=(5,), latent_dim=2,
                           architecture=Architecture(hidden=(8, 8, 8)))
    encoder = method.encoder
    assert isinstance(encoder, NoiseEveryLayerMLP)
    assert len(encoder.noise) == len(encoder.layers) == 4  # input, three hidden layers
    nn.init.normal_(encoder.layers[-1].weight)  # the authors' ~0 output init would hide everything
    x = torch.rand(6, 5)
    eps = torch.randn(2, 6, 3)

    def spread() -> float:
        with torch.no_grad():
            z = encoder(x, eps)
        return (z[0] - z[1]).abs().max().item()

    saved = [(m.weight.clone(), m.bias.clone()) for m in encoder.noise]
    with torch.no_grad():
        for m in encoder.noise:
            m.weight.zero_(), m.bias.zero_()
    assert spread() == 0
    for k, (weight, bias) in enumerate(saved):
        with torch.no_grad():
            encoder.noise[k].weight.copy_(weight)
            encoder.noise[k].bias.copy_(bias)
        assert spread() > 1e-3, f"noise does not reach the output through layer {k}"
        with torch.no_grad():
            encoder.noise[k].weight.zero_(), encoder.noise[k].bias.zero_()


class KnownGaussianPosterior(AVB):
    """AVB whose posterior is fixed: q(z|x_k) = N(LOC[k], diag SCALE[k]²) for one-hot x_k.

    The draws are replaced in :meth:`terms`, the hook through which an adversarial method's
    training step, diagnostics, objective and :meth:`posterior` all draw from q(z|x).
    """

    LOC = torch.tensor([[1.5, 0.0], [-1.0, 1.0]])
    SCALE = torch.tensor([[0.3, 0.5], [0.8, 0.25]])

    def terms(self, x: torch.Tensor, n: int) -> AdversarialTerms:
        z = x @ self.LOC + (x @ self.SCALE) * torch.randn(n, x.shape[0], 2)
        return AdversarialTerms(z=z, u=z, log_p_over_r=z.new_zeros(z.shape[:-1]))

    def log_ratio(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        q = torch.distributions.Normal(x @ self.LOC, x @ self.SCALE)
        return q.log_prob(z).sum(-1) - self.prior.log_prob(z)

    def exact_kl(self, x: torch.Tensor) -> torch.Tensor:
        loc, scale = x @ self.LOC, x @ self.SCALE
        return 0.5 * (loc.square() + scale.square() - 1 - 2 * scale.log()).sum(-1)


@pytest.mark.parametrize("prior_in_adversary", [True, False])
def test_inner_product_adversary_learns_the_log_density_ratio(prior_in_adversary):
    """Trained alone to its optimum, T(x, z) = ⟨θ(x), s(z)⟩ + T_x + T_z (+ ½‖z‖²) is
    log q(z|x) − log p(z) on a case where that is known in closed form."""
    torch.manual_seed(0)
    method = KnownGaussianPosterior(
        KnownGaussianPosterior.config_class(adversary_lr=1e-3, adversary_hidden=(64, 64), adversary_features=16,
                                            prior_in_adversary=prior_in_adversary),
        data_shape=(2,), latent_dim=2)
    optimizer = method.configure_optimizers()["adversary"]
    x = torch.eye(2).repeat(128, 1)
    for step in range(1000):
        if step == 800:  # a smaller last stretch, so the comparison is not dominated by SGD noise
            optimizer.param_groups[0]["lr"] = 1e-4
        method.apply_losses(method.training_step(x), names=["adversary"])
    # Compare at z ~ q(z|x), where the ELBO uses T. (Where q has no mass the logistic loss
    # saturates and T is not identified; nor is it needed there.)
    with torch.no_grad():
        x = torch.eye(2).repeat(2000, 1)
        z = method.posterior(x).z
        truth = method.log_ratio(z, x)
        error = method.adversary(x, z) - truth
    # The ratio varies by ~0.75 nats (mean absolute deviation) over these draws and an
    # untrained T errs by > 1, so 0.25 means T found the shape of log q − log p; its mean,
    # the KL term of the ELBO, must be right to 0.1 nats (the two KLs are 1.3 and 1.6 nats).
    assert (truth - truth.mean()).abs().mean().item() > 0.5
    assert error.abs().mean().item() < 0.25
    assert abs(error.mean().item()) < 0.1


class LinearAdversary(nn.Module):
    """A hand-made adversary T(x, z) = z₀ + 2·x₀ − 0.5, with the x_features/score interface."""

    def x_features(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x[..., 0] - 0.5

    def score(self, features: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return z[..., 0] + features

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.score(self.x_features(x), z)


def test_diagnostics_report_the_adversarys_estimates():
    torch.manual_seed(0)
    method = KnownGaussianPosterior(KnownGaussianPosterior.config_class(adversary_hidden=(8,), adversary_features=4),
                                    data_shape=(2,), latent_dim=2, architecture=SMALL)
    method.adversary = LinearAdversary()
    x = torch.eye(2).repeat(2000, 1)
    diagnostics = method.diagnostics(x)
    assert set(diagnostics) == {"adversary_kl", "elbo_adversary_est", "adversary_accuracy"}
    assert [c.name for c in method.columns] == ["adversary_kl", "elbo_adversary_est", "adversary_accuracy"]
    assert all(v.shape == (4000,) for v in diagnostics.values())

    def check(name: str, exact: torch.Tensor) -> None:
        """Per data point, the mean over its 2,000 copies is within 4 standard errors of exact."""
        values = diagnostics[name].reshape(2000, 2)
        sem = values.std(0) / 2000 ** 0.5
        assert ((values.mean(0) - exact).abs() < 4 * sem + 1e-6).all(), (name, values.mean(0), exact)

    loc, scale = KnownGaussianPosterior.LOC, KnownGaussianPosterior.SCALE
    t_mean = loc[:, 0] + torch.tensor([1.5, -0.5])
    check("adversary_kl", t_mean)  # E_q[T], T taken as the log-ratio estimate (r = p for AVB)
    normal = torch.distributions.Normal(0.0, 1.0)
    # T > 0 on a posterior draw iff z₀ > 0.5 − 2x₀; T < 0 on a prior draw iff η₀ < 0.5 − 2x₀
    threshold = torch.tensor([-1.5, 0.5])
    accuracy = 0.5 * (1 - normal.cdf((threshold - loc[:, 0]) / scale[:, 0]) + normal.cdf(threshold))
    check("adversary_accuracy", accuracy)
    # the ELBO estimate is E_q[log p(x|z)] − E_q[T] draw by draw
    with torch.no_grad():
        torch.manual_seed(1)
        z = method.posterior(x, DIAGNOSTIC_DRAWS).z
        recon = method.likelihood.log_prob(x, z).mean(0).reshape(2000, 2).mean(0)
    check("elbo_adversary_est", recon - t_mean)


def test_posterior_has_draws_and_no_density_and_the_objective_is_the_adversarys_estimate():
    """q(z|x) is implicit: draws without log q. The validation objective is the adversary's ELBO
    estimate log p(x|z) − T(x, z) at one draw per example (r = p for AVB), not a bound."""
    torch.manual_seed(0)
    method = KnownGaussianPosterior(KnownGaussianPosterior.config_class(adversary_hidden=(8,), adversary_features=4),
                                    data_shape=(2,), latent_dim=2, architecture=SMALL)
    method.adversary = LinearAdversary()
    x = torch.eye(2).repeat(5, 1)
    assert not method.has_density
    torch.manual_seed(1)
    z, log_q = method.posterior(x, 3)
    assert z.shape == (3, 10, 2) and log_q is None
    torch.manual_seed(1)
    torch.testing.assert_close(z, x @ method.LOC + (x @ method.SCALE) * torch.randn(3, 10, 2), rtol=0, atol=0)
    with torch.no_grad():
        torch.manual_seed(2)
        objective = method.objective(x)
        torch.manual_seed(2)
        (z,) = method.posterior(x, 1).z
        expected = method.likelihood.log_prob(x, z) - method.adversary(x, z)
    assert objective.shape == (10,)
    torch.testing.assert_close(objective, expected)


@pytest.mark.parametrize("name", METHODS)
def test_adversary_warm_up_trains_the_adversary_alone_and_lowers_its_loss(name):
    small_basis = {"noise_basis": 4, "basis_hidden": [16], "moment_samples": 32} if name == "avb-ac" else {}
    options = {"lr": 1e-3, "adversary_lr": 1e-3, "noise_dim": 4, **SMALL_ADVERSARY, **small_basis}
    methods = {}
    for steps in (0, 200):
        torch.manual_seed(0)
        methods[steps] = create_method(name, {**options, "adversary_warmup_steps": steps},
                                       data_shape=(4,), latent_dim=2, architecture=SMALL)
        methods[steps].configure_optimizers()
        methods[steps].init_from_data(torch.eye(4))
    cold, warm = methods[0], methods[200]
    cold_state, warm_state = cold.state_dict(), warm.state_dict()
    # the encoder and decoder are the untrained ones; only the adversary moved, by 200 Adam steps
    for key, value in cold_state.items():
        if not key.startswith("adversary."):
            assert torch.equal(value, warm_state[key]), key
    assert any(not torch.equal(value, warm_state[key])
               for key, value in cold_state.items() if key.startswith("adversary."))
    adversary_states = list(warm.optimizers["adversary"].state.values())
    assert adversary_states and all(int(state["step"]) == 200 for state in adversary_states)
    assert not cold.optimizers["adversary"].state and not warm.optimizers["model"].state
    # on the same fresh draws, the warmed adversary tells posterior from prior draws better
    x = torch.eye(4).repeat(256, 1)
    losses = {}
    for steps, method in methods.items():
        torch.manual_seed(1)
        with torch.no_grad():
            t = method.terms(x, 1)
            features = method.adversary.x_features(x)
            losses[steps] = method.adversary_loss(features, method.adversary.score(features, t.u)).item()
    assert losses[200] < losses[0] - 0.1, losses
