"""A study beside other numbers: the published values it reproduces, and a reference results folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import VaebenchError
from ..manifest import split_records, study_info
from ..records import scan_records
from .formatting import format_mean
from .frames import KEYS, records_frame, summary_frame
from .statistics import PAIRED


def published_comparison(summary: pd.DataFrame, published: dict[str, Any]) -> pd.DataFrame | None:
    """The study's means beside the published values it reproduces (``[published]`` in the study)."""
    metric, values = published.get("metric"), published.get("values") or {}
    if not values or f"{metric}_mean" not in summary:
        return None
    rows = []
    for _, row in summary.iterrows():
        if row["method"] not in values:
            continue
        ours, se = row[f"{metric}_mean"], row[f"{metric}_se"]
        n = row["n_full"] if metric.endswith("_full") and row.get("n_full") else row["n_examples"]
        rows.append({**{k: row[k] for k in KEYS}, "metric": metric,
                     "ours": format_mean(ours, se, row[f"{metric}_state"]), "N": n, "seeds": row["n_seeds"],
                     "published": values[row["method"]],
                     "ours − published": "" if pd.isna(ours) else f"{ours - values[row['method']]:+.3f}"})
    return pd.DataFrame(rows) if rows else None


def reference_comparison(summary: pd.DataFrame, reference_dir: Path) -> pd.DataFrame | None:
    """This study's means beside those of the same study in ``reference_dir`` (e.g. committed results)."""
    try:
        ref_records, _ = scan_records(reference_dir)
        ref_current, _ = split_records(ref_records, study_info(reference_dir))
    except VaebenchError:
        return None
    if not ref_current:
        return None
    ref = summary_frame(records_frame(ref_current))
    merged = summary.merge(ref, on=list(KEYS), suffixes=("", "_ref"))
    rows = []
    for _, row in merged.iterrows():
        for key in PAIRED:
            here, there = row.get(f"{key}_mean"), row.get(f"{key}_mean_ref")
            if here is None or there is None or pd.isna(here) or pd.isna(there):
                continue
            rows.append({**{k: row[k] for k in KEYS}, "metric": key, "this run": round(here, 3),
                         "reference": round(there, 3), "difference": round(here - there, 3)})
    return pd.DataFrame(rows) if rows else None
