"""The posterior-approximation track: targets against independent computations, metrics on known
answers, the grid reference's quantiles, a tiny NUTS run, a tiny fit of every method, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from vaebench.cli import main
from vaebench.errors import ConfigError
from vaebench.posterior.approximations import FITTERS
from vaebench.posterior.metrics import QUANTILE_LEVELS, energy_distance, marginal_quantiles, quantile_errors
from vaebench.posterior.reference import grid_reference, nuts_reference
from vaebench.posterior.study import load_posterior_study
from vaebench.posterior.targets import (EIGHT_SCHOOLS, ROSENBROCK, SCHOOLS_SIGMA, SCHOOLS_Y, TORUS, Target,
                                        eight_schools_log_density)


# --- targets --------------------------------------------------------------------------------
@pytest.mark.parametrize("target", [ROSENBROCK, TORUS], ids=lambda t: t.name)
def test_2d_normaliser_by_quadrature_matches_scipy_dblquad(target: Target) -> None:
    """log Z by the study's grid and by the target's own formula both match scipy's adaptive 2-D
    quadrature of exp(log density) over the box, an independent computation."""
    box = target.box
    # the densities written out again in plain Python, independently of the torch code
    formulas = {"rosenbrock": lambda x1, x2: -((x1 - 1) ** 2) - (x2 * x2 - x1) ** 2,
                "torus": lambda x1, x2: -((x1 * x1 + x2 * x2 - 2) ** 2)}

    def density(x2: float, x1: float) -> float:
        return math.exp(formulas[target.name](x1, x2))

    value, error = integrate.dblquad(density, -box, box, -box, box, epsabs=1e-10, epsrel=1e-10)
    assert error < 1e-8
    assert target.log_normaliser() == pytest.approx(math.log(value), abs=1e-7)
    assert grid_reference(target, points=1024).log_normaliser == pytest.approx(math.log(value), abs=1e-6)


def test_torus_normaliser_is_its_closed_form() -> None:
    """π ∫_0^∞ exp(−(s − 2)²) ds, here by scipy.integrate.quad in s, against the erf formula."""
    value, _ = integrate.quad(lambda s: math.exp(-((s - 2) ** 2)), 0, math.inf)
    assert TORUS.log_normaliser() == pytest.approx(math.log(math.pi * value), abs=1e-12)


@pytest.mark.parametrize("point", [
    [0.0] * 10,
    [1.0, 0.5, 0.3, -0.2, 1.1, 0.0, -0.7, 0.2, 1.5, -1.0],
    [-0.4, -1.3, 2.0, 0.1, -0.5, 0.9, 0.0, -2.2, 0.3, 0.6],  # τ < 0: the notebook's τ is unconstrained
])
def test_eight_schools_log_density_matches_scipy_stats(point: list[float]) -> None:
    mu, tau, eta = point[0], point[1], np.array(point[2:])
    by_hand = (stats.norm.logpdf(SCHOOLS_Y, loc=mu + tau * eta, scale=SCHOOLS_SIGMA).sum()
               + stats.norm.logpdf(eta, 0, 1).sum() + stats.norm.logpdf(mu, 0, 1) + stats.norm.logpdf(tau, 0, 1))
    ours = eight_schools_log_density(torch.tensor([point], dtype=torch.float64))
    assert ours.shape == (1,)
    assert ours.item() == pytest.approx(by_hand, abs=1e-10)


def test_eight_schools_is_batched_and_symmetric_in_the_sign_of_tau() -> None:
    z = torch.randn(64, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    flipped = z.clone()
    flipped[:, 1:] *= -1
    batch = eight_schools_log_density(z)
    assert torch.allclose(batch, torch.cat([eight_schools_log_density(z[i:i + 1]) for i in range(64)]))
    assert torch.allclose(batch, eight_schools_log_density(flipped))


# --- metrics --------------------------------------------------------------------------------
def test_quantiles_and_their_errors_on_a_known_sample() -> None:
    """Draws 0, 0.0001, …, 1 have quantile p at p exactly; against references shifted by 0.1 and
    −0.2, every error is 0.1 and 0.2."""
    draws = torch.linspace(0, 1, 10_001, dtype=torch.float64).unsqueeze(1).repeat(1, 2)
    levels = torch.tensor(QUANTILE_LEVELS, dtype=torch.float64)
    assert torch.allclose(marginal_quantiles(draws), levels.unsqueeze(1).repeat(1, 2), atol=1e-12)
    reference = torch.stack([levels + 0.1, levels - 0.2], dim=1)
    errors = quantile_errors(draws, reference)
    assert errors.shape == (5, 2)
    assert torch.allclose(errors, torch.tensor([[0.1, 0.2]] * 5, dtype=torch.float64), atol=1e-12)


def test_energy_distance_in_1d_is_scipys_squared() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=300), rng.normal(0.5, 2.0, size=200)
    ours = energy_distance(torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y).unsqueeze(1))
    assert ours == pytest.approx(stats.energy_distance(x, y) ** 2, rel=1e-10)


def test_energy_distance_in_several_dimensions_matches_its_definition() -> None:
    """2 E‖X − Y‖ − E‖X − X′‖ − E‖Y − Y′‖ over all pairs, written out with scipy's cdist; zero for a
    sample against itself, and symmetric."""
    from scipy.spatial.distance import cdist

    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(50, 3)), rng.normal(1.0, 1.0, size=(70, 3))
    by_hand = 2 * cdist(x, y).mean() - cdist(x, x).mean() - cdist(y, y).mean()
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    assert energy_distance(tx, ty) == pytest.approx(by_hand, rel=1e-10)
    assert energy_distance(ty, tx) == pytest.approx(by_hand, rel=1e-10)
    assert energy_distance(tx, tx) == pytest.approx(0.0, abs=1e-12)


def test_energy_distance_of_two_gaussians_approaches_its_closed_form() -> None:
    """N(0, 1) against N(1, 1): 2 E|X − Y| − 2 · 2/√π with X − Y ~ N(−1, 2). One V-statistic at
    n = 1,500 a side has a sampling sd of about 0.033 (0.023 measured at 3,000 over 10 seeds), so
    the mean of 16 seeded repeats (sd about 0.008) must lie within 0.03 of it."""
    s = math.sqrt(2.0)
    e_xy = s * math.sqrt(2 / math.pi) * math.exp(-1 / (2 * s * s)) + 1.0 * (1 - 2 * stats.norm.cdf(-1 / s))
    exact = 2 * e_xy - 2 * (2 / math.sqrt(math.pi))
    values = []
    for seed in range(16):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(1500, 1, generator=g, dtype=torch.float64)
        values.append(energy_distance(x, torch.randn(1500, 1, generator=g, dtype=torch.float64) + 1.0))
    assert np.mean(values) == pytest.approx(exact, abs=0.03)


# --- references -----------------------------------------------------------------------------
GAUSS = Target(name="gauss", parameters=("a", "b"), contrast_mean=(0.0, 0.0), contrast_sd=(1.0, 1.0), box=8.0,
               log_density=lambda z: -0.5 * ((z[:, 0] - 0.5) / 0.7) ** 2 - 0.5 * ((z[:, 1] + 1) / 1.2) ** 2)


def test_grid_reference_quantiles_and_draws_of_a_gaussian() -> None:
    grid = grid_reference(GAUSS, points=1024)
    exact = np.stack([stats.norm.ppf(QUANTILE_LEVELS, 0.5, 0.7), stats.norm.ppf(QUANTILE_LEVELS, -1, 1.2)], axis=1)
    assert np.allclose(grid.quantiles().numpy(), exact, atol=2e-3)
    assert grid.log_normaliser == pytest.approx(math.log(2 * math.pi * 0.7 * 1.2), abs=1e-6)
    draws = grid.sample(20_000, torch.Generator().manual_seed(0))
    assert torch.allclose(draws.mean(0), torch.tensor([0.5, -1.0], dtype=torch.float64), atol=0.03)
    assert torch.allclose(draws.std(0), torch.tensor([0.7, 1.2], dtype=torch.float64), atol=0.03)


def test_a_short_nuts_run_gives_draws_and_diagnostics() -> None:
    result = nuts_reference(GAUSS, chains=2, warmup=10, draws=15, seed=0)
    assert result.draws.shape == (2, 15, 2)
    assert set(result.diagnostics) == {"max_rhat", "min_ess_bulk", "min_ess_tail", "divergences"}
    assert torch.isfinite(result.draws).all()


# --- approximations -------------------------------------------------------------------------
TINY = {"avb": {"iterations": 3, "batch_size": 16, "adversary_width": 16, "adversary_blocks": 1, "log_every": 1},
        "avb-ac": {"iterations": 3, "batch_size": 16, "adversary_width": 16, "adversary_blocks": 1, "log_every": 1},
        "meanfield": {"iterations": 3, "batch_size": 16, "log_every": 1},
        "flow": {"iterations": 3, "batch_size": 16, "hidden": 8, "log_every": 1}}


@pytest.mark.parametrize("method", sorted(TINY))
@pytest.mark.parametrize("target", [EIGHT_SCHOOLS, TORUS], ids=lambda t: t.name)
def test_a_tiny_fit_runs(method: str, target: Target) -> None:
    torch.manual_seed(0)
    fit = FITTERS[method](target, TINY[method])
    assert fit.history["step"] == [1, 2, 3] and all(math.isfinite(v) for v in fit.history["loss"])
    with torch.no_grad():
        z = fit.approximation.sample(10)
        assert z.shape == (10, target.dim) and torch.isfinite(z).all()
        if fit.approximation.has_density:
            z, log_q = fit.approximation.sample_and_log_prob(10)
            assert log_q.shape == (10,) and torch.isfinite(log_q).all()
        else:
            assert 0 <= fit.own["adversary_accuracy"] <= 1


def test_mean_field_recovers_a_gaussian_target() -> None:
    """A Gaussian target is in the mean-field family: the fit finds its mean and standard deviations."""
    torch.manual_seed(0)
    q = FITTERS["meanfield"](GAUSS, {"iterations": 1500, "batch_size": 128, "lr": 2e-2}).approximation
    assert torch.allclose(q.mean.detach(), torch.tensor([0.5, -1.0]), atol=0.05)
    assert torch.allclose(q.log_sd.exp().detach(), torch.tensor([0.7, 1.2]), atol=0.05)


def test_unknown_or_non_positive_options_are_refused_in_one_line() -> None:
    with pytest.raises(ConfigError, match="avb: unknown key 'iters'") as caught:
        FITTERS["avb"](TORUS, {"iters": 3})
    assert "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match="flow: iterations must be positive"):
        FITTERS["flow"](TORUS, {"iterations": 0})
    with pytest.raises(ConfigError, match="meanfield.iterations: expected an integer"):
        FITTERS["meanfield"](TORUS, {"iterations": "many"})


def test_the_preset_loads_and_its_options_are_valid() -> None:
    from vaebench.posterior.approximations import avb, flow, gaussian
    from vaebench.posterior.approximations.base import read_settings

    study = load_posterior_study("posterior")
    assert study.targets == ("eight-schools", "rosenbrock", "torus") and len(study.seeds) == 3
    classes = {"avb": avb.AVBSettings, "avb-ac": avb.AVBSettings, "meanfield": gaussian.MeanFieldSettings,
               "flow": flow.FlowSettings}
    for method, options in study.methods.items():
        read_settings(classes[method], options, method)


@pytest.mark.parametrize("text, message", [
    ('targets = ["nowhere"]\n[methods.avb]\n', "unknown: nowhere"),
    ('targets = ["torus"]\n[methods.vae]\n', "unknown: vae"),
    ('targets = ["torus"]\nseeds = [-1]\n[methods.avb]\n', "seeds must be"),
    ('targets = ["torus"]\ndraws = 0\n[methods.avb]\n', "draws must be a positive integer"),
    ('targets = ["torus"]\nsteps = 3\n[methods.avb]\n', "unknown key 'steps'"),
])
def test_a_bad_study_is_refused_in_one_line_with_exit_2(tmp_path, capsys, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    assert main(["posterior", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_tiny_study_runs_reports_and_skips_its_finished_cells(tmp_path, capsys) -> None:
    study = tmp_path / "tiny.toml"
    study.write_text('name = "tiny"\nseeds = [0]\ntargets = ["torus"]\ndraws = 200\nelbo_draws = 200\n'
                     '[reference.grid]\npoints = 128\n'
                     '[methods.avb-ac]\niterations = 2\nbatch_size = 16\nadversary_width = 8\nadversary_blocks = 1\n'
                     '[methods.meanfield]\niterations = 2\n')
    out = tmp_path / "out"
    assert main(["posterior", str(study), "--out", str(out)]) == 0
    first = capsys.readouterr().out
    assert "torus-avb-ac-s0" in first and "torus-meanfield-s0" in first
    records = sorted(p.name for p in (out / "records").glob("*.json"))
    assert records == ["torus-avb-ac-s0.json", "torus-meanfield-s0.json", "torus-reference.json"]
    readme = (out / "README.md").read_text()
    assert "| torus | floor: second grid draw |" in readme and "| torus | meanfield | 1 |" in readme
    assert (out / "figures" / "torus-contours.png").is_file()
    assert main(["posterior", str(study), "--out", str(out)]) == 0  # everything done: nothing refitted
    assert "torus-avb-ac-s0:" not in capsys.readouterr().out
