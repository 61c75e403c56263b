"""Active units (Burda et al. 2016): exact on a model whose posterior means are known, the Monte Carlo
route agrees with the exact one, and the count reaches records and reports through evaluation.

The stub posterior is q(z|x) = N(c ⊙ x, s² I) on images x ∈ {−1, +1}^6 whose every column has
population variance exactly 1, so A_u = c_u² exactly: units of scale 1, 0.5, 0.2 and 0.3 are
active (A = 1, 0.25, 0.04, 0.09), one of scale 0.05 (A = 0.0025) is below the threshold and one
of scale 0 has a posterior mean constant across x.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from vaebench.active_units import THRESHOLD, active_units, from_means, latent_layers
from vaebench.backbones import Architecture
from vaebench.distributions import BernoulliDecoder, StandardNormal
from vaebench.evaluation import EvalConfig, evaluate
from vaebench.methods import create_method, list_methods
from vaebench.model import PosteriorDraws

SCALES = torch.tensor([1.0, 0.5, 0.2, 0.05, 0.0, 0.3], dtype=torch.float64)
EXACT_A = SCALES.square().numpy()  # A_u = c_u² · Var_x(x_u), and Var_x(x_u) = 1 exactly
ACTIVE = 4
SD = 0.8


def _images(n: int = 200) -> torch.Tensor:
    """n images in {−1, +1}^6, every column half −1 and half +1 (population variance 1, mean 0),
    the columns in different orders so that the units vary independently of each other."""
    g = torch.Generator().manual_seed(0)
    half = torch.cat([torch.ones(n // 2), -torch.ones(n // 2)]).double()
    return torch.stack([half[torch.randperm(n, generator=g)] for _ in range(6)], -1)


class LinearGaussianPosterior(nn.Module):
    """q(z|x) = N(c ⊙ x, s² I) with the prior N(0, I) and a Bernoulli decoder, so that ``evaluate``
    runs on it too. ``exact``: whether it offers ``posterior_mean``; ``sd`` 0: a deterministic encoder."""

    def __init__(self, exact: bool = True, sd: float = SD, layers: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.latent_dim = 6
        self.prior = StandardNormal(6)
        self.likelihood = BernoulliDecoder(nn.Linear(6, 6).double(), (6,))
        self.sd = sd
        if exact:
            self.posterior_mean = lambda x: SCALES * x
        if layers is not None:
            self.latent_layers = layers

    @property
    def has_density(self) -> bool:
        return self.sd > 0

    def posterior(self, x: torch.Tensor, n: int = 1) -> PosteriorDraws:
        mean = SCALES * x
        if self.sd == 0:
            return PosteriorDraws(mean.expand(n, *mean.shape), None)
        q = torch.distributions.Independent(torch.distributions.Normal(mean, self.sd), 1)
        z = q.sample((n,))
        return PosteriorDraws(z, q.log_prob(z))


def test_the_count_and_every_A_u_are_exact_from_exact_means():
    result = active_units(LinearGaussianPosterior(), _images(), batch_size=64)
    np.testing.assert_allclose(result.variances, EXACT_A, rtol=0, atol=1e-12)
    assert result.count == ACTIVE and result.draws == 0 and result.images == 200
    assert result.uncertain == 0 and not result.inflation.any()
    # the unit below the threshold (A = 0.0025) and the constant one (A = 0) are not counted
    assert result.active.tolist() == [True, True, True, False, False, True]


def test_the_monte_carlo_route_agrees_with_the_exact_one():
    draws, n = 4000, 200
    mc = active_units(LinearGaussianPosterior(exact=False), _images(n), draws=draws, batch_size=64)
    exact = active_units(LinearGaussianPosterior(), _images(n))
    assert mc.draws == draws and mc.count == exact.count == ACTIVE
    # the recorded inflation is s²/n, estimated from the draws (800,000 per unit)
    np.testing.assert_allclose(mc.inflation, SD**2 / draws, rtol=0.02)
    # A_u of the draws' means = A_u + 2 Cov_x(m, e) + Var_x(e), e ~ N(0, s²/n): the bias is the
    # inflation, and the spread of the cross term sets the tolerance (6 standard deviations)
    noise = SD**2 / draws
    tolerance = 6 * np.sqrt(4 * EXACT_A * noise / n + 2 * noise**2 / n)
    assert (np.abs(mc.variances - exact.variances - mc.inflation) < tolerance).all()


def test_a_unit_is_counted_only_above_the_threshold():
    means = torch.zeros(4, 3, dtype=torch.float64)
    # population variances: well below the threshold, just above it, just below it
    for u, a in enumerate((THRESHOLD / 10, THRESHOLD * 1.001, THRESHOLD * 0.999)):
        means[:, u] = math.sqrt(a) * torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64)
    result = from_means(means, None, 0, (3,))
    assert result.active.tolist() == [False, True, False] and result.count == 1


def test_units_that_the_draws_noise_may_have_lifted_over_the_threshold_are_counted_as_uncertain():
    signs = torch.tensor([1.0, -1.0], dtype=torch.float64)[:, None]
    means = signs * torch.tensor([0.03, 0.0105, 0.005], dtype=torch.float64).sqrt()  # A_u exactly these
    spreads = torch.ones(2, 3, dtype=torch.float64)  # Var_q(z_u|x) = 1 over 100 draws: inflation 0.01
    result = from_means(means, spreads, 100, (3,))
    np.testing.assert_allclose(result.inflation, 0.01)
    # 0.03 − 0.01 is above the threshold, 0.0105 − 0.01 is not; 0.005 is not active at all
    assert result.count == 2 and result.uncertain == 1
    assert result.to_dict()["posterior_mean"] == "mean of 100 draws"


def test_a_deterministic_encoder_gives_exact_counts_through_its_draws():
    result = active_units(LinearGaussianPosterior(exact=False, sd=0.0), _images(), draws=2)
    np.testing.assert_allclose(result.variances, EXACT_A, atol=1e-12)
    assert result.count == ACTIVE and result.uncertain == 0 and not result.inflation.any()


def test_the_count_is_given_per_layer_where_the_model_says_where_layers_split():
    result = active_units(LinearGaussianPosterior(layers=(4, 2)), _images())
    assert result.per_layer == [3, 1] and result.count == 4
    assert result.summary() == {"active_units": 4.0, "active_units_uncertain": 0.0,
                                "active_units_layer1": 3.0, "active_units_layer2": 1.0}
    assert "active_units_layer1" not in active_units(LinearGaussianPosterior(), _images()).summary()
    with pytest.raises(ValueError, match="do not split"):
        latent_layers(LinearGaussianPosterior(layers=(4, 1)))


@pytest.mark.parametrize("exact", [True, False])
def test_evaluation_counts_active_units_only_when_asked_and_from_the_same_images(exact):
    model, x = LinearGaussianPosterior(exact=exact), _images()
    config = EvalConfig(examples=100, is_samples=0, moment_samples=2000, batch_size=50)
    assert evaluate(model, x, config, progress=False).active_units is None
    result = evaluate(model, x, dataclasses.replace(config, active_units=True), progress=False)
    reference = active_units(model, x[:100], draws=4000)
    assert result.summary["active_units"] == reference.count == ACTIVE
    assert result.active_units.images == 100 and result.active_units.draws == (0 if exact else 2000)
    np.testing.assert_allclose(result.active_units.variances, reference.variances, atol=0 if exact else 0.02)


def test_the_option_leaves_existing_evaluation_ids_alone():
    from vaebench.study import load_study

    run = load_study("quick").cells()[0]
    on = dataclasses.replace(run, eval=dataclasses.replace(run.eval, active_units=True))
    assert "active_units" not in run.evaluation_dict()["eval"]
    assert on.eval_id != run.eval_id and on.cell_id == run.cell_id


@pytest.mark.parametrize("name", list_methods())
def test_every_registered_method_has_its_active_units_counted(name, tiny_batch):
    method = create_method(name, None, data_shape=(64,), latent_dim=3, architecture=Architecture(hidden=(16,)))
    config = EvalConfig(examples=16, is_samples=8, moment_samples=64, batch_size=8, active_units=True)
    result = evaluate(method, tiny_batch, config, progress=False).active_units
    assert result.variances.shape == (method.latent_dim,) and 0 <= result.count <= method.latent_dim
    assert sum(result.layers) == method.latent_dim and sum(result.per_layer) == result.count
    if getattr(method, "posterior_mean", None) is not None:
        # an exact mean must be the mean of the method's own posterior: a subclass that changed
        # its posterior but kept the mean would fail here
        with torch.no_grad():
            draws = method.posterior(tiny_batch[:4], 20000).z.mean(0)
            torch.testing.assert_close(draws, method.posterior_mean(tiny_batch[:4]), atol=0.05, rtol=0)


def test_the_report_shows_the_count_beside_records_that_have_none(tmp_path):
    from vaebench.records import write_record, write_values
    from vaebench.report import write_report

    for label, metrics in (("old", {}), ("new", {"active_units": 19.0, "active_units_uncertain": 0.0})):
        cell = f"{label}-s0"
        record = {"cell_id": cell, "eval_id": "e", "protocol_id": label, "status": "ok", "n_examples": 2,
                  "config": {"dataset": "mnist", "latent_dim": 50, "label": label, "seed": 0},
                  "metrics": {"elbo": -90.0, "posterior_sd_median": 0.9, **metrics}, "timings": {}}
        record["per_example"] = write_values(tmp_path, cell, {"indices": np.arange(2),
                                                              "elbo": np.full(2, -90.0, np.float32)})
        write_record(tmp_path, record)
    readme = write_report(tmp_path)["readme"].read_text()
    section = readme.split("## Posterior diagnostics")[1].split("\n## ")[0]
    rows = {line.split("|")[3].strip(): line for line in section.splitlines() if line.startswith("| mnist")}
    assert "| active units " in section and "**active units**: latent units u with A_u" in section
    assert "| 19.0 " in rows["new"] and "—" in rows["old"]  # a count: one decimal, for means over seeds


def test_a_columns_decimals_travel_with_its_declaration_and_records_without_them_stay_as_they_were():
    from vaebench.columns import POSTERIOR_COLUMNS, Column

    count = next(c for c in POSTERIOR_COLUMNS if c.name == "active_units")
    assert count.digits == 1 and Column.from_dict(count.to_dict()) == count
    plain = Column("widget", "a method's own number")
    assert "digits" not in plain.to_dict() and Column.from_dict(plain.to_dict()) == plain


STUDY = """
name = "tiny-active-units"
methods = ["vae"]
datasets = ["mnist"]
latent_dims = [2]
seeds = [0]

[architecture]
hidden = [32]

[data]
train_subset = 300
valid_subset = 100
test_subset = 20

[train]
epochs = 1
batch_size = 100

[eval]
is_samples = 10
"""


def test_turning_the_option_on_reevaluates_the_trained_cell_and_records_every_unit(tmp_path, capsys):
    # the report's side is test_the_report_shows_the_count_beside_records_that_have_none
    from vaebench.cli import main
    from vaebench.records import load_records

    study, out = tmp_path / "tiny.toml", tmp_path / "out"
    study.write_text(STUDY)
    assert main(["run", str(study), "--out", str(out), "--no-progress"]) == 0
    (before,) = load_records(out)
    assert "active_units" not in before and "active_units" not in before["metrics"]
    study.write_text(STUDY + "active_units = true\n")
    capsys.readouterr()
    assert main(["run", str(study), "--out", str(out), "--no-progress"]) == 0
    assert "re-evaluating 1 trained cell " in capsys.readouterr().out  # no training
    (after,) = load_records(out)
    units = after["active_units"]
    assert after["cell_id"] == before["cell_id"] and units["posterior_mean"] == "exact" and units["images"] == 20
    assert len(units["variances"]) == 2 and units["count"] == sum(v > 0.01 for v in units["variances"])
    assert after["metrics"]["active_units"] == units["count"]
