"""Planar and Householder flow posteriors: each step's log-determinant against the autograd
Jacobian, the planar step's invertibility where wᵀu < −1, the Householder flow's orthogonality,
the posterior's log q against an independent change of variables, training, and bad configs."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.autograd.functional import jacobian

from helpers import assert_loss_falls, losses_over_steps
from vaebench.cli import field_descriptions
from vaebench.errors import ConfigError
from vaebench.methods import METHODS, create_method, method_config
from vaebench.methods.householder import householder_step
from vaebench.methods.planar import planar_step

FLOWS = ["planar", "householder"]
D = 4  # latent size of the small models
F64 = torch.float64


def planar_parameters(batch: int, seed: int, wu: float | None = None) -> tuple[torch.Tensor, ...]:
    """Random u, w (batch, D) and b (batch, 1); with ``wu``, u is moved along w until wᵀu = wu."""
    g = torch.Generator().manual_seed(seed)
    u, w = torch.randn(2, batch, D, generator=g, dtype=F64)
    b = torch.randn(batch, 1, generator=g, dtype=F64)
    if wu is not None:
        u = u + (wu - (w * u).sum(-1, keepdim=True)) * w / w.square().sum(-1, keepdim=True)
    return u, w, b


def per_example_jacobian(fn, z: torch.Tensor) -> torch.Tensor:
    """∂fn(z)_b/∂z_b for every row b of z (batch, D): (batch, D, D), by autograd.

    The diagonal blocks of the batched map's Jacobian; the others must be zero (rows do not mix).
    """
    full = jacobian(fn, z)  # (batch, D, batch, D)
    blocks = full.diagonal(dim1=0, dim2=2).permute(2, 0, 1)
    off_diagonal = full.clone()
    off_diagonal.diagonal(dim1=0, dim2=2).zero_()
    assert torch.equal(off_diagonal, torch.zeros_like(full))
    return blocks


def on_the_hyperplane(z: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """z moved along w to wᵀz + b = 0, where tanh' = 1 and the planar determinant is smallest."""
    return z - ((z * w).sum(-1, keepdim=True) + b) * w / w.square().sum(-1, keepdim=True)


# --- planar steps ---------------------------------------------------------------------------------

@pytest.mark.parametrize("wu", [None, -0.5, -1.0, -1.5, -4.0, -8.0])
def test_planar_log_det_is_the_autograd_jacobians(wu):
    # (not far below −8: at wᵀz + b = 0 the determinant is softplus(wᵀu), and the autograd
    # Jacobian's 1 − 1 + softplus(wᵀu) loses its digits to cancellation, e.g. 5% at −30 in float64)
    u, w, b = planar_parameters(16, seed=1, wu=wu)
    z = 2 * torch.randn(16, D, dtype=F64)
    z[::2] = on_the_hyperplane(z[::2], w[::2], b[::2])  # half of them where tanh' = 1
    sign, log_abs_det = torch.linalg.slogdet(per_example_jacobian(lambda z: planar_step(z, u, w, b)[0], z))
    assert (sign > 0).all()  # invertible and orientation-preserving everywhere, whatever wᵀu
    torch.testing.assert_close(planar_step(z, u, w, b)[1], log_abs_det, rtol=1e-10, atol=1e-10)


def test_planar_step_broadcasts_over_draws():
    u, w, b = planar_parameters(3, seed=2)
    z = torch.randn(5, 3, D, dtype=F64)
    z_out, log_det = planar_step(z, u, w, b)
    for i in range(5):
        z_i, log_det_i = planar_step(z[i], u, w, b)
        torch.testing.assert_close(z_out[i], z_i, rtol=0, atol=0)
        torch.testing.assert_close(log_det[i], log_det_i, rtol=0, atol=0)


def test_planar_reparameterisation_makes_a_step_with_wu_below_minus_one_invertible():
    """With wᵀu = −3 the raw step z + u tanh(wᵀz + b) folds space (its determinant 1 + tanh'(a) wᵀu
    is negative near wᵀz + b = 0 and positive far from it); with û it is a bijection: each output
    is mapped back to its input by solving the scalar equation along w (the paper's appendix A.1)."""
    u, w, b = planar_parameters(8, seed=3, wu=-3.0)
    z = 3 * torch.randn(8, D, dtype=F64)
    near, far = on_the_hyperplane(z, w, b), on_the_hyperplane(z, w, b) + 5 * w

    def raw_step(z: torch.Tensor, u: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return z + u * torch.tanh((z * w).sum(-1, keepdim=True) + b)

    assert (torch.linalg.det(per_example_jacobian(lambda z: raw_step(z, u, w, b), near)) < 0).all()
    assert (torch.linalg.det(per_example_jacobian(lambda z: raw_step(z, u, w, b), far)) > 0).all()

    # û from the paper's appendix, written out here: wᵀû = −1 + softplus(wᵀu) > −1
    wu = (w * u).sum(-1, keepdim=True)
    u_hat = u + (-1 + torch.log1p(wu.exp()) - wu) * w / w.square().sum(-1, keepdim=True)
    c = (w * u_hat).sum(-1, keepdim=True)
    assert (c > -1).all()
    for points in (z, near, far):
        z_out = planar_step(points, u, w, b)[0]
        # wᵀz' = α + c tanh(α + b) is strictly increasing in α = wᵀz: bisect for α, then z = z' − û tanh(α + b)
        s = (w * z_out).sum(-1, keepdim=True)
        lo, hi = s - c.abs() - 1, s + c.abs() + 1
        for _ in range(200):
            mid = (lo + hi) / 2
            above = mid + c * torch.tanh(mid + b) > s
            lo, hi = torch.where(above, lo, mid), torch.where(above, mid, hi)
        alpha = (lo + hi) / 2
        torch.testing.assert_close(z_out - u_hat * torch.tanh(alpha + b), points, rtol=0, atol=1e-10)


def test_planar_log_det_keeps_its_digits_in_float32_where_the_product_form_cancels():
    """wᵀu = −20 at wᵀz + b = 0: 1 + ψᵀû = softplus(−20) ≈ 2e−9, which float32 cannot resolve
    next to 1; the sum-of-squares form keeps it (checked against float64 autograd), the authors'
    product form log|1 + ψᵀû| does not."""
    u, w, b = planar_parameters(6, seed=4, wu=-20.0)
    z = on_the_hyperplane(torch.randn(6, D, dtype=F64), w, b)
    u, w, b, z = (t.float() for t in (u, w, b, z))
    log_det = planar_step(z, u, w, b)[1]
    u64, w64, b64 = (t.double() for t in (u, w, b))
    expected = torch.linalg.slogdet(per_example_jacobian(lambda z: planar_step(z, u64, w64, b64)[0], z.double()))[1]
    # the reference has cancellation of its own: LU of the 4×4 I + ûψᵀ, entries O(1), leaves ~1e−15
    # on a determinant of 2e−9, a few 1e−6 in the log (measured: up to 4e−6 from ours)
    torch.testing.assert_close(log_det.double(), expected, rtol=0, atol=1e-4)
    # the authors' Planar.forward, in float32: û, ψ = tanh'(a) w, log|1 + ψᵀû|
    wu = (w * u).sum(-1, keepdim=True)
    u_hat = u + (-1 + torch.nn.functional.softplus(wu) - wu) * w / w.square().sum(-1, keepdim=True)
    psi = w * (1 - torch.tanh((w * z).sum(-1, keepdim=True) + b).square())
    product_form = torch.log(torch.abs(1 + (psi * u_hat).sum(-1)))
    assert ((product_form.double() - expected).abs() > 1).all()


# --- Householder steps ----------------------------------------------------------------------------

def test_householder_step_jacobian_is_an_orthogonal_reflection():
    v = torch.randn(10, D, dtype=F64)
    z = 3 * torch.randn(10, D, dtype=F64)
    jac = per_example_jacobian(lambda z: householder_step(z, v), z)
    eye = torch.eye(D, dtype=F64).expand(10, D, D)
    torch.testing.assert_close(jac @ jac.transpose(1, 2), eye, rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.linalg.det(jac), -torch.ones(10, dtype=F64), rtol=0, atol=1e-12)
    # a reflection: v is reversed, the hyperplane orthogonal to v is kept
    torch.testing.assert_close((jac @ v[..., None])[..., 0], -v, rtol=0, atol=1e-12)


# --- the methods ------------------------------------------------------------------------------------

def make(name: str, **params) -> torch.nn.Module:
    torch.manual_seed(0)
    params = {"flows": 3, **params}
    method = create_method(name, params, data_shape=(8, 8), latent_dim=D).double()
    with torch.no_grad():  # larger flow parameters than at initialisation, so the test has teeth
        last = [m for m in method.encoder.modules() if isinstance(m, torch.nn.Linear)][-1]
        last.weight[2 * D:].mul_(4)
        last.bias[2 * D:].normal_()
    return method


@pytest.mark.parametrize("flows", [1, 3])
def test_householder_flow_is_orthogonal_with_determinant_plus_or_minus_one(flows, tiny_batch):
    method, x = make("householder", flows=flows), tiny_batch[:6].double()
    v1 = method.base(x)[1]
    z = torch.randn(6, D, dtype=F64)
    jac = per_example_jacobian(lambda z: method.flow(z, v1)[0], z)
    torch.testing.assert_close(jac @ jac.transpose(1, 2), torch.eye(D, dtype=F64).expand(6, D, D), rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.linalg.det(jac), torch.full((6,), (-1.0) ** flows, dtype=F64), rtol=0, atol=1e-12)
    assert torch.equal(method.flow(z, v1)[1], torch.zeros(6, dtype=F64))
    assert not torch.allclose(jac, torch.eye(D, dtype=F64).expand(6, D, D))  # not the identity


@pytest.mark.parametrize("name", FLOWS)
def test_posterior_log_q_is_the_change_of_variables_density(name, tiny_batch):
    """log q(z|x) from posterior() against log N(ε; 0, I) − log|det ∂z/∂ε| of the whole map
    ε ↦ z_K = flow(μ + σ ⊙ ε), its Jacobian by autograd, at the same ε."""
    method, x, n = make(name), tiny_batch[:6].double(), 3
    torch.manual_seed(7)
    z, log_q = method.posterior(x, n)
    torch.manual_seed(7)
    eps = torch.randn(n * 6, D, dtype=F64)  # the noise rsample draws from the same seed
    q0, params = method.base(x)
    loc, scale, params = (t.repeat(n, 1) for t in (q0.base_dist.loc, q0.base_dist.scale, params))

    def to_z(e: torch.Tensor) -> torch.Tensor:
        return method.flow(loc + scale * e, params)[0]

    torch.testing.assert_close(z, to_z(eps).view(n, 6, D), rtol=0, atol=1e-12)
    log_abs_det = torch.linalg.slogdet(per_example_jacobian(to_z, eps))[1]
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(eps).sum(-1) - log_abs_det
    torch.testing.assert_close(log_q, expected.view(n, 6), rtol=1e-10, atol=1e-10)
    # teeth: the flow moved the draws, and the planar flow changed their density
    z0 = (loc + scale * eps).view(n, 6, D)
    assert (z - z0).abs().amax(-1).min() > 1e-2
    assert name == "householder" or (log_q - q0.log_prob(z0)).abs().min() > 1e-3


def test_householder_analytic_kl_is_the_flowed_posteriors_kl(tiny_batch):
    """N(0, I) is rotation-invariant and the flow orthogonal, so log p(z_T) = log p(z_0) and
    log q(z_T) = log q_0(z_0) draw by draw: KL(q ‖ p) = KL(q_0 ‖ p), which training takes in closed form."""
    method, x = make("householder"), tiny_batch[:6].double()
    q0, v1 = method.base(x)
    z0 = q0.sample((5,))
    z = method.flow(z0, v1)[0]
    torch.testing.assert_close(method.prior.log_prob(z), method.prior.log_prob(z0), rtol=0, atol=1e-12)
    loc, scale = q0.base_dist.loc, q0.base_dist.scale
    closed_form = torch.distributions.kl_divergence(
        torch.distributions.Normal(loc, scale), torch.distributions.Normal(0.0, 1.0)).sum(-1)
    torch.manual_seed(3)
    loss = method.training_step(x)["model"]
    torch.manual_seed(3)
    z = method.flow(q0.rsample(), v1)[0]
    torch.testing.assert_close(loss, -(method.likelihood.log_prob(x, z) - closed_form).mean(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("name, params", [("planar", {}), ("householder", {}), ("householder", {"analytic_kl": False})])
def test_loss_falls_on_a_tiny_batch(name, params, tiny_batch):
    torch.manual_seed(0)
    method = create_method(name, {"flows": 2, **params}, data_shape=(8, 8), latent_dim=D)
    assert method.objective_name == "elbo"
    assert_loss_falls(losses_over_steps(method, tiny_batch, 20, "model"))


# --- configs ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", FLOWS)
def test_every_option_is_described(name):
    config = METHODS.get(name).config_class
    assert set(field_descriptions(config)) == set(config.__dataclass_fields__)


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(FLOWS), flows=st.integers(max_value=0))
def test_a_nonpositive_number_of_flows_is_refused(name, flows):
    with pytest.raises(ConfigError, match="flows must be positive"):
        method_config(name, {"flows": flows})


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(FLOWS), min_scale=st.one_of(st.floats(max_value=0.0), st.just(math.nan)))
def test_a_nonpositive_min_scale_is_refused(name, min_scale):
    with pytest.raises(ConfigError, match="min_scale must be positive"):
        method_config(name, {"min_scale": min_scale})


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(FLOWS),
       flows=st.one_of(st.booleans(), st.floats(allow_nan=False), st.text(max_size=3), st.lists(st.integers(), max_size=2)))
def test_a_number_of_flows_that_is_not_an_integer_is_refused(name, flows):
    with pytest.raises(ConfigError, match=f"methods.{name}.flows: expected an integer"):
        method_config(name, {"flows": flows})


@settings(max_examples=20, deadline=None)
@given(name=st.sampled_from(FLOWS), flows=st.integers(1, 6), min_scale=st.floats(1e-8, 1.0))
def test_valid_settings_build_a_model_with_a_finite_density(name, flows, min_scale):
    config = method_config(name, {"flows": flows, "min_scale": min_scale})
    assert (config.flows, config.min_scale) == (flows, min_scale)
    torch.manual_seed(0)
    method = create_method(name, config, data_shape=(3,), latent_dim=2)
    z, log_q = method.posterior(torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]]), 2)
    assert z.shape == (2, 2, 2) and torch.isfinite(log_q).all()
