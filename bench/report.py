"""Reports from run records alone: the main table, paired comparisons, figures and a README.

Only the cells of the study as it is now (``study.json``) enter the tables; records of an
earlier version of the study are listed as stale, never averaged. Cells are averaged over
seeds only when every other setting agrees (their ``protocol_id``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tabulate import tabulate

from vaebench.datasets.storage import atomic_write_bytes

from .config import to_dict
from .errors import VaebenchError
from .records import dumps, loads, read_values, scan_records
from .study import Study
from .text import plural

#: (record key, table heading, one-line explanation), in the order the table shows them
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("log_likelihood_ais", "log p(x) AIS",
     "annealed importance sampling estimate of log p(x), a stochastic lower bound (step sizes from a pilot run, "
     "then frozen)"),
    ("log_likelihood_is", "log p(x) IS",
     "importance-sampling estimate of log p(x) with q(z|x) as proposal (methods with a posterior density only)"),
    ("log_likelihood_is_full", "log p(x) IS, full test set",
     "the same estimator over the whole test split, not only the N images of the other columns"),
    ("exact_log_likelihood", "log p(x) exact", "log p(x) by numerical quadrature (2-D latent spaces)"),
    ("elbo", "ELBO", "Monte Carlo evidence lower bound E_q[log p(x,z) − log q(z|x)] (methods with a density)"),
    ("elbo_adversary_est", "ELBO (adversary est.)",
     "E_q[log p(x|z) − T(x,z)]: the adversary's estimate of the ELBO, not a bound; ⚠ marks an adversary whose "
     "KL estimate falls short of the Gaussian lower bound by more than 3 nats"),
    ("elbo_upper_bound", "ELBO upper bound",
     "E_q[log p(x|z)] − KL(N(m,S) ‖ p(z)), with m, S the moments of posterior draws: an upper bound on the "
     "true ELBO of an implicit posterior"),
    ("bdmc_gap", "BDMC gap",
     "reverse minus forward AIS on data simulated from the model: how far AIS is from exact (smaller is tighter)"),
    ("recon_bernoulli_nll", "recon NLL (nats)", "E_q[−log p(x|z)], averaged over the posterior draws (lower is better)"),
    ("recon_mse", "recon MSE", "per-pixel squared error of E[x|z], averaged over the posterior draws"),
    ("recon_pixel_error", "pixel error", "fraction of pixels where the thresholded E[x|z] is wrong, averaged over the posterior draws"),
    ("aggregate_kl", "KL(q(z) ‖ p(z))", "KL of the aggregate posterior to the prior, by quadrature (2-D)"),
    ("train_seconds", "train s", "wall seconds of training"),
    ("eval_seconds", "eval s", "wall seconds of evaluation"),
)
#: diagnostics of adversarial methods, shown in a table of their own
DIAGNOSTICS: tuple[tuple[str, str, str], ...] = (
    ("adversary_kl", "adversary KL est.", "E_q[T(x,z)]: the adversary's estimate of KL(q(z|x) ‖ p(z))"),
    ("kl_gaussian_lower_bound", "KL lower bound",
     "KL(N(m,S) ‖ p(z)) from the moments of posterior draws: a lower bound on KL(q(z|x) ‖ p(z))"),
    ("adversary_accuracy", "adversary accuracy", "fraction of posterior and prior draws the adversary tells apart"),
    ("posterior_sd_median", "posterior sd (median)", "median over latent dimensions of the posterior's sd"),
)
#: per-example metrics compared in pairs with the reference method, when both have them
PAIRED = ("log_likelihood_ais", "exact_log_likelihood", "log_likelihood_is", "elbo")
KEYS = ("dataset", "latent_dim", "method")
STUDY_FILE = "study.json"
#: an adversary whose KL estimate is this far below the Gaussian lower bound is not to be trusted
ADVERSARY_TOLERANCE = 3.0


# --- which records belong to the study ------------------------------------------------------
def study_info(results_dir: Path) -> dict[str, Any]:
    """What ``vaebench run`` recorded about the study in ``study.json`` ({} when absent)."""
    path = Path(results_dir) / STUDY_FILE
    if not path.exists():
        return {}
    try:
        info = loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise VaebenchError(f"{path}: not a readable study file ({exc})") from None
    if not isinstance(info, dict):
        raise VaebenchError(f"{path}: not a study file")
    return info


def write_study_file(results_dir: Path, study: Study, command: str) -> Path:
    """Record which study (and which of its cells) and which command produced a results folder."""
    path = Path(results_dir) / STUDY_FILE
    previous = study_info(results_dir)
    old_name = previous.get("study", {}).get("name")
    if old_name and old_name != study.name:
        raise VaebenchError(f"{results_dir} holds the results of study {old_name!r}, not {study.name!r}; "
                            "choose another --out")
    cells = [{"cell_id": run.cell_id, "eval_id": run.eval_id, "protocol_id": run.protocol_id}
             for run in study.cells()]
    atomic_write_bytes(path, dumps({"command": command, "study": to_dict(study), "cells": cells}).encode())
    return path


def split_records(records: list[dict[str, Any]], info: dict[str, Any]
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(records of the study's current cells, stale records of other settings).

    Without a ``study.json`` every record counts, and settings that differ other than by
    seed are told apart by their protocol in :func:`records_frame`.
    """
    cells = info.get("cells")
    if cells is None:
        return records, []
    wanted = {(c["cell_id"], c["eval_id"]) for c in cells}
    current = [r for r in records if (r.get("cell_id"), r.get("eval_id")) in wanted]
    stale = [r for r in records if (r.get("cell_id"), r.get("eval_id")) not in wanted]
    return current, stale


# --- frames ---------------------------------------------------------------------------------------
def records_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per cell (finished or failed): its keys, seed, status and metric means."""
    rows = []
    for r in records:
        cfg = r["config"]
        try:
            row = {"dataset": cfg["dataset"], "latent_dim": cfg["latent_dim"], "method": cfg["label"],
                   "seed": cfg["seed"]}
        except (KeyError, TypeError):
            raise VaebenchError(f"record {r.get('cell_id')!r} has no dataset, latent size, label or seed") from None
        row.update(status=r["status"], cell_id=r["cell_id"], protocol_id=r.get("protocol_id", ""),
                   error=r.get("error", ""), n_examples=r.get("n_examples", math.nan))
        if r["status"] == "ok":
            metrics = r.get("metrics", {})
            plain = {k: v for k, v in metrics.items() if not k.endswith("_sem")}
            timings = {k: v for k, v in r.get("timings", {}).items() if isinstance(v, (int, float))}
            row.update(plain)
            row.update(timings)
            row.update({f"{k}__has": True for k in [*plain, *timings]})
            row.update({f"{k[:-4]}__sem": v for k, v in metrics.items() if k.endswith("_sem")})
        rows.append(row)
    return pd.DataFrame(rows)


def ordered_frame(records: list[dict[str, Any]], results_dir: Path) -> pd.DataFrame:
    """:func:`records_frame`, methods in the study's order where ``results_dir`` records it."""
    frame = records_frame(records)
    if frame.empty:
        broken = scan_records(results_dir)[1]
        detail = f" ({len(broken)} unreadable: {', '.join(p.name for p in broken[:3])})" if broken else ""
        raise VaebenchError(f"no run records of the study under {Path(results_dir) / 'records'}{detail}")
    methods = study_info(results_dir).get("study", {}).get("methods", [])
    rank = {m["label"]: i for i, m in enumerate(methods)}
    return frame.sort_values(
        list(KEYS) + ["seed"], kind="stable",
        key=lambda col: col.map(lambda v: (rank.get(v, len(rank)), v)) if col.name == "method" else col
    ).reset_index(drop=True)


def _protocol_groups(frame: pd.DataFrame) -> pd.DataFrame:
    """Distinguish settings that differ other than by seed: a method label with two protocols
    becomes two rows (``label [protocol]``), so they are never averaged together."""
    frame = frame.copy()
    counts = frame.groupby(list(KEYS))["protocol_id"].transform("nunique")
    split = counts > 1
    frame.loc[split, "method"] = frame.loc[split, "method"] + " [" + frame.loc[split, "protocol_id"] + "]"
    return frame


def summary_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, latent size, method): mean and standard error over seeds of every metric,
    the seed count, the failed seeds and their reasons, and N (test images per cell)."""
    frame = _protocol_groups(frame)
    keys = list(KEYS)
    metrics = [k for k, _, _ in COLUMNS + DIAGNOSTICS if k in frame.columns]
    ok = frame[frame["status"] == "ok"]
    rows = []
    for key, group in frame.groupby(keys, sort=False):
        good = ok.loc[ok.index.isin(group.index)]
        row = dict(zip(keys, key))
        row["n_seeds"] = len(good)
        row["failed"] = "; ".join(f"seed {s}: {e}" for s, e in zip(group.loc[group.status != "ok", "seed"],
                                                                 group.loc[group.status != "ok", "error"]))
        sizes = sorted({int(n) for n in good["n_examples"] if not pd.isna(n)})
        row["n_examples"] = "/".join(map(str, sizes))
        simulated = good["bdmc_examples"] if "bdmc_examples" in good else pd.Series(dtype=float)
        row["n_bdmc"] = "/".join(str(int(n)) for n in sorted(set(simulated.dropna())))
        whole = good["n_full"] if "n_full" in good else pd.Series(dtype=float)
        row["n_full"] = "/".join(str(int(n)) for n in sorted(set(whole.dropna())))
        for metric in metrics:
            has = good[f"{metric}__has"].eq(True) if f"{metric}__has" in good else pd.Series(False, good.index)
            if not has.any():  # not computed for this method: distinct from computed and NaN
                row[f"{metric}_mean"], row[f"{metric}_se"], row[f"{metric}_state"] = math.nan, math.nan, "absent"
                continue
            values = good.loc[has, metric].to_numpy(dtype=float)
            row[f"{metric}_mean"] = float(values.mean())
            if len(values) > 1:
                with np.errstate(invalid="ignore"):  # infinite values (a point-mass posterior's KL) give NaN
                    row[f"{metric}_se"] = float(values.std(ddof=1) / math.sqrt(len(values)))
            elif f"{metric}__sem" in good:
                row[f"{metric}_se"] = float(good.loc[has, f"{metric}__sem"].iloc[0])
            else:
                row[f"{metric}_se"] = math.nan
            row[f"{metric}_state"] = "nan" if np.isnan(values).any() else "ok"
        rows.append(row)
    return pd.DataFrame(rows)


def _format(mean: float, se: float, state: str) -> str:
    if state == "absent":
        return "—"
    if state == "nan" or pd.isna(mean):
        return "nan"
    digits = 4 if abs(mean) < 1 else 3 if abs(mean) < 10 else 2
    return f"{mean:.{digits}f}" if pd.isna(se) else f"{mean:.{digits}f} ± {se:.{digits}f}"


def _flagged(row: pd.Series) -> bool:
    kl, bound = row.get("adversary_kl_mean", math.nan), row.get("kl_gaussian_lower_bound_mean", math.nan)
    return bool(not pd.isna(kl) and not pd.isna(bound) and kl < bound - ADVERSARY_TOLERANCE)


def _shown(summary: pd.DataFrame, columns: tuple[tuple[str, str, str], ...], latex: bool = False) -> pd.DataFrame:
    shown = summary[list(KEYS)].copy()
    for key, heading, _ in columns:
        if f"{key}_mean" not in summary or (summary[f"{key}_state"] == "absent").all():
            continue
        cells = [_format(m, s, st) for m, s, st in
                 zip(summary[f"{key}_mean"], summary[f"{key}_se"], summary[f"{key}_state"])]
        if key == "elbo_adversary_est":
            cells = [c + (" ⚠" if _flagged(row) and c not in ("—", "nan") else "")
                     for c, (_, row) in zip(cells, summary.iterrows())]
        shown[heading] = [c.replace("±", "$\\pm$").replace("⚠", "(!)") if latex else c for c in cells]
    shown["N"] = summary["n_examples"]
    if "BDMC gap" in shown and summary["n_bdmc"].astype(bool).any():
        shown["N BDMC"] = summary["n_bdmc"]  # its own images, simulated from each model
    if "log p(x) IS, full test set" in shown and summary["n_full"].astype(bool).any():
        shown["N full"] = summary["n_full"]
    shown["seeds"] = summary["n_seeds"]
    if summary["failed"].astype(bool).any():
        shown["failed"] = summary["failed"]
    return shown


def spread_note(summary: pd.DataFrame) -> str:
    """What "±" means in the table, in words."""
    if (summary["n_seeds"] > 1).all():
        return "± is the standard error over seeds"
    if (summary["n_seeds"] <= 1).all():
        return "one seed: ± is the standard error over the N test images"
    return "± is the standard error over seeds (over the N test images where a row has one seed)"


def markdown_table(summary: pd.DataFrame) -> str:
    return _shown(summary, COLUMNS).to_markdown(index=False)


def latex_table(summary: pd.DataFrame) -> str:
    return tabulate(_shown(summary, COLUMNS, latex=True), headers="keys", tablefmt="latex_booktabs",
                    showindex=False, disable_numparse=True)


def diagnostics_table(summary: pd.DataFrame) -> str | None:
    """The adversary diagnostics of the rows that have them, or None."""
    present = [k for k, _, _ in DIAGNOSTICS if f"{k}_state" in summary]
    if not present:
        return None
    rows = summary[(summary[[f"{k}_state" for k in present]] != "absent").any(axis=1)]
    if rows.empty:
        return None
    return _shown(rows, DIAGNOSTICS).drop(columns=["failed"], errors="ignore").to_markdown(index=False)


# --- paired comparisons -------------------------------------------------------------------
def _paired(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """a − b on the test images both have, each given as (test indices, values); finite values only."""
    _, i, j = np.intersect1d(a[0], b[0], return_indices=True)
    diff = a[1][i].astype(np.float64) - b[1][j].astype(np.float64)
    return diff[np.isfinite(diff)]


def _over_seeds(diffs: list[np.ndarray]) -> tuple[float, float, float]:
    """Per-seed paired differences → (mean of the per-seed means, its SE over seeds (NaN with one
    seed), the SE from the per-image differences)."""
    means = np.array([d.mean() for d in diffs])
    se_images = np.array([d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else math.nan for d in diffs])
    se_seeds = float(means.std(ddof=1) / math.sqrt(len(means))) if len(means) > 1 else math.nan
    return float(means.mean()), se_seeds, float(np.sqrt(np.nansum(np.square(se_images))) / len(se_images))


def paired_differences(records: list[dict[str, Any]], results_dir: Path, reference: str | None = None,
                       order: list[str] | None = None) -> pd.DataFrame:
    """Each method minus the reference method, per data set, latent size and metric, paired by
    seed and test image.

    Per seed: the mean over the shared test images of (method − reference), with its standard
    error over images. Across seeds: the mean of the per-seed differences and its standard
    error over seeds (NaN with one seed).
    """
    values: dict[tuple[str, int, str, int], dict[str, np.ndarray]] = {}
    order = list(order or [])
    for r in records:
        if r.get("status") != "ok":
            continue
        arrays = read_values(results_dir, r)
        if arrays is None:
            continue
        cfg = r["config"]
        values[(cfg["dataset"], cfg["latent_dim"], cfg["label"], cfg["seed"])] = arrays
        if cfg["label"] not in order:
            order.append(cfg["label"])
    rows = []
    settings = sorted({(d, z) for d, z, _, _ in values})
    for dataset, latent in settings:
        methods = [m for m in order if any(k[:3] == (dataset, latent, m) for k in values)]
        ref = reference if reference in methods else (methods[0] if methods else None)
        for method in methods:
            if method == ref:
                continue
            for metric in PAIRED:
                diffs = []
                for (d, z, m, seed), arrays in values.items():
                    if (d, z, m) != (dataset, latent, method) or metric not in arrays:
                        continue
                    base = values.get((dataset, latent, ref, seed))
                    if base is None or metric not in base:
                        continue
                    diff = _paired((arrays["indices"], arrays[metric]), (base["indices"], base[metric]))
                    if len(diff):
                        diffs.append(diff)
                if not diffs:
                    continue
                difference, se_seeds, se_images = _over_seeds(diffs)
                rows.append({
                    "dataset": dataset, "latent_dim": latent, "method": method, "reference": ref,
                    "metric": metric, "seeds": len(diffs), "N": min(len(d) for d in diffs),
                    "difference": difference, "se_over_seeds": se_seeds, "se_over_images": se_images,
                })
    return pd.DataFrame(rows)


#: estimators of one model compared on the test images they share, the tighter (or exact) first:
#: the difference says how far the second falls short
ESTIMATOR_PAIRS: tuple[tuple[str, str], ...] = (
    ("exact_log_likelihood", "log_likelihood_ais"),
    ("exact_log_likelihood", "log_likelihood_is"),
    ("log_likelihood_ais", "log_likelihood_is"),
    ("log_likelihood_ais", "log_likelihood_is_full"),
    ("log_likelihood_is", "elbo"),
)


def _per_image(arrays: dict[str, np.ndarray], metric: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(test indices, values) of one per-example metric; full-test-set metrics have their own indices."""
    indices = arrays.get("indices_full" if metric.endswith("_full") else "indices")
    if metric not in arrays or indices is None:
        return None
    return indices, arrays[metric]


def estimator_gaps(records: list[dict[str, Any]], results_dir: Path, order: list[str] | None = None) -> pd.DataFrame:
    """One estimator minus another (``ESTIMATOR_PAIRS``) for each method, on the test images both
    were computed on: per seed the mean difference over those images; then the mean over seeds,
    its standard error over seeds, and the standard error from the per-image differences."""
    headings = {k: h for k, h, _ in COLUMNS}
    per_seed: dict[tuple, list[np.ndarray]] = {}
    for r in records:
        arrays = read_values(results_dir, r) if r.get("status") == "ok" else None
        if arrays is None:
            continue
        cfg = r["config"]
        for high, low in ESTIMATOR_PAIRS:
            a, b = _per_image(arrays, high), _per_image(arrays, low)
            if a is None or b is None:
                continue
            diff = _paired(a, b)
            if len(diff) >= 2:
                key = (cfg["dataset"], cfg["latent_dim"], cfg["label"], f"{headings[high]} − {headings[low]}")
                per_seed.setdefault(key, []).append(diff)
    rank = {m: i for i, m in enumerate(order or [])}
    rows = []
    for (dataset, latent, method, estimators), diffs in sorted(
            per_seed.items(), key=lambda kv: (kv[0][0], kv[0][1], rank.get(kv[0][2], len(rank)), kv[0][2])):
        difference, se_seeds, se_images = _over_seeds(diffs)
        rows.append({"dataset": dataset, "latent_dim": latent, "method": method, "estimators": estimators,
                     "seeds": len(diffs), "N": min(len(d) for d in diffs), "difference": f"{difference:+.3f}",
                     "± SE over seeds": "" if math.isnan(se_seeds) else f"{se_seeds:.3f}",
                     "± SE over images (paired)": f"{se_images:.3f}"})
    return pd.DataFrame(rows)


def paired_table(paired: pd.DataFrame) -> str:
    shown = paired[["dataset", "latent_dim", "method", "reference", "metric", "seeds", "N"]].copy()
    shown["method − reference"] = [f"{d:+.2f}" for d in paired["difference"]]
    shown["± SE over seeds"] = ["" if pd.isna(s) else f"{s:.2f}" for s in paired["se_over_seeds"]]
    shown["± SE over images (paired)"] = [f"{s:.2f}" for s in paired["se_over_images"]]
    return shown.to_markdown(index=False)


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
                     "ours": _format(ours, se, row[f"{metric}_state"]), "N": n, "seeds": row["n_seeds"],
                     "published": values[row["method"]],
                     "ours − published": "" if pd.isna(ours) else f"{ours - values[row['method']]:+.3f}"})
    return pd.DataFrame(rows) if rows else None


# --- a run beside a reference run ----------------------------------------------------------------
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
        for key in ("log_likelihood_ais", "exact_log_likelihood", "log_likelihood_is", "elbo"):
            here, there = row.get(f"{key}_mean"), row.get(f"{key}_mean_ref")
            if here is None or there is None or pd.isna(here) or pd.isna(there):
                continue
            rows.append({**{k: row[k] for k in KEYS}, "metric": key, "this run": round(here, 3),
                         "reference": round(there, 3), "difference": round(here - there, 3)})
    return pd.DataFrame(rows) if rows else None


# --- writing --------------------------------------------------------------------------------------
def _load(results_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[Path], dict[str, Any]]:
    records, broken = scan_records(results_dir)
    info = study_info(results_dir)
    current, stale = split_records(records, info)
    return current, stale, broken, info


def write_table(results_dir: Path, frame: pd.DataFrame | None = None) -> dict[str, Path]:
    """Write ``table.md``, ``table.csv`` and ``table.tex`` for the study's records under ``results_dir``
    (or for ``frame``, an :func:`ordered_frame` of them already loaded)."""
    results_dir = Path(results_dir)
    if frame is None:
        current, _, _, _ = _load(results_dir)
        frame = ordered_frame(current, results_dir)
    summary = summary_frame(frame)
    paths = {"md": results_dir / "table.md", "csv": results_dir / "table.csv", "tex": results_dir / "table.tex"}
    apart = ["BDMC gap (N BDMC images simulated from the model)"]
    if summary["n_full"].astype(bool).any():
        apart.append("the full test set (N full)")
    caption = (f"N test images per cell, the same images for every column but {' and '.join(apart)}; "
               f"{spread_note(summary)}.")
    paths["md"].write_text(markdown_table(summary) + "\n\n" + caption + "\n")
    summary.to_csv(paths["csv"], index=False)
    paths["tex"].write_text(latex_table(summary) + "\n% " + caption + "\n")
    return paths


def _estimator_settings(evaluation: dict[str, Any]) -> dict[str, str]:
    """The estimators' settings from the study's ``[eval]``, appended to the column explanations."""
    out = {}
    if evaluation.get("is_samples"):
        out["log_likelihood_is"] = f" ({evaluation['is_samples']:,} samples per image)"
    if evaluation.get("full_test_is_samples"):
        out["log_likelihood_is_full"] = f" ({evaluation['full_test_is_samples']:,} samples per image)"
    if evaluation.get("ais_steps"):
        prior = evaluation.get("ais_prior_steps") or evaluation["ais_steps"]
        out["log_likelihood_ais"] = (f" ({evaluation.get('ais_chains')} chains × {evaluation.get('ais_leapfrog')} "
                                     f"leapfrog steps; {evaluation['ais_steps']} temperatures from the posterior's "
                                     f"Gaussian, {prior} from the prior)")
    draws = max(evaluation.get(k) or 0 for k in ("is_samples", "elbo_samples", "moment_samples"))
    if draws:  # one set of draws per image serves the ELBO, reconstruction and the posterior's moments
        for key in ("elbo", "elbo_upper_bound", "recon_bernoulli_nll", "recon_mse", "recon_pixel_error"):
            out[key] = f" ({draws:,} draws per image)"
    return out


def _provenance_lines(records: list[dict[str, Any]]) -> list[str]:
    seen: dict[tuple, int] = {}
    for r in records:
        p = r.get("provenance") or {}
        key = (p.get("commit"), p.get("dirty"), (p.get("packages") or {}).get("torch"), p.get("device"),
               p.get("threads"), p.get("eval_threads"))
        seen[key] = seen.get(key, 0) + 1
    lines = [f"- {plural(count, 'cell')}: {_who(*key)}" for key, count in seen.items()]
    for r in records:  # a run resumed after an interruption names each process; the line above is its last
        segments = (r.get("provenance") or {}).get("training_segments") or []
        if len(segments) > 1:
            parts = [f"epochs {s['from_epoch']:,}–{s['to_epoch']:,} "
                     + ("(not recorded: the checkpoint predates this record-keeping)" if s.get("recorded") is False
                        else f"({_who(s.get('commit'), s.get('dirty'), s.get('torch'), s.get('device'), s.get('threads'))})")
                     for s in segments]
            lines.append(f"- {r.get('cell_id')} trained by {len(segments)} processes: " + "; ".join(parts))
    return lines


def _who(commit: str | None, dirty: bool | None, torch_version: str | None, device: str | None,
         threads: int | None, eval_threads: int | None = None) -> str:
    code = "unknown code" if not commit else f"commit {commit[:12]}" + (" (with local changes)" if dirty else "")
    evaluation = f" ({eval_threads} for evaluation)" if isinstance(eval_threads, int) and eval_threads != threads else ""
    return (f"{code}, torch {torch_version}, {device or 'unknown device'}, "
            f"{plural(threads, 'thread') if isinstance(threads, int) else 'unknown threads'}{evaluation}")


def write_report(results_dir: Path, reference_dir: Path | None = None) -> dict[str, Path]:
    """Tables, paired comparisons, figures and a README that embeds them, from the records alone.

    ``reference_dir``: another results folder of the same study (say, the committed one) to
    set beside this one.
    """
    from . import figures  # matplotlib is imported only when figures are drawn

    results_dir = Path(results_dir)
    current, stale, broken, info = _load(results_dir)
    frame = ordered_frame(current, results_dir)
    paths = write_table(results_dir, frame)
    summary = summary_frame(frame)
    ok = [r for r in current if r.get("status") == "ok"]
    failed = [r for r in current if r.get("status") != "ok"]
    methods = [m["label"] for m in info.get("study", {}).get("methods", [])]
    paired = paired_differences(ok, results_dir, reference=methods[0] if methods else None, order=methods)
    fig_dir = results_dir / "figures"
    ok_frame = frame[frame["status"] == "ok"]
    drawn = [
        figures.log_likelihood_plot(ok_frame, fig_dir / "log_likelihood.png") if len(ok_frame) else None,
        figures.training_curves(ok, fig_dir / "training_curves.png", order=methods),
        *figures.image_grids(ok, fig_dir / "samples.png", fig_dir / "reconstructions.png"),
    ]
    drawn = [p for p in drawn if p is not None]
    drawn += sorted(p for p in fig_dir.glob("*.png") if p not in drawn)  # e.g. the toy posteriors
    study = info.get("study", {})
    lines = [f"# Results: {study.get('name', results_dir.name)}", ""]
    if study.get("description"):
        lines += [study["description"].strip(), ""]
    if info.get("command"):
        shown_dir = results_dir if not results_dir.is_absolute() else Path(results_dir.name)
        lines += [f"Produced by `{info['command']}`; `vaebench report {shown_dir}` regenerates this "
                  "report from the records alone.", ""]
    recorded = {r.get("cell_id") for r in current}
    unrecorded = [c["cell_id"] for c in info.get("cells", []) if c["cell_id"] not in recorded]
    lines += [plural(len(ok), "finished cell") + (f", {len(failed)} failed" if failed else "")
              + (f", {len(unrecorded)} without a record yet" if unrecorded else "")
              + f". Log-likelihoods and ELBOs in nats per test image (higher is better). N is the number of "
              f"test images of each cell: every column is computed on the same images, except the BDMC gap "
              f"(images simulated from the model) and columns marked 'full test set'; {spread_note(summary)}. "
              "'—' means not computed for that method, 'nan' means computed and not a number.", "",
              markdown_table(summary), ""]
    settings = _estimator_settings(study.get("eval") or {})
    lines += ["Columns:", ""] + [f"- **{h}**: {text}{settings.get(k, '')}" for k, h, text in COLUMNS
                                 if f"{k}_mean" in summary and (summary[f"{k}_state"] != "absent").any()]
    if "n_bdmc" in summary and summary["n_bdmc"].astype(bool).any():
        lines += ["- **N BDMC**: images simulated from each model for the BDMC gap"]
    lines += [""]
    diag = diagnostics_table(summary)
    if diag:
        shown = [(k, h, text) for k, h, text in DIAGNOSTICS
                 if f"{k}_state" in summary and (summary[f"{k}_state"] != "absent").any()]
        adversarial = any(k.startswith("adversary") for k, _, _ in shown)
        lines += [f"## {'Adversary and posterior' if adversarial else 'Posterior'} diagnostics", "", diag, ""]
        lines += [f"- **{h}**: {text}" for _, h, text in shown] + [""]
    if not paired.empty:
        paths["paired"] = results_dir / "paired.md"
        paths["paired"].write_text(paired_table(paired) + "\n")
        ref = paired["reference"].iloc[0]
        lines += [f"## Paired differences from {ref}", "",
                  "Each method minus the reference on the same test images and seeds: the mean over seeds of "
                  "the per-seed mean difference, its standard error over seeds, and the standard error from "
                  "the per-image differences (paired).", "", paired_table(paired), ""]
    gaps = estimator_gaps(ok, results_dir, order=methods)
    if not gaps.empty:
        lines += ["## Estimators of one model on the same images", "",
                  "One estimator minus another on the test images both were computed on (paired), averaged "
                  "over seeds. The sampling estimators of log p(x) are stochastic lower bounds and the ELBO a "
                  "lower bound, so a positive difference says by at least how much the second one falls short "
                  "of log p(x).", "",
                  gaps.to_markdown(index=False, disable_numparse=True), ""]
    published = study.get("published") or {}
    anchored = published_comparison(summary, published)
    if anchored is not None:
        lines += [f"## Beside the published values ({published.get('source', '')})", "",
                  anchored.to_markdown(index=False, disable_numparse=True), "",
                  f"N test images; {spread_note(summary)}.", ""]
    if reference_dir is not None and Path(reference_dir).resolve() != results_dir.resolve():
        comparison = reference_comparison(summary, Path(reference_dir))
        if comparison is not None:
            lines += [f"## This run beside the reference results in `{Path(reference_dir).name}`", "",
                      comparison.to_markdown(index=False), ""]
    if failed:
        lines += ["## Failed cells", ""] + [f"- `{r['cell_id']}`: {r.get('error', '')}" for r in failed] + [""]
    if unrecorded:
        lines += ["## Cells of the study without a record yet (not run, or not finished)", ""]
        lines += [f"- `{cell}`" for cell in unrecorded] + [""]
    if stale:
        lines += ["## Stale records (other settings; not in the tables)", ""]
        lines += [f"- `{r['cell_id']}` (evaluation {r.get('eval_id', '?')})" for r in stale] + [""]
    if broken:
        lines += ["## Unreadable record files (not in the tables)", ""]
        lines += [f"- `{p.name}`" for p in broken] + [""]
    lines += ["## Provenance", ""] + _provenance_lines(current) + [""]
    for path in drawn:
        lines += [f"![{path.stem.replace('_', ' ')}](figures/{path.name})", ""]
    paths["readme"] = results_dir / "README.md"
    paths["readme"].write_text("\n".join(lines))
    return {**paths, **{p.stem: p for p in drawn}}
