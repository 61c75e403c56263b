"""DReG for the IWAE and sticking the landing for the VAE, against the standard estimator.

Each estimator is drawn R times on a small model in float64 (3 examples of 12 binary pixels, a
2-D latent, one hidden layer of 10 tanh units; the IWAE with k = 10), partly trained: 100 Adam
steps (lr 1e-2) of the standard estimator on those examples. The R draws are vectorised: the
examples are repeated R times in one batch, and since each row's loss depends on the encoder
only through that row's outputs, one backward pass gives every draw's gradient with respect to
the encoder's outputs, which the encoder's Jacobian at the 3 examples turns into per-draw
parameter gradients. Standard and new estimator draw the same noise (same seed), so their
per-draw difference tests the means (paired z-score per encoder parameter) and the variance
ratio Σ_j var(standard_j) / Σ_j var(new_j) over the encoder's parameters gets a delta-method
standard error over draws.

Thresholds: |z| < 5 for each of the 164 encoder parameters that get a gradient (174 less the
10 weights of a pixel that is 0 in all 3 examples): a family-wise false alarm of about 1e-4 for
a normal z, with a margin for the heavy tails of per-draw gradients. The same test flags the
biased IWAE-STL surrogate (the authors' "stl" estimator, biased for k > 1) at |z| = 140. The
variance ratio must exceed 1 by 4 standard errors.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vaebench.backbones import Architecture
from vaebench.config import from_dict
from vaebench.errors import ConfigError
from vaebench.methods import METHODS, create_method, method_config
from vaebench.methods.iwae import IWAE, IWAEConfig
from vaebench.methods.vae import VAE, VAEConfig

ARCH = Architecture(hidden=(10,), activation="tanh")
PIXELS, LATENT, K = 12, 2, 10
DRAWS = 2000
Z_LIMIT = 5.0
SE_MARGIN = 4.0


@pytest.fixture(scope="module")
def examples() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return (torch.rand(3, PIXELS, generator=g, dtype=torch.float64) < 0.5).double()


def _build(name: str, params: dict, cls: type | None = None) -> torch.nn.Module:
    torch.manual_seed(0)
    kwargs = {"data_shape": (PIXELS,), "latent_dim": LATENT, "architecture": ARCH}
    if cls is None:
        return create_method(name, params, **kwargs).double()
    return cls(method_config(name, params), **kwargs).double()


def _trained_state(name: str, params: dict, examples: torch.Tensor) -> dict[str, torch.Tensor]:
    method = _build(name, {**params, "lr": 1e-2})
    torch.manual_seed(1)
    for _ in range(100):
        method.update(examples)
    return method.state_dict()


def _draws(method: torch.nn.Module, examples: torch.Tensor, seed: int = 2
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(R, P) per-draw gradients of the loss (mean over the examples) with respect to the
    encoder's P parameters, the decoder's gradient summed over draws, and the loss's value."""
    n = examples.shape[0]
    outputs = []
    hook = method.encoder.body.register_forward_hook(lambda module, args, out: outputs.append(out))
    torch.manual_seed(seed)
    loss = method.training_step(examples.repeat(DRAWS, 1))["model"]
    hook.remove()
    decoder = list(method.decoder.parameters())
    grad_out, *grad_decoder = torch.autograd.grad(loss, outputs + decoder)
    # the batch's loss is the mean of the R draws' losses: each draw's own gradient is R times its share
    per_draw = grad_out.reshape(DRAWS, n, -1) * DRAWS
    body = method.encoder.body
    params = {k: v.detach() for k, v in body.named_parameters()}
    jac = torch.func.jacrev(lambda p: torch.func.functional_call(body, p, (examples,)))(params)
    jac = torch.cat([j.reshape(n, j.shape[1], -1) for j in jac.values()], -1)  # (examples, outputs, P)
    return (torch.einsum("rbo,bop->rp", per_draw, jac), torch.cat([g.flatten() for g in grad_decoder]),
            loss.detach())


def _compare(standard: torch.Tensor, new: torch.Tensor) -> tuple[float, float, float]:
    """max_j |z_j| of the paired mean difference, the variance ratio and its standard error."""
    r = standard.shape[0]
    diff = new - standard
    # weights of a pixel that is 0 in every example get no gradient from either estimator
    moving = (standard != 0).any(0) | (new != 0).any(0)
    z = diff.mean(0)[moving] / (diff.std(0)[moving] / math.sqrt(r))
    spread_standard = (standard - standard.mean(0)).square().sum(1)  # per draw: Σ_j (g_j − ḡ_j)²
    spread_new = (new - new.mean(0)).square().sum(1)
    ratio = spread_standard.mean() / spread_new.mean()
    se = (spread_standard - ratio * spread_new).std() / math.sqrt(r) / spread_new.mean()
    return z.abs().max().item(), ratio.item(), se.item()


class _IWAEWithoutTheSecondWeight(IWAE):
    """The DReG surrogate without the hook: Σ_i w̃_i ∂log w_i/∂z_i ∂z_i/∂φ, the authors' biased
    "stl" estimator for k > 1 (a negative control for the z-test)."""

    def _dreg(self, z, log_w, weight):
        normalised = torch.softmax(log_w.detach(), 0)
        surrogate = (normalised * log_w).sum(0)
        return torch.logsumexp(log_w.detach(), 0) - math.log(log_w.shape[0]) + (surrogate - surrogate.detach())


@pytest.mark.parametrize("kl_weight", [1.0, 0.5])
def test_dreg_is_unbiased_with_lower_variance_and_keeps_the_decoder_gradient_and_the_bound(examples, kl_weight):
    """Measured (R = 2000, ± one SE): at β = 1, max |z| 2.3 and variance ratio 21.3 ± 1.1; with
    the KL weighted by β = 0.5 inside each log weight (encoder weights (1 − β) w̃ + β w̃²),
    max |z| 3.8 and ratio 7.8 ± 0.2. At initialisation, before the 100 steps, the ratios were
    1.32 ± 0.10 and 1.35 ± 0.07."""
    params = {"k": K, "kl_weight": kl_weight}
    state = _trained_state("iwae", params, examples)
    standard, dreg = _build("iwae", params), _build("iwae", {**params, "gradient": "dreg"})
    standard.load_state_dict(state)
    dreg.load_state_dict(state)
    g_standard, decoder_standard, loss_standard = _draws(standard, examples)
    g_dreg, decoder_dreg, loss_dreg = _draws(dreg, examples)
    # the logged loss is the bound itself, and the decoder's gradient the standard one, draw by draw
    torch.testing.assert_close(loss_dreg, loss_standard, rtol=1e-14, atol=0)
    torch.testing.assert_close(decoder_dreg, decoder_standard, rtol=1e-10, atol=1e-12)
    z, ratio, se = _compare(g_standard, g_dreg)
    assert z < Z_LIMIT, z
    assert ratio > 1 + SE_MARGIN * se, (ratio, se)


def test_stl_is_unbiased_with_lower_variance_and_keeps_the_decoder_gradient_and_the_elbo(examples):
    """Measured (R = 2000, ± one SE): max |z| 2.7, variance ratio 11.5 ± 0.2. At initialisation,
    before the 100 steps, STL had the higher variance (ratio 0.86 ± 0.02): the score term it
    drops is zero in expectation but correlated with the path term; Roeder et al.'s argument is
    for q near the posterior, where STL's variance vanishes as q reaches it."""
    params = {"analytic_kl": False}
    state = _trained_state("vae", params, examples)
    standard, stl = _build("vae", params), _build("vae", {**params, "gradient": "stl"})
    standard.load_state_dict(state)
    stl.load_state_dict(state)
    g_standard, decoder_standard, loss_standard = _draws(standard, examples)
    g_stl, decoder_stl, loss_stl = _draws(stl, examples)
    assert torch.equal(loss_stl, loss_standard)
    torch.testing.assert_close(decoder_stl, decoder_standard, rtol=1e-10, atol=1e-12)
    z, ratio, se = _compare(g_standard, g_stl)
    assert z < Z_LIMIT, z
    assert ratio > 1 + SE_MARGIN * se, (ratio, se)


def test_the_z_test_flags_the_biased_surrogate_without_the_second_weight(examples):
    """Measured: max |z| 140 (threshold 5)."""
    state = _trained_state("iwae", {"k": K}, examples)
    standard, biased = _build("iwae", {"k": K}), _build("iwae", {"k": K, "gradient": "dreg"}, _IWAEWithoutTheSecondWeight)
    standard.load_state_dict(state)
    biased.load_state_dict(state)
    z, _, _ = _compare(_draws(standard, examples)[0], _draws(biased, examples)[0])
    assert z > 10 * Z_LIMIT, z


def test_dreg_at_one_sample_is_sticking_the_landing(examples):
    """With k = 1 the normalised weight is 1: DReG's gradient is STL's, parameter by parameter."""
    iwae = _build("iwae", {"k": 1, "gradient": "dreg"})
    vae = _build("vae", {"analytic_kl": False, "gradient": "stl"})
    vae.load_state_dict(iwae.state_dict())
    gradients = []
    for method in (iwae, vae):
        torch.manual_seed(3)
        loss = method.training_step(examples)["model"]
        gradients.append(torch.autograd.grad(loss, list(method.parameters())))
    for a, b in zip(*gradients):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


# --- options and refusals ------------------------------------------------------------------------

@settings(max_examples=30, deadline=None)
@given(value=st.one_of(st.text(max_size=8), st.integers(), st.booleans(), st.none()))
def test_a_gradient_outside_each_methods_own_choices_is_refused_in_one_line(value):
    for config, choices in ((VAEConfig, ("standard", "stl")), (IWAEConfig, ("standard", "dreg"))):
        params = {"gradient": value, "analytic_kl": False}
        if value in choices and isinstance(value, str):
            assert from_dict(config, params).gradient == value
        else:
            with pytest.raises(ConfigError) as error:
                from_dict(config, params)
            assert len(str(error.value).splitlines()) == 1


def test_stl_needs_the_monte_carlo_kl():
    with pytest.raises(ConfigError, match="gradient = 'stl' needs the Monte Carlo KL: set analytic_kl = false"):
        method_config("vae", {"gradient": "stl"})


def test_a_subclass_that_replaces_the_training_step_refuses_the_estimator_it_would_ignore():
    class OwnStep(VAE):
        def training_step(self, batch):
            return {"model": -self.objective(batch).mean()}

    with pytest.raises(ConfigError, match="gradient = 'stl' is implemented in vae's encode, training_step, which "
                                          "OwnStep overrides \\(training_step\\)"):
        OwnStep(VAEConfig(analytic_kl=False, gradient="stl"), data_shape=(PIXELS,), latent_dim=LATENT)


def _with_gradient_choices():
    for name in METHODS.names():
        config = METHODS.get(name).config_class
        for choice in getattr(config, "GRADIENTS", ()):
            if choice != "standard":
                yield name, choice


@pytest.mark.parametrize("name, choice", list(_with_gradient_choices()))
def test_every_method_with_a_gradient_option_uses_it_or_refuses_it(name, choice, examples):
    """A registered method whose config offers ``gradient`` (inherited, say) either refuses the
    estimator when built or trains with it: the same loss value, another encoder gradient."""
    params = {"gradient": choice}
    if "analytic_kl" in METHODS.get(name).config_class.__dataclass_fields__:
        params["analytic_kl"] = False  # STL's requirement; the IWAE family's default
    try:
        new = _build(name, params)
    except ConfigError as error:
        assert len(str(error).splitlines()) == 1
        return
    standard = _build(name, {**params, "gradient": "standard"})
    standard.load_state_dict(new.state_dict())
    losses, gradients = [], []
    for method in (standard, new):
        torch.manual_seed(4)
        loss = method.training_step(examples)["model"]
        losses.append(loss.detach())
        gradients.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(method.encoder.parameters()))]))
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-12, atol=0)
    assert not torch.allclose(gradients[1], gradients[0], rtol=1e-6, atol=0)
