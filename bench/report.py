"""Reports from run records alone: tables (mean ± standard deviation over seeds), figures, README."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from tabulate import tabulate

from .config import to_dict
from .errors import VaebenchError
from .records import load_records
from .study import Study

#: (record key, table heading), in the order the table shows them
COLUMNS: tuple[tuple[str, str], ...] = (
    ("log_likelihood_ais", "log p(x) AIS"),
    ("bdmc_gap", "BDMC gap"),
    ("log_likelihood_is", "log p(x) IS"),
    ("exact_log_likelihood", "log p(x) exact"),
    ("elbo", "ELBO"),
    ("recon_bernoulli_nll", "recon NLL (nats)"),
    ("recon_mse", "recon MSE"),
    ("recon_pixel_error", "pixel error"),
    ("aggregate_kl", "KL(q(z) ‖ p(z))"),
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
    digits = 4 if abs(mean) < 1 else 3 if abs(mean) < 10 else 2
    return f"{mean:.{digits}f}" if pd.isna(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown_table(summary: pd.DataFrame) -> str:
    shown = summary[list(KEYS)].copy()
    for key, heading in COLUMNS:
        if f"{key}_mean" in summary:
            shown[heading] = [_format(m, s) for m, s in zip(summary[f"{key}_mean"], summary[f"{key}_std"])]
    shown["seeds"] = summary["n_seeds"]
    return shown.to_markdown(index=False)


def latex_table(summary: pd.DataFrame) -> str:
    shown = summary[list(KEYS)].copy()
    for key, heading in COLUMNS:
        if f"{key}_mean" in summary:
            shown[heading] = [_format(m, s).replace("±", "$\\pm$")
                              for m, s in zip(summary[f"{key}_mean"], summary[f"{key}_std"])]
    shown["seeds"] = summary["n_seeds"]
    return tabulate(shown, headers="keys", tablefmt="latex_booktabs", showindex=False, disable_numparse=True)


STUDY_FILE = "study.json"


def _study_info(results_dir: Path) -> dict[str, Any]:
    """What ``vaebench run`` recorded about the study in ``study.json`` ({} when absent)."""
    path = Path(results_dir) / STUDY_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def ordered_frame(records: list[dict[str, Any]], results_dir: Path) -> pd.DataFrame:
    """:func:`records_frame`, methods in the study's order where ``results_dir`` records it."""
    frame = records_frame(records)
    if frame.empty:
        raise VaebenchError(f"no finished run records under {Path(results_dir) / 'records'}")
    rank = {m["label"]: i for i, m in enumerate(_study_info(results_dir).get("study", {}).get("methods", []))}
    return frame.sort_values(
        list(KEYS), kind="stable",
        key=lambda col: col.map(lambda v: (rank.get(v, len(rank)), v)) if col.name == "method" else col)


def write_table(results_dir: Path, frame: pd.DataFrame | None = None) -> dict[str, Path]:
    """Write ``table.md``, ``table.csv`` and ``table.tex`` for the records under ``results_dir``
    (or for ``frame``, an :func:`ordered_frame` of them already loaded)."""
    results_dir = Path(results_dir)
    if frame is None:
        frame = ordered_frame(load_records(results_dir), results_dir)
    summary = summary_frame(frame)
    paths = {"md": results_dir / "table.md", "csv": results_dir / "table.csv", "tex": results_dir / "table.tex"}
    paths["md"].write_text(markdown_table(summary) + "\n")
    summary.to_csv(paths["csv"], index=False)
    paths["tex"].write_text(latex_table(summary) + "\n")
    return paths


def write_study_file(results_dir: Path, study: Study, command: str) -> Path:
    """Record which study and which command produced a results folder (read by :func:`write_report`)."""
    path = Path(results_dir) / STUDY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"command": command, "study": to_dict(study)}, indent=2) + "\n")
    return path


def write_report(results_dir: Path) -> dict[str, Path]:
    """Tables, figures and a README that embeds them, for the records under ``results_dir``.

    The README names the study's description and the command that produced the records
    when the folder has a ``study.json`` (written by ``vaebench run``).
    """
    from . import figures  # matplotlib is imported only when figures are drawn

    results_dir = Path(results_dir)
    records = load_records(results_dir)
    frame = ordered_frame(records, results_dir)
    paths = write_table(results_dir, frame)
    fig_dir = results_dir / "figures"
    drawn = [
        figures.log_likelihood_plot(frame, fig_dir / "log_likelihood.png"),
        figures.training_curves(records, fig_dir / "training_curves.png"),
        *figures.image_grids(records, fig_dir / "samples.png", fig_dir / "reconstructions.png"),
    ]
    drawn = [p for p in drawn if p is not None]
    drawn += sorted(p for p in fig_dir.glob("*.png") if p not in drawn)  # e.g. the toy posteriors
    failed = [r for r in records if r.get("status") != "ok"]
    about = _study_info(results_dir)
    study = about.get("study", {})
    lines = [f"# Results: {study.get('name', results_dir.name)}", ""]
    if study.get("description"):
        lines += [study["description"].strip(), ""]
    if about.get("command"):
        lines += [f"Produced by `{about['command']}`; `vaebench report {results_dir}` regenerates this "
                  "report from the records alone.", ""]
    lines += [f"{len(records) - len(failed)} finished cells"
              + (f", {len(failed)} failed ({', '.join(r['cell_id'] for r in failed)})" if failed else "")
              + ". Mean ± standard deviation over seeds; log-likelihoods and ELBO in nats per test "
              "image (higher is better), reconstruction NLL in nats (lower is better).", "",
              paths["md"].read_text(), ""]
    for path in drawn:
        lines += [f"![{path.stem.replace('_', ' ')}](figures/{path.name})", ""]
    paths["readme"] = results_dir / "README.md"
    paths["readme"].write_text("\n".join(lines))
    return {**paths, **{p.stem: p for p in drawn}}
