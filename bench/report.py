"""Tables of results from run records: mean ± standard deviation over seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from .errors import VaebenchError
from .records import load_records

#: (record key, table heading), in the order the table shows them
COLUMNS: tuple[tuple[str, str], ...] = (
    ("log_likelihood_ais", "log p(x) AIS"),
    ("bdmc_gap", "BDMC gap"),
    ("log_likelihood_is", "log p(x) IS"),
    ("elbo", "ELBO"),
    ("recon_bernoulli_nll", "recon NLL (nats)"),
    ("recon_mse", "recon MSE"),
    ("recon_pixel_error", "pixel error"),
    ("train_seconds", "train s"),
    ("eval_seconds", "eval s"),
)
KEYS = ("dataset", "latent_dim", "method")


def records_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per finished cell: its keys, seed and metrics."""
    rows = []
    for r in records:
        if r.get("status") != "ok":
            continue
        cfg = r["config"]
        rows.append({"dataset": cfg["dataset"], "latent_dim": cfg["latent_dim"], "method": cfg["label"],
                     "seed": cfg["seed"], **r["metrics"], **r.get("timings", {})})
    return pd.DataFrame(rows)


def summary_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation and seed count per (dataset, latent size, method)."""
    metrics = [k for k, _ in COLUMNS if k in frame.columns]
    grouped = frame.groupby(list(KEYS), sort=False)[metrics]
    summary = grouped.agg(["mean", "std"])
    summary.columns = [f"{metric}_{stat}" for metric, stat in summary.columns]
    summary["n_seeds"] = grouped.size()
    return summary.reset_index()


def _format(mean: float, std: float) -> str:
    if pd.isna(mean):
        return ""
    digits = 4 if abs(mean) < 1 else 2
    return f"{mean:.{digits}f}" if pd.isna(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown_table(summary: pd.DataFrame) -> str:
    shown = summary[list(KEYS)].copy()
    for key, heading in COLUMNS:
        if f"{key}_mean" in summary:
            shown[heading] = [_format(m, s) for m, s in zip(summary[f"{key}_mean"], summary[f"{key}_std"])]
    shown["seeds"] = summary["n_seeds"]
    return shown.to_markdown(index=False)


def write_table(results_dir: Path) -> dict[str, Path]:
    """Write ``table.md`` and ``table.csv`` for the records under ``results_dir``."""
    results_dir = Path(results_dir)
    records = load_records(results_dir)
    frame = records_frame(records)
    if frame.empty:
        raise VaebenchError(f"no finished run records under {results_dir / 'records'}")
    summary = summary_frame(frame)
    paths = {"md": results_dir / "table.md", "csv": results_dir / "table.csv"}
    paths["md"].write_text(markdown_table(summary) + "\n")
    summary.to_csv(paths["csv"], index=False)
    return paths
