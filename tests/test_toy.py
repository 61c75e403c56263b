"""The toy preset: it parses as the paper's experiment, and a shortened run writes every toy output."""

from __future__ import annotations

import dataclasses
import math

import pytest

from vaebench.report import write_table
from vaebench.runner import run_study
from vaebench.study import load_study
from vaebench.training import TrainConfig


def test_toy_preset_is_the_papers_experiment():
    study = load_study("toy")
    names = [m.name for m in study.methods]
    assert names[:3] == ["vae", "avb", "avb-ac"]  # Table 1's rows first, then the suite's other families
    assert {"iwae", "aae", "wae-mmd", "iaf", "planar", "householder", "vampprior", "sivi"} <= set(names)
    assert study.datasets == ("toy4",)
    assert study.latent_dims == (2,)
    assert study.eval.quadrature
    assert len(study.seeds) >= 5  # Table 1 with its spread over seeds


@pytest.fixture(scope="module")
def short_toy_run(tmp_path_factory):
    """The toy preset with 2 epochs instead of 384 and one seed: every output, none of the waiting. Its
    paper rows, a learned prior (quadrature under it) and a posterior without a density."""
    out = tmp_path_factory.mktemp("toy")
    toy = load_study("toy")
    methods = tuple(m for m in toy.methods if m.label in {"vae", "avb", "avb-ac", "vampprior", "sivi"})
    study = dataclasses.replace(toy, methods=methods, train=TrainConfig(epochs=2, batch_size=128), seeds=(0,))
    records = run_study(study, out, progress=False)
    return out, records


def test_short_toy_run_reports_exact_likelihood_and_aggregate_kl(short_toy_run):
    out, records = short_toy_run
    assert [r["status"] for r in records] == ["ok"] * 5, [r.get("error") for r in records]
    for record in records:
        metrics = record["metrics"]
        # log p(x) of a distribution over four points cannot exceed 0, and on average
        # over the four points it cannot exceed the optimum −log 4.
        assert metrics["exact_log_likelihood"] <= -math.log(4) + 1e-3
        assert metrics["aggregate_kl"] >= 0
        # a lower bound where q(z|x) has a density; for implicit posteriors only an upper bound on the ELBO
        has_density = record["config"]["method"] in {"vae", "vampprior"}
        bound = "elbo" if has_density else "elbo_upper_bound"
        assert math.isfinite(metrics[bound]) and math.isfinite(metrics["recon_bernoulli_nll"])
        assert ("elbo" in metrics) == has_density
        figure = out / record["figure"]
        assert figure.parent.name == "figures" and figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = write_table(out)["md"].read_text()
    assert "log p(x) exact" in table and "KL(q(z) ‖ p(z))" in table
