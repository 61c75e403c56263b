"""Reports: paired differences, honest cells (not computed, nan, failed), stale records apart."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from vaebench.columns import Column
from vaebench.records import write_record, write_values
from vaebench.report import (
    falls_below,
    paired_differences,
    records_frame,
    summary_frame,
    uneven_gaps,
    write_report,
    write_table,
)


def _record(out, label, seed, metrics, per_example=None, status="ok", protocol="p", indices=None, error=None):
    cell = f"{label}-s{seed}-{protocol}"
    record = {"cell_id": cell, "eval_id": "e", "protocol_id": protocol, "status": status,
              "config": {"dataset": "mnist", "latent_dim": 2, "label": label, "seed": seed}}
    if status == "ok":
        record.update(metrics=metrics, timings={"train_seconds": 1.0}, n_examples=len(indices))
        record["per_example"] = write_values(out, cell, {"indices": indices, **per_example})
    else:
        record["error"] = error
    write_record(out, record)
    return record


def test_paired_differences_equal_their_exact_value(tmp_path):
    # Two seeds; the method differs from the reference by exactly (1, 3) on the images they share.
    rng = np.random.default_rng(0)
    ref_values = {0: rng.normal(-90, 5, 6), 1: rng.normal(-90, 5, 6)}
    shift = {0: np.array([1.0, 1.0, 1.0, 1.0]), 1: np.array([2.0, 4.0, 2.0, 4.0])}
    records = []
    for seed in (0, 1):
        idx = np.arange(6)
        records.append(_record(tmp_path, "ref", seed, {"log_likelihood_ais": 0.0},
                               {"log_likelihood_ais": ref_values[seed].astype(np.float32)}, indices=idx))
        # the method was evaluated on images 2..5 only, in another order: pairing is by test index
        m_idx = np.array([5, 2, 4, 3])
        m_vals = ref_values[seed][m_idx].astype(np.float32) + shift[seed][[0, 1, 2, 3]].astype(np.float32)
        records.append(_record(tmp_path, "m", seed, {"log_likelihood_ais": 0.0},
                               {"log_likelihood_ais": m_vals}, indices=m_idx))
    paired = paired_differences(records, tmp_path, reference="ref")
    row = paired[(paired.method == "m") & (paired.metric == "log_likelihood_ais")].iloc[0]
    assert row["N"] == 4 and row["seeds"] == 2
    assert row["difference"] == pytest.approx((1.0 + 3.0) / 2, abs=1e-4)
    assert row["se_over_seeds"] == pytest.approx(np.std([1.0, 3.0], ddof=1) / math.sqrt(2), abs=1e-4)
    se_images = np.array([0.0, np.std([2, 4, 2, 4], ddof=1) / 2])
    assert row["se_over_images"] == pytest.approx(math.sqrt((se_images ** 2).sum()) / 2, abs=1e-4)


def test_not_computed_nan_and_failed_are_told_apart(tmp_path):
    idx = np.arange(3)
    records = [
        _record(tmp_path, "vae", 0, {"elbo": -90.0, "log_likelihood_ais": float("nan")},
                {"elbo": np.full(3, -90, np.float32)}, indices=idx),
        _record(tmp_path, "avb", 0, {"log_likelihood_ais": -88.0}, {"log_likelihood_ais": np.zeros(3, np.float32)},
                indices=idx),
        _record(tmp_path, "iaf", 0, None, status="failed", error="TrainingDiverged: loss was nan"),
    ]
    summary = summary_frame(records_frame(records)).set_index("method")
    assert summary.loc["vae", "log_likelihood_ais_state"] == "nan"
    assert summary.loc["avb", "elbo_state"] == "absent"
    assert summary.loc["iaf", "n_seeds"] == 0 and "TrainingDiverged" in summary.loc["iaf", "failed"]
    table = write_table(tmp_path, records_frame(records))["md"].read_text()
    vae_row = next(line for line in table.splitlines() if "| vae " in line)
    avb_row = next(line for line in table.splitlines() if "| avb " in line)
    assert "nan" in vae_row and "—" in avb_row
    assert "| iaf " in table and "TrainingDiverged" in table
    assert "one seed: ± is the standard error over the N test images" in table


def test_settings_that_differ_other_than_by_seed_are_never_averaged(tmp_path):
    idx = np.arange(2)
    records = [_record(tmp_path, "vae", 0, {"elbo": -90.0}, {"elbo": np.zeros(2, np.float32)}, protocol="a",
                       indices=idx),
               _record(tmp_path, "vae", 1, {"elbo": -80.0}, {"elbo": np.zeros(2, np.float32)}, protocol="b",
                       indices=idx)]
    summary = summary_frame(records_frame(records))
    assert len(summary) == 2 and set(summary["n_seeds"]) == {1}
    assert sorted(summary["elbo_mean"]) == [-90.0, -80.0]


def test_report_from_records_lists_failed_cells(tmp_path):
    idx = np.arange(3)
    _record(tmp_path, "vae", 0, {"elbo": -90.0, "elbo_sem": 1.0}, {"elbo": np.full(3, -90, np.float32)}, indices=idx)
    _record(tmp_path, "iaf", 0, None, status="failed", error="OSError: disk full")
    readme = write_report(tmp_path)["readme"].read_text()
    assert "## Failed cells" in readme and "disk full" in readme
    assert "-90.00 ± 1.00" in readme


def test_a_cell_trained_across_sessions_names_each_of_them(tmp_path):
    idx = np.arange(3)
    record = _record(tmp_path, "vae", 0, {"elbo": -90.0}, {"elbo": np.full(3, -90, np.float32)}, indices=idx)
    who = {"dirty": False, "torch": "2.13.0+cpu", "threads": 1}
    record["provenance"] = {"commit": "b" * 40, "training_segments": [
        {"from_epoch": 0, "to_epoch": 1825, "recorded": False},
        {"from_epoch": 1825, "to_epoch": 2000, "commit": "a" * 40, "device": "AMD EPYC", **who},
        {"from_epoch": 2000, "to_epoch": 3280, "commit": "b" * 40, "device": "NVIDIA H100", **who}]}
    write_record(tmp_path, record)
    readme = write_report(tmp_path)["readme"].read_text()
    assert (f"- {record['cell_id']} trained by 3 processes: epochs 0–1,825 (not recorded: the checkpoint predates "
            f"this record-keeping); epochs 1,825–2,000 (commit aaaaaaaaaaaa, torch 2.13.0+cpu, AMD EPYC, 1 thread); "
            f"epochs 2,000–3,280 (commit bbbbbbbbbbbb, torch 2.13.0+cpu, NVIDIA H100, 1 thread)") in readme


def test_published_values_stand_beside_ours(tmp_path):
    from vaebench.report import published_comparison

    idx = np.arange(3)
    records = [_record(tmp_path, "vae", s, {"log_likelihood_is_full": v}, {"elbo": np.zeros(3, np.float32)},
                       indices=idx) for s, v in ((0, -87.0), (1, -86.0))]
    for r in records:  # the full-test-set metric is over its own, larger N
        r["metrics"]["n_full"] = 10000.0
    summary = summary_frame(records_frame(records))
    table = published_comparison(summary, {"source": "Burda et al. 2016", "metric": "log_likelihood_is_full",
                                           "values": {"vae": -86.76}})
    row = table.iloc[0]
    assert row["published"] == -86.76 and row["ours − published"] == "+0.260"
    assert row["ours"] == "-86.50 ± 0.50" and row["seeds"] == 2 and row["N"] == "10000"
    header = write_table(tmp_path, records_frame(records))["md"].read_text().splitlines()[0]
    assert "N full" in [cell.strip() for cell in header.split("|")]


def test_cells_of_the_study_without_a_record_are_listed(tmp_path):
    idx = np.arange(3)
    _record(tmp_path, "vae", 0, {"elbo": -90.0}, {"elbo": np.full(3, -90, np.float32)}, indices=idx)
    cells = [{"cell_id": "vae-s0-p", "eval_id": "e", "protocol_id": "p"},
             {"cell_id": "iwae-k5-s0-p", "eval_id": "e", "protocol_id": "p"}]
    (tmp_path / "study.json").write_text(json.dumps({"cells": cells, "study": {"name": "s"}}))
    readme = write_report(tmp_path)["readme"].read_text()
    assert "1 finished cell, 1 without a record yet." in readme
    section = readme.split("## Cells of the study without a record yet")[1].split("##")[0]
    assert "`iwae-k5-s0-p`" in section and "vae-s0-p" not in section


def test_diagnostics_explain_only_the_columns_they_show(tmp_path):
    idx = np.arange(3)
    _record(tmp_path, "vae", 0, {"elbo": -90.0, "posterior_sd_median": 0.9},
            {"elbo": np.full(3, -90, np.float32)}, indices=idx)
    readme = write_report(tmp_path)["readme"].read_text()
    assert "## Posterior diagnostics" in readme and "**posterior sd (median)**" in readme
    assert "**KL lower bound**" not in readme and "## Method columns" not in readme
    section = readme.split("## Posterior diagnostics")[1].split("##")[0]
    assert "one seed: ± is the standard error over the N test images" in section


def test_estimators_of_one_cell_are_compared_on_the_images_they_share(tmp_path):
    from vaebench.report import estimator_gaps

    rng = np.random.default_rng(0)
    is_full = rng.normal(-90, 5, 10).astype(np.float32)
    idx = np.array([7, 2, 5, 0])  # the compared columns' images, a subset of the full test set
    shift = np.array([0.5, 1.0, 1.5, 2.0], np.float32)
    ais = is_full[idx] + shift
    record = _record(tmp_path, "vae", 0, {"log_likelihood_ais": 0.0},
                     {"log_likelihood_ais": ais, "log_likelihood_is_full": is_full,
                      "indices_full": np.arange(10)}, indices=idx)
    second = _record(tmp_path, "vae", 1, {"log_likelihood_ais": 0.0},
                     {"log_likelihood_ais": is_full[idx] + 3 * shift, "log_likelihood_is_full": is_full,
                      "indices_full": np.arange(10)}, indices=idx)
    gaps = estimator_gaps([record], tmp_path)
    assert len(gaps) == 1
    row = gaps.iloc[0]
    assert row["estimators"] == "log p(x) AIS − log p(x) IS, full test set" and row["N"] == 4 and row["seeds"] == 1
    assert row["difference"] == "+1.250" and row["± SE over seeds"] == ""
    assert float(row["± SE over images (paired)"]) == pytest.approx(np.std(shift, ddof=1) / 2, abs=1e-3)
    row = estimator_gaps([record, second], tmp_path).iloc[0]  # seeds: mean differences 1.25 and 3.75
    assert row["seeds"] == 2 and row["difference"] == "+2.500" and row["± SE over seeds"] == "1.250"
    se_images = np.array([1, 3]) * np.std(shift, ddof=1) / 2
    assert float(row["± SE over images (paired)"]) == pytest.approx(math.sqrt((se_images ** 2).sum()) / 2, abs=1e-3)


# --- columns that methods declare -----------------------------------------------------------------
WIDGET = Column("widget_score", "how widgety the posterior is", higher_is_better=True, heading="widget")
GIZMO = Column("gizmo", "an estimate of a quantity that gadget bounds from below", heading="gizmo est.",
               should_not_fall_below=("gadget", 2.0))
GADGET = Column("gadget", "a lower bound on what gizmo estimates", heading="gadget bound")


def _declaring(out, label, seed, values, columns, indices, metrics=None):
    """A finished cell whose method declares ``columns``: per-example ``values`` and their means."""
    record = _record(out, label, seed, {k: float(v.mean()) for k, v in values.items()} | (metrics or {}),
                     {k: v.astype(np.float32) for k, v in values.items()}, indices=indices)
    record["columns"] = [c.to_dict() for c in columns]
    write_record(out, record)
    return record


def test_a_declared_column_is_shown_and_paired_without_the_report_naming_it(tmp_path):
    rng = np.random.default_rng(1)
    idx = np.arange(5)
    base = {seed: rng.normal(2.0, 0.5, 5) for seed in (0, 1)}
    shift = {0: np.array([1.0, 1.0, 1.0, 1.0, 1.0]), 1: np.array([2.0, 3.0, 2.0, 3.0, 2.0])}
    for seed in (0, 1):
        _declaring(tmp_path, "ref", seed, {"widget_score": base[seed], "elbo": base[seed] - 90}, [WIDGET], idx)
        _declaring(tmp_path, "m", seed, {"widget_score": base[seed] + shift[seed], "elbo": base[seed] - 91},
                   [WIDGET], idx)
    _record(tmp_path, "plain", 0, {"elbo": -90.0}, {"elbo": np.full(5, -90, np.float32)}, indices=idx)
    study = {"name": "s", "methods": [{"label": label} for label in ("ref", "m", "plain")]}
    (tmp_path / "study.json").write_text(json.dumps({"study": study}))  # ref first: the reference
    readme = write_report(tmp_path)["readme"].read_text()
    section = readme.split("## Method columns")[1].split("\n## ")[0]
    rows = _table(section)
    assert set(rows) == {"ref", "m"}  # only the rows that have the column
    for label in ("ref", "m"):
        a, b = [(base[s] + (shift[s] if label == "m" else 0)).mean() for s in (0, 1)]
        mean, se = (a + b) / 2, abs(a - b) / 2  # the standard error of two seeds is half their difference
        assert rows[label]["widget"] == f"{mean:.3f} ± {se:.3f}"
        assert rows[label]["N"] == "5" and rows[label]["seeds"] == "2"
    assert "- **widget** (`widget_score`): how widgety the posterior is; higher is better" in section
    assert "± is the standard error over seeds" in section
    paired = _table(readme.split("## Paired differences from ref")[1].split("\n## ")[0], key="metric")
    row = paired["widget_score"]
    assert (row["method"], row["reference"], row["seeds"], row["N"]) == ("m", "ref", "2", "5")
    assert float(row["method − reference"]) == 1.7  # per-seed means 1.0 and 2.4
    assert float(row["± SE over seeds"]) == 0.7  # |1.0 − 2.4| / 2
    frame = paired_differences([*map(_read, sorted((tmp_path / "records").glob("*.json")))], tmp_path,
                               reference="ref")
    row = frame[(frame.method == "m") & (frame.metric == "widget_score")].iloc[0]
    assert row["difference"] == pytest.approx(1.7, abs=1e-5) and row["N"] == 5
    assert "plain" not in set(frame[frame.metric == "widget_score"].method)  # plain never declared it


def _table(text, key="method"):
    """The rows of the first Markdown table in ``text``, by their ``key`` cell: heading → cell."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    headings = [c.strip() for c in lines[0].split("|")[1:-1]]
    rows = [dict(zip(headings, (c.strip() for c in line.split("|")[1:-1]))) for line in lines[2:]]
    return {row[key]: row for row in rows}


def _read(path):
    from vaebench.records import read_record

    return read_record(path)


def test_a_column_below_its_declared_bound_is_flagged_from_the_declaration(tmp_path):
    idx = np.arange(4)
    # "low" lies 3 below its bound (tolerance 2): flagged; "near" lies exactly 2 below: not flagged
    _declaring(tmp_path, "low", 0, {"gizmo": np.full(4, 1.0), "gadget": np.full(4, 4.0)}, [GIZMO, GADGET], idx)
    _declaring(tmp_path, "near", 0, {"gizmo": np.full(4, 2.0), "gadget": np.full(4, 4.0)}, [GIZMO, GADGET], idx)
    summary = summary_frame(records_frame([_read(p) for p in sorted((tmp_path / "records").glob("*.json"))]))
    flagged = dict(zip(summary["method"], falls_below(summary, GIZMO)))
    assert flagged == {"low": True, "near": False}
    assert not falls_below(summary, GADGET).any()  # no bound declared
    readme = write_report(tmp_path)["readme"].read_text()
    section = readme.split("## Method columns")[1].split("\n## ")[0]
    rows = _table(section)
    assert rows["low"]["gizmo est."] == "1.000 ⚠" and rows["near"]["gizmo est."] == "2.000"
    assert float(rows["low"]["gadget bound"]) == float(rows["near"]["gadget bound"]) == 4.0  # the bound, beside
    assert ("- ⚠ beside **gizmo est.**: its mean lies more than 2 below that of **gadget bound**, which bounds "
            "from below the quantity it estimates") in section
    assert "⚠" not in readme.split("## Method columns")[0]  # the main table flags nothing


def test_records_without_declarations_take_them_from_their_method_class(monkeypatch):
    from vaebench.manifest import declared_columns
    from vaebench.methods import METHODS

    monkeypatch.setitem(METHODS._entries, "widget-method", type("WidgetMethod", (), {"columns": (WIDGET,)}))
    monkeypatch.setitem(METHODS._entries, "bare-method", type("BareMethod", (), {}))
    assert declared_columns({"config": {"method": "widget-method"}}) == (WIDGET,)
    assert declared_columns({"config": {"method": "bare-method"}}) == ()  # a class from before columns
    assert declared_columns({"config": {"method": "no-such-method"}}) == ()
    # a record's own declaration wins over its class's
    assert declared_columns({"config": {"method": "widget-method"}, "columns": [GIZMO.to_dict()]}) == (GIZMO,)


def test_each_per_example_file_is_read_once_per_report(tmp_path, monkeypatch):
    import vaebench.records as records_module

    idx = np.arange(4)
    for label in ("ref", "m"):
        for seed in (0, 1):
            _declaring(tmp_path, label, seed, {"log_likelihood_ais": np.arange(4.0) - 90,
                                               "log_likelihood_is": np.arange(4.0) - 91}, [], idx)
    reads: dict[str, int] = {}
    read_values = records_module.read_values

    def counting(results_dir, record):
        reads[record["per_example"]["file"]] = reads.get(record["per_example"]["file"], 0) + 1
        return read_values(results_dir, record)

    monkeypatch.setattr(records_module, "read_values", counting)
    readme = write_report(tmp_path)["readme"].read_text()
    assert "## Paired differences from m" in readme and "## Estimators of one model" in readme
    assert reads == {f"{label}-s{seed}-p.npz": 1 for label in ("ref", "m") for seed in (0, 1)}


def test_a_paired_ais_difference_whose_sides_gaps_differ_by_more_than_its_se_is_marked(tmp_path):
    idx = np.arange(4)
    base = np.array([-90.0, -95.0, -88.0, -92.0])
    # per-seed mean shifts 1.0 and 1.2: SE over seeds 0.1, while the per-image spread makes the SE
    # over images about 1.4; the mark compares the gaps with the SE over seeds
    shift = {0: np.array([1.0, 5.0, -3.0, 1.0]), 1: np.array([1.2, 5.2, -2.8, 1.2])}
    gaps = {"anchor": 0.02, "wobbly": 0.5, "steady": 0.1}  # 0.48 apart from the reference's (marked), 0.08 (not)
    for label, gap in gaps.items():
        for seed in (0, 1):
            values = base + (0 if label == "anchor" else shift[seed])
            _record(tmp_path, label, seed, {"log_likelihood_ais": values.mean(), "bdmc_gap": gap},
                    {"log_likelihood_ais": values.astype(np.float32)}, indices=idx)
    study = {"name": "s", "methods": [{"label": label} for label in gaps]}
    (tmp_path / "study.json").write_text(json.dumps({"study": study}))  # anchor first: the reference
    paths = write_report(tmp_path)
    section = paths["readme"].read_text().split("## Paired differences from anchor")[1].split("\n## ")[0]
    rows = _table(section)
    assert rows["wobbly"]["method − reference"] == "+1.10 †" and rows["steady"]["method − reference"] == "+1.10"
    assert rows["wobbly"]["± SE over seeds"] == "0.1" and float(rows["wobbly"]["± SE over images (paired)"]) > 1
    assert rows["wobbly"]["BDMC gaps (method / reference)"] == "0.50 / 0.02"
    assert rows["steady"]["BDMC gaps (method / reference)"] == "0.10 / 0.02"
    legend = [line for line in section.splitlines() if line.startswith("- ")]
    assert any(line.startswith("- † beside a difference: the two sides' BDMC gaps differ by more than the "
                               "difference's standard error") for line in legend), legend
    assert not any(label in line for line in legend for label in gaps)  # the legend names no method
    assert "†" in paths["paired"].read_text()
    # with one seed the SE over images decides
    one_seed = pd.DataFrame({"se_over_seeds": [math.nan, math.nan], "se_over_images": [0.2, 0.2],
                             "bdmc_gap": [0.5, 0.25], "reference_bdmc_gap": [0.1, 0.1]})
    assert list(uneven_gaps(one_seed)) == [True, False]
