"""Reports: paired differences, honest cells (not computed, nan, failed), stale records apart."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vaebench.records import write_record, write_values
from vaebench.report import paired_differences, records_frame, summary_frame, write_report, write_table


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
    import json

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
    assert "## Posterior diagnostics" in readme and "posterior sd (median)" in readme
    assert "adversary" not in readme.lower()
    _record(tmp_path, "avb", 0, {"adversary_kl": 5.0, "posterior_sd_median": 0.5},
            {"adversary_kl": np.full(3, 5, np.float32)}, indices=idx)
    readme = write_report(tmp_path)["readme"].read_text()
    assert "## Adversary and posterior diagnostics" in readme and "**adversary KL est.**" in readme
    assert "**adversary accuracy**" not in readme


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
