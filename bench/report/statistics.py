"""Statistics on per-example values: pairing by test index, paired differences between methods,
gaps between estimators of one model, summaries over seeds, and bounds a column should respect.

Per-example values come through a :class:`~vaebench.records.PerExampleValues`, which reads each
``records/<cell-id>.npz`` once however many tables use it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..columns import TABLE_COLUMNS, Column
from ..records import PerExampleValues
from .frames import method_columns

#: built-in per-example columns compared in pairs with the reference method, when both have them
#: (a method's declared columns are compared too, where both methods of a pair declare them)
PAIRED = ("log_likelihood_ais", "exact_log_likelihood", "log_likelihood_is", "elbo")
#: the paired column whose two sides' estimators are checked for equal tightness by their BDMC gaps
AIS_COLUMN = "log_likelihood_ais"
#: estimators of one model compared on the test images they share, the tighter (or exact) first:
#: the difference says how far the second falls short
ESTIMATOR_PAIRS: tuple[tuple[str, str], ...] = (
    ("exact_log_likelihood", "log_likelihood_ais"),
    ("exact_log_likelihood", "log_likelihood_is"),
    ("log_likelihood_ais", "log_likelihood_is"),
    ("log_likelihood_ais", "log_likelihood_is_full"),
    ("log_likelihood_is", "elbo"),
)


def per_image(arrays: dict[str, np.ndarray], metric: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(test indices, values) of one per-example metric; full-test-set metrics have their own indices."""
    indices = arrays.get("indices_full" if metric.endswith("_full") else "indices")
    if metric not in arrays or indices is None:
        return None
    return indices, arrays[metric]


def paired_by_index(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """a − b on the test images both have, each given as (test indices, values); finite values only."""
    _, i, j = np.intersect1d(a[0], b[0], return_indices=True)
    diff = a[1][i].astype(np.float64) - b[1][j].astype(np.float64)
    return diff[np.isfinite(diff)]


def over_seeds(diffs: list[np.ndarray]) -> tuple[float, float, float]:
    """Per-seed paired differences → (mean of the per-seed means, its SE over seeds (NaN with one
    seed), the SE from the per-image differences)."""
    means = np.array([d.mean() for d in diffs])
    se_images = np.array([d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else math.nan for d in diffs])
    se_seeds = float(means.std(ddof=1) / math.sqrt(len(means))) if len(means) > 1 else math.nan
    return float(means.mean()), se_seeds, float(np.sqrt(np.nansum(np.square(se_images))) / len(se_images))


def _reader(results_dir: Path, values: PerExampleValues | None) -> PerExampleValues:
    return values if values is not None else PerExampleValues(results_dir)


def paired_differences(records: list[dict[str, Any]], results_dir: Path, reference: str | None = None,
                       order: list[str] | None = None, *, values: PerExampleValues | None = None,
                       metrics: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Each method minus the reference method, per data set, latent size and metric, paired by
    seed and test image.

    ``metrics``: which per-example columns (default: :data:`PAIRED` and every column the records'
    methods declare); a metric enters where both methods have it. ``values``: the per-example
    reader to share with other tables (default: a new one over ``results_dir``).

    Per seed: the mean over the shared test images of (method − reference), with its standard
    error over images. Across seeds: the mean of the per-seed differences and its standard
    error over seeds (NaN with one seed). For :data:`AIS_COLUMN`, ``bdmc_gap`` and
    ``reference_bdmc_gap``: each side's BDMC gap (from its records' metrics) averaged over the
    paired seeds, NaN where a side has none (see :func:`uneven_gaps`).
    """
    read = _reader(results_dir, values)
    if metrics is None:
        metrics = PAIRED + tuple(c.name for c in method_columns(records))
    cells: dict[tuple[str, int, str, int], dict[str, np.ndarray]] = {}
    gaps: dict[tuple[str, int, str, int], float] = {}
    order = list(order or [])
    for r in records:
        if r.get("status") != "ok":
            continue
        arrays = read(r)
        if arrays is None:
            continue
        cfg = r["config"]
        key = (cfg["dataset"], cfg["latent_dim"], cfg["label"], cfg["seed"])
        cells[key] = arrays
        gaps[key] = float((r.get("metrics") or {}).get("bdmc_gap", math.nan))
        if cfg["label"] not in order:
            order.append(cfg["label"])
    rows = []
    for dataset, latent in sorted({(d, z) for d, z, _, _ in cells}):
        methods = [m for m in order if any(k[:3] == (dataset, latent, m) for k in cells)]
        ref = reference if reference in methods else (methods[0] if methods else None)
        for method in methods:
            if method == ref:
                continue
            for metric in metrics:
                diffs, seeds = [], []
                for (d, z, m, seed), arrays in cells.items():
                    if (d, z, m) != (dataset, latent, method) or metric not in arrays:
                        continue
                    base = cells.get((dataset, latent, ref, seed))
                    if base is None or metric not in base:
                        continue
                    diff = paired_by_index((arrays["indices"], arrays[metric]), (base["indices"], base[metric]))
                    if len(diff):
                        diffs.append(diff)
                        seeds.append(seed)
                if not diffs:
                    continue
                difference, se_seeds, se_images = over_seeds(diffs)
                row = {
                    "dataset": dataset, "latent_dim": latent, "method": method, "reference": ref,
                    "metric": metric, "seeds": len(diffs), "N": min(len(d) for d in diffs),
                    "difference": difference, "se_over_seeds": se_seeds, "se_over_images": se_images,
                }
                if metric == AIS_COLUMN:
                    for column, label in (("bdmc_gap", method), ("reference_bdmc_gap", ref)):
                        row[column] = float(np.mean([gaps[(dataset, latent, label, s)] for s in seeds]))
                rows.append(row)
    return pd.DataFrame(rows)


def uneven_gaps(paired: pd.DataFrame) -> pd.Series:
    """Per row of :func:`paired_differences`: whether the two sides' BDMC gaps differ by more than
    the difference's standard error (over seeds; over images where there is one seed), so that the
    two AIS estimates are not equally tight on the scale of the comparison. False where a side
    has no gap."""
    if "bdmc_gap" not in paired:
        return pd.Series(False, index=paired.index)
    se = paired["se_over_seeds"].where(paired["se_over_seeds"].notna(), paired["se_over_images"]).astype(float)
    spread = (paired["bdmc_gap"].astype(float) - paired["reference_bdmc_gap"].astype(float)).abs()
    return (spread.notna() & (spread > se)).astype(bool)


def missed_gap_target(summary: pd.DataFrame) -> pd.Series:
    """Per summary row: whether a seed's gap-targeted AIS reached its temperature cap with the BDMC
    gap still above the target (False for rows without a gap target)."""
    if "gap_target_missed" not in summary:
        return pd.Series(False, index=summary.index)
    return (summary["gap_target_missed"].fillna(0) > 0).astype(bool)


def estimator_gaps(records: list[dict[str, Any]], results_dir: Path, order: list[str] | None = None, *,
                   values: PerExampleValues | None = None) -> pd.DataFrame:
    """One estimator minus another (``ESTIMATOR_PAIRS``) for each method, on the test images both
    were computed on: per seed the mean difference over those images; then the mean over seeds,
    its standard error over seeds, and the standard error from the per-image differences."""
    read = _reader(results_dir, values)
    headings = {c.name: c.heading for c in TABLE_COLUMNS}
    per_seed: dict[tuple, list[np.ndarray]] = {}
    for r in records:
        arrays = read(r) if r.get("status") == "ok" else None
        if arrays is None:
            continue
        cfg = r["config"]
        for high, low in ESTIMATOR_PAIRS:
            a, b = per_image(arrays, high), per_image(arrays, low)
            if a is None or b is None:
                continue
            diff = paired_by_index(a, b)
            if len(diff) >= 2:
                key = (cfg["dataset"], cfg["latent_dim"], cfg["label"], f"{headings[high]} − {headings[low]}")
                per_seed.setdefault(key, []).append(diff)
    rank = {m: i for i, m in enumerate(order or [])}
    rows = []
    for (dataset, latent, method, estimators), diffs in sorted(
            per_seed.items(), key=lambda kv: (kv[0][0], kv[0][1], rank.get(kv[0][2], len(rank)), kv[0][2])):
        difference, se_seeds, se_images = over_seeds(diffs)
        rows.append({"dataset": dataset, "latent_dim": latent, "method": method, "estimators": estimators,
                     "seeds": len(diffs), "N": min(len(d) for d in diffs), "difference": f"{difference:+.3f}",
                     "± SE over seeds": "" if math.isnan(se_seeds) else f"{se_seeds:.3f}",
                     "± SE over images (paired)": f"{se_images:.3f}"})
    return pd.DataFrame(rows)


def falls_below(summary: pd.DataFrame, column: Column) -> pd.Series:
    """Per summary row: whether ``column``'s mean lies more than its declared tolerance below the
    mean of the column it should not fall below (``Column.should_not_fall_below``); False where
    either mean is missing or NaN, or the column declares no such bound."""
    if column.should_not_fall_below is None:
        return pd.Series(False, index=summary.index)
    other, tolerance = column.should_not_fall_below
    if f"{column.name}_mean" not in summary or f"{other}_mean" not in summary:
        return pd.Series(False, index=summary.index)
    mean, bound = summary[f"{column.name}_mean"].astype(float), summary[f"{other}_mean"].astype(float)
    return (mean.notna() & bound.notna() & (mean < bound - tolerance)).astype(bool)
