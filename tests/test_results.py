"""The Python API for results: a small records folder as frames with the report's numbers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vaebench import results
from vaebench.columns import Column
from vaebench.errors import VaebenchError
from vaebench.records import write_record, write_values

WIDGET = Column("widget_score", "how widgety the posterior is", higher_is_better=True, heading="widget")
# per seed: the reference's per-image values, and what the method adds to them on images 1..3
REFERENCE = {0: np.array([-90.0, -91.0, -92.0, -93.0]), 1: np.array([-80.0, -81.0, -82.0, -83.0])}
SHIFT = {0: np.array([1.0, 2.0, 3.0]), 1: np.array([3.0, 3.0, 3.0])}


def _cell(out, label, seed, values, indices, columns=()):
    cell = f"{label}-s{seed}"
    record = {"cell_id": cell, "eval_id": "e", "protocol_id": "p", "status": "ok",
              "config": {"dataset": "mnist", "latent_dim": 2, "label": label, "method": label, "seed": seed},
              "metrics": {k: float(np.mean(v)) for k, v in values.items()}
              | {f"{k}_sem": float(np.std(v, ddof=1) / math.sqrt(len(v))) for k, v in values.items()},
              "timings": {"train_seconds": 2.0 + seed}, "n_examples": len(indices),
              "per_example": write_values(out, cell, {"indices": indices,
                                                      **{k: v.astype(np.float32) for k, v in values.items()}}),
              "columns": [c.to_dict() for c in columns]}
    write_record(out, record)
    return record


@pytest.fixture
def folder(tmp_path):
    """Two methods, two seeds; the method was evaluated on test images 3, 1, 2 (in that order)."""
    for seed in (0, 1):
        ref = REFERENCE[seed]
        _cell(tmp_path, "ref", seed, {"elbo": ref, "widget_score": ref + 100}, np.arange(4), [WIDGET])
        m_idx = np.array([3, 1, 2])
        m_vals = ref[m_idx] + SHIFT[seed][[2, 0, 1]]
        _cell(tmp_path, "m", seed, {"elbo": m_vals, "widget_score": m_vals + 100}, m_idx, [WIDGET])
    write_record(tmp_path, {"cell_id": "m-s2", "eval_id": "e", "protocol_id": "p", "status": "failed",
                            "error": "OSError: disk full",
                            "config": {"dataset": "mnist", "latent_dim": 2, "label": "m", "seed": 2}})
    study = {"name": "tiny", "methods": [{"label": "ref"}, {"label": "m"}]}
    (tmp_path / "study.json").write_text(json.dumps({"study": study}))
    return tmp_path


def test_records_frames_and_the_table(folder):
    res = results.load(folder)
    assert len(res.records) == 5 and len(res.finished) == 4 and res.methods == ["ref", "m"]
    frame = res.frame()
    assert list(frame["method"]) == ["ref", "ref", "m", "m", "m"]  # the study's order, then by seed
    assert list(frame["status"]) == ["ok", "ok", "ok", "ok", "failed"]
    summary = res.summary().set_index("method")
    ref_means = [REFERENCE[s].mean() for s in (0, 1)]
    assert summary.loc["ref", "elbo_mean"] == pytest.approx(np.mean(ref_means))
    assert summary.loc["ref", "elbo_se"] == pytest.approx(abs(ref_means[0] - ref_means[1]) / 2)
    assert summary.loc["m", "n_seeds"] == 2 and "disk full" in summary.loc["m", "failed"]
    assert summary.loc["m", "widget_score_state"] == "ok"
    assert [c.name for c in res.columns] == ["elbo", "train_seconds", "widget_score"]
    assert res.columns[-1] == WIDGET


def test_tidy_has_a_row_per_cell_and_metric(folder):
    tidy = results.load(folder).tidy()
    assert len(tidy) == 4 * 3  # finished cells × (elbo, widget_score, train_seconds)
    row = tidy[(tidy.cell_id == "ref-s1") & (tidy.metric == "elbo")].iloc[0]
    assert (row["method"], row["seed"], row["latent_dim"]) == ("ref", 1, 2)
    assert row["value"] == pytest.approx(-81.5)
    assert row["sem"] == pytest.approx(np.std(REFERENCE[1], ddof=1) / 2)
    timing = tidy[(tidy.cell_id == "m-s0") & (tidy.metric == "train_seconds")].iloc[0]
    assert timing["value"] == 2.0 and math.isnan(timing["sem"])


def test_per_example_values_keep_their_test_indices(folder):
    res = results.load(folder)
    cell = res.per_example("m-s0")
    elbo = cell[cell.metric == "elbo"].set_index("test_index")["value"]
    expected = {3: -93.0 + 3.0, 1: -91.0 + 1.0, 2: -92.0 + 2.0}
    assert elbo.to_dict() == pytest.approx(expected)
    assert set(cell["cell_id"]) == {"m-s0"} and set(cell["method"]) == {"m"}
    long = res.per_example_frame()
    assert list(long.columns) == ["cell_id", "method", "dataset", "latent_dim", "seed", "test_index", "metric",
                                  "value"]
    assert len(long) == 2 * (4 + 4) + 2 * (3 + 3)  # per cell: two metrics over its images
    assert list(dict.fromkeys(long["cell_id"])) == ["ref-s0", "ref-s1", "m-s0", "m-s1"]


def test_paired_differences_by_test_index(folder):
    res = results.load(folder)
    paired = res.paired("m", "ref", "elbo")
    assert len(paired) == 1
    row = paired.iloc[0]
    # per-seed mean differences 2 and 3 on the three shared images
    assert (row["method"], row["reference"], row["metric"], row["seeds"], row["N"]) == ("m", "ref", "elbo", 2, 3)
    assert row["difference"] == pytest.approx(2.5, abs=1e-5)
    assert row["se_over_seeds"] == pytest.approx(0.5, abs=1e-5)
    assert row["se_over_images"] == pytest.approx(math.sqrt((1 / math.sqrt(3)) ** 2 + 0) / 2, abs=1e-5)
    widget = res.paired("m", "ref", "widget_score").iloc[0]  # a method's own column pairs the same way
    assert widget["difference"] == pytest.approx(2.5, abs=1e-4)
    reverse = res.paired("ref", "m", "elbo").iloc[0]
    assert reverse["difference"] == pytest.approx(-2.5, abs=1e-5)
    assert res.paired("m", "ref", "log_likelihood_ais").empty  # neither has it


def test_each_per_example_file_is_read_once(folder, monkeypatch):
    import vaebench.records as records_module

    reads: list[str] = []
    read_values = records_module.read_values
    monkeypatch.setattr(records_module, "read_values",
                        lambda d, r: reads.append(r["cell_id"]) or read_values(d, r))
    res = results.load(folder)
    res.per_example_frame()
    res.paired("m", "ref", "elbo")
    res.paired("m", "ref", "widget_score")
    assert sorted(reads) == ["m-s0", "m-s1", "ref-s0", "ref-s1"]


names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=20)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=names)
def test_unknown_cells_and_methods_are_named_errors(folder, name):
    res = results.load(folder)
    if name not in {"ref", "m"}:
        with pytest.raises(VaebenchError, match="no method"):
            res.paired(name, "ref", "elbo")
        with pytest.raises(VaebenchError, match="no method"):
            res.paired("m", name, "elbo")
    if name not in {r["cell_id"] for r in res.records}:
        with pytest.raises(VaebenchError, match="no cell"):
            res.per_example(name)


@settings(max_examples=10, deadline=None)
@given(name=st.from_regex(r"[a-z][a-z0-9_-]{0,12}", fullmatch=True), with_records=st.booleans())
def test_a_folder_without_records_of_a_study_is_refused(tmp_path_factory, name, with_records):
    folder = tmp_path_factory.mktemp("res") / name
    (folder / "records" if with_records else folder).mkdir(parents=True)
    with pytest.raises(VaebenchError, match="no run records|not a results folder"):
        results.load(folder)
