"""WAE-MMD: the MMD U-statistic against its definition on hand-made points, unbiased (zero mean
when q = p, the same mean at every sample size when q ≠ p) and positive for shifted
distributions; the point-mass posterior, the objective's name and terms, a falling loss, and
config validation."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import assert_loss_falls, assert_refused_in_one_line, losses_over_steps, train_one_epoch
from vaebench.methods import create_method, method_config
from vaebench.methods.wae import AUTHORS_SCALES, imq_kernel, imq_mmd, squared_distances
from vaebench.metrics import elbo, importance_sampled_log_likelihood


def make(**params) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_method("wae-mmd", params, data_shape=(8, 8), latent_dim=4)


# --- the estimator against its definition ---------------------------------------------------------

def test_mmd_of_two_points_each_in_one_dimension_by_hand():
    # k(x, y) = 1 / (1 + (x − y)²) (c_base 1, one scale): q = {0, 1}, p = {0, 2}
    # q–q over i ≠ j: 2 · k(0, 1) / 2 = 1/2; p–p: k(0, 2) = 1/5;
    # q–p, all four pairs: (k(0,0) + k(0,2) + k(1,0) + k(1,2)) / 4 = (1 + 1/5 + 1/2 + 1/2) / 4 = 0.55
    qz = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    pz = torch.tensor([[0.0], [2.0]], dtype=torch.float64)
    assert imq_mmd(qz, pz, c_base=1.0, scales=(1.0,)).item() == pytest.approx(0.5 + 0.2 - 2 * 0.55, abs=1e-15)


def explicit_mmd(qz: list[list[float]], pz: list[list[float]], c_base: float, scales) -> float:
    """The U-statistic from its definition, one pair at a time in Python floats."""
    def k(a, b):
        d2 = sum((ai - bi) ** 2 for ai, bi in zip(a, b))
        return sum(s * c_base / (s * c_base + d2) for s in scales)

    n, m = len(qz), len(pz)
    qq = sum(k(qz[i], qz[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    pp = sum(k(pz[i], pz[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    qp = sum(k(a, b) for a in qz for b in pz) / (n * m)
    return qq + pp - 2 * qp


@pytest.mark.parametrize("m", [3, 4])
def test_mmd_equals_its_definition_on_hand_made_points_with_the_authors_scales(m):
    qz = [[0.0, 1.0], [2.0, -1.0], [0.5, 0.5]]
    pz = [[-1.0, 0.0], [1.0, 1.0], [0.0, -2.0], [3.0, 0.5]][:m]
    c_base = 2 * 2  # 2 · d · σ², d = 2, σ = 1: the authors' Cbase for N(0, I) in two dimensions
    got = imq_mmd(torch.tensor(qz, dtype=torch.float64), torch.tensor(pz, dtype=torch.float64), c_base)
    assert got.item() == pytest.approx(explicit_mmd(qz, pz, c_base, AUTHORS_SCALES), rel=1e-14, abs=1e-14)
    # leading dimensions are independent pairs of samples, each with its own statistic
    q2 = torch.tensor([qz, [[1.0, 1.0], [0.0, 0.0], [-1.0, 2.0]]], dtype=torch.float64)
    p2 = torch.tensor([pz, [[0.0, 0.0]] * m], dtype=torch.float64)
    expected = [explicit_mmd(q2[r].tolist(), p2[r].tolist(), c_base, AUTHORS_SCALES) for r in range(2)]
    assert imq_mmd(q2, p2, c_base).tolist() == pytest.approx(expected, rel=1e-14, abs=1e-14)


def test_the_methods_penalty_uses_c_base_2d_and_as_many_prior_draws_as_codes():
    wae = make(kernel_scales=[0.5, 3.0])
    z = torch.randn(6, 4)
    torch.manual_seed(5)
    got = wae.mmd(z)
    torch.manual_seed(5)
    pz = torch.randn(6, 4)
    expected = explicit_mmd(z.tolist(), pz.tolist(), 2 * 4, (0.5, 3.0))
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_fewer_than_two_points_is_refused():
    with pytest.raises(ValueError, match="at least 2 points"):
        imq_mmd(torch.zeros(1, 2), torch.zeros(5, 2), 4.0)
    with pytest.raises(ValueError, match="at least 2 points"):
        make().objective(torch.zeros(1, 64))


# --- unbiasedness and power -------------------------------------------------------------------------

def mmd_draws(n: int, reps: int, shift: float, d: int = 4, biased: bool = False) -> torch.Tensor:
    """``reps`` independent U-statistics between n draws of N(shift, I) and n of N(0, I); with
    ``biased`` the V-statistic of the same draws (the diagonals i = j kept)."""
    g = torch.Generator().manual_seed(n * 1000 + int(10 * shift))
    q = torch.randn(reps, n, d, generator=g, dtype=torch.float64) + shift
    p = torch.randn(reps, n, d, generator=g, dtype=torch.float64)
    if biased:
        def k(a, b):
            return imq_kernel(squared_distances(a, b), 2.0 * d, AUTHORS_SCALES).mean((-2, -1))
        return k(q, q) + k(p, p) - 2 * k(q, p)
    return imq_mmd(q, p, 2.0 * d)


def mean_and_sem(values: torch.Tensor) -> tuple[float, float]:
    return values.mean().item(), (values.std() / math.sqrt(len(values))).item()


def test_mmd_is_zero_in_expectation_when_q_equals_p():
    mean, sem = mean_and_sem(mmd_draws(n=8, reps=4000, shift=0.0))
    assert abs(mean) < 3 * sem, (mean, sem)
    # the test has the power to see a bias: the V-statistic of the same draws (diagonals kept,
    # biased by about 2 (k(z, z) − E k(z, z')) / n) is far from 0
    v_mean, v_sem = mean_and_sem(mmd_draws(n=8, reps=4000, shift=0.0, biased=True))
    assert v_mean > 100 * v_sem, (v_mean, v_sem)


def test_mmd_is_positive_for_shifted_distributions_and_its_mean_does_not_depend_on_n():
    small, small_sem = mean_and_sem(mmd_draws(n=4, reps=3000, shift=0.5))
    large, large_sem = mean_and_sem(mmd_draws(n=64, reps=150, shift=0.5))
    assert small > 10 * small_sem and large > 10 * large_sem
    # unbiased at every n: the same expectation at n = 4 and n = 64
    assert abs(small - large) < 3 * math.hypot(small_sem, large_sem), (small, small_sem, large, large_sem)
    further, further_sem = mean_and_sem(mmd_draws(n=64, reps=150, shift=1.0))
    assert further - large > 10 * math.hypot(further_sem, large_sem)  # grows with the shift


# --- the model --------------------------------------------------------------------------------------

def test_deterministic_posterior_is_a_point_mass_without_density(tiny_batch):
    wae = make()
    z, log_q = wae.posterior(tiny_batch, 3)
    assert z.shape == (3, 32, 4) and torch.equal(z[0], z[2]) and torch.equal(z[0], wae.encoder(tiny_batch))
    assert log_q is None and not wae.has_density
    assert torch.isnan(elbo(wae, tiny_batch)).all()
    assert torch.isnan(importance_sampled_log_likelihood(wae, tiny_batch, 10)).all()


def test_gaussian_encoder_has_its_density(tiny_batch):
    wae = make(encoder="gaussian")
    assert wae.has_density
    z, log_q = wae.posterior(tiny_batch, 2)
    assert not torch.equal(z[0], z[1])
    torch.testing.assert_close(log_q, wae.encoder(tiny_batch).log_prob(z))


@pytest.mark.parametrize("encoder", ["deterministic", "gaussian"])
def test_objective_and_loss_are_reconstruction_plus_lambda_mmd(tiny_batch, encoder):
    wae = make(encoder=encoder, mmd_weight=3.0)
    assert wae.objective_name == "wae_objective"
    torch.manual_seed(1)
    objective = wae.objective(tiny_batch)
    torch.manual_seed(1)
    losses = wae.training_step(tiny_batch)
    torch.manual_seed(1)
    z = wae.code(tiny_batch)
    log_px_z = wae.likelihood.log_prob(tiny_batch, z)
    mmd = imq_mmd(z, wae.prior.sample(32), 8.0)
    torch.testing.assert_close(objective, log_px_z - 3.0 * mmd)
    torch.testing.assert_close(losses["model"], -log_px_z.mean() + 3.0 * mmd)
    torch.testing.assert_close(losses["reconstruction"], -log_px_z.mean())
    torch.testing.assert_close(losses["mmd"], mmd)


@pytest.mark.parametrize("encoder", ["deterministic", "gaussian"])
def test_loss_falls_on_a_tiny_batch(tiny_batch, encoder):
    wae = make(encoder=encoder)
    assert_loss_falls(losses_over_steps(wae, tiny_batch, 20, "model"))


def test_the_penalty_alone_pulls_the_codes_towards_the_prior(tiny_batch):
    # λ = 1 against no reconstruction: the MMD term's gradient alone moves the codes to N(0, I)
    wae = make()
    with torch.no_grad():
        wae.encoder.net[-1].bias.add_(3.0)  # codes far from the prior
    opt = torch.optim.Adam(wae.encoder.parameters(), lr=1e-2)
    first = None
    for step in range(60):
        mmd = wae.mmd(wae.encoder(tiny_batch))
        first = mmd.item() if first is None else first
        opt.zero_grad()
        mmd.backward()
        opt.step()
    torch.manual_seed(3)
    final = torch.stack([wae.mmd(wae.encoder(tiny_batch)) for _ in range(20)]).mean().item()
    assert final < 0.1 * first, (first, final)


def test_one_mnist_epoch_logs_the_wae_objective_and_its_terms(mnist_500):
    torch.manual_seed(0)
    wae = create_method("wae-mmd", {}, data_shape=mnist_500.image_shape, latent_dim=8)
    (record,) = train_one_epoch(wae, mnist_500)
    assert all(math.isfinite(record[f"train_{k}"]) for k in ("model", "reconstruction", "mmd"))
    assert math.isfinite(record["valid_wae_objective"]) and "valid_elbo" not in record


# --- configuration ----------------------------------------------------------------------------------

_not_finite_or_negative = st.floats(allow_nan=True, allow_infinity=True).filter(
    lambda v: not (math.isfinite(v) and v >= 0))
_bad_scales = st.one_of(
    st.just([]),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=5).filter(
        lambda s: not all(math.isfinite(v) and v > 0 for v in s)),
)


@settings(max_examples=60, deadline=None)
@given(bad=st.one_of(
    st.tuples(st.just("mmd_weight"), _not_finite_or_negative, st.just("mmd_weight must be finite and non-negative")),
    st.tuples(st.just("kernel_scales"), _bad_scales,
              st.just("kernel_scales must be one or more finite positive numbers")),
    st.tuples(st.just("mmd_weight"), st.one_of(st.text(max_size=5), st.booleans()), st.just("expected a number")),
    st.tuples(st.just("encoder"), st.text(max_size=12).filter(lambda e: e not in ("deterministic", "gaussian")),
              st.just("expected one of 'deterministic', 'gaussian'")),
))
def test_bad_settings_are_refused_in_one_line(bad):
    key, value, message = bad
    assert_refused_in_one_line("wae-mmd", {key: value}, message)


@settings(max_examples=30, deadline=None)
@given(weight=st.floats(0, 1e6), scales=st.lists(st.floats(1e-6, 1e6), min_size=1, max_size=8),
       encoder=st.sampled_from(["deterministic", "gaussian"]))
def test_good_settings_are_kept(weight, scales, encoder):
    config = method_config("wae-mmd", {"mmd_weight": weight, "kernel_scales": scales, "encoder": encoder})
    assert (config.mmd_weight, config.kernel_scales, config.encoder) == (weight, tuple(scales), encoder)


def test_defaults_are_the_authors_mnist_settings():
    config = method_config("wae-mmd")
    assert config.mmd_weight == 10.0 and config.kernel_scales == (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
    assert config.encoder == "deterministic"
