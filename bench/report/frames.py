"""Records → pandas frames: one row per cell, then one row per setting summarised over seeds.

Which columns a summary holds comes from declarations (:mod:`vaebench.columns`): the built-in
ones, and those each record's method declares (:func:`vaebench.manifest.declared_columns`),
which :func:`records_frame` keeps in the frame's ``attrs["columns"]``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..columns import BUILTIN_COLUMNS, Column
from ..errors import VaebenchError
from ..manifest import declared_columns, study_info
from ..records import scan_records

#: what a table row is: one data set, latent size and method
KEYS = ("dataset", "latent_dim", "method")


def method_columns(records: list[dict[str, Any]]) -> tuple[Column, ...]:
    """The columns the records' methods declare, each once (the first declaration of a name wins),
    in the order the records declare them; built-in columns are not redeclared."""
    seen = {c.name for c in BUILTIN_COLUMNS}
    out = []
    for record in records:
        for column in declared_columns(record):
            if column.name not in seen:
                seen.add(column.name)
                out.append(column)
    return tuple(out)


def frame_columns(frame: pd.DataFrame) -> tuple[Column, ...]:
    """The method-declared columns that :func:`records_frame` found in the frame's records."""
    return tuple(frame.attrs.get("columns", ()))


def records_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per cell (finished or failed): its keys, seed, status and metric means; the
    method-declared columns of the records in ``attrs["columns"]``."""
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
    frame = pd.DataFrame(rows)
    frame.attrs["columns"] = method_columns(records)
    return frame


def study_order(info: dict[str, Any]) -> list[str]:
    """The method labels of the study in ``study.json``'s order ([] without one), each once (entries at
    different latent sizes may share a label)."""
    return list(dict.fromkeys(m["label"] for m in info.get("study", {}).get("methods", [])))


def ordered_frame(records: list[dict[str, Any]], results_dir: Path, info: dict[str, Any] | None = None
                  ) -> pd.DataFrame:
    """:func:`records_frame`, methods in the study's order where ``results_dir`` records it
    (``info``: its ``study.json``, when already read)."""
    frame = records_frame(records)
    if frame.empty:
        broken = scan_records(results_dir)[1]
        detail = f" ({len(broken)} unreadable: {', '.join(p.name for p in broken[:3])})" if broken else ""
        raise VaebenchError(f"no run records of the study under {Path(results_dir) / 'records'}{detail}")
    rank = {m: i for i, m in enumerate(study_order(study_info(results_dir) if info is None else info))}
    ordered = frame.sort_values(
        list(KEYS) + ["seed"], kind="stable",
        key=lambda col: col.map(lambda v: (rank.get(v, len(rank)), v)) if col.name == "method" else col
    ).reset_index(drop=True)
    ordered.attrs["columns"] = frame_columns(frame)
    return ordered


def _protocol_groups(frame: pd.DataFrame) -> pd.DataFrame:
    """Distinguish settings that differ other than by seed: a method label with two protocols
    becomes two rows (``label [protocol]``), so they are never averaged together."""
    frame = frame.copy()
    counts = frame.groupby(list(KEYS))["protocol_id"].transform("nunique")
    split = counts > 1
    frame.loc[split, "method"] = frame.loc[split, "method"] + " [" + frame.loc[split, "protocol_id"] + "]"
    return frame


def _joined_sizes(values: pd.Series) -> str:
    """Distinct counts as ``"500"`` or ``"200/500"``; "" when none."""
    return "/".join(str(int(n)) for n in sorted(set(values.dropna())))


def summary_frame(frame: pd.DataFrame, columns: tuple[Column, ...] | None = None) -> pd.DataFrame:
    """Per (dataset, latent size, method): mean and standard error over seeds of every declared
    column (the built-in ones and ``columns``, by default the frame's method-declared columns),
    the seed count, the failed seeds and their reasons, and N (test images per cell). Where some
    cell ran gap-targeted AIS (its metrics have ``bdmc_gap_target_met``), also per row the
    temperatures its cells' AIS used (``ais_temperatures_used``: "200/400" when seeds differ) and
    how many of its seeds reached the cap with the gap above the target (``gap_target_missed``)."""
    declared = frame_columns(frame) if columns is None else tuple(columns)
    frame = _protocol_groups(frame)
    keys = list(KEYS)
    metrics = [c.name for c in BUILTIN_COLUMNS + declared if c.name in frame.columns]
    ok = frame[frame["status"] == "ok"]
    rows = []
    for key, group in frame.groupby(keys, sort=False):
        good = ok.loc[ok.index.isin(group.index)]
        row = dict(zip(keys, key))
        row["n_seeds"] = len(good)
        row["failed"] = "; ".join(f"seed {s}: {e}" for s, e in zip(group.loc[group.status != "ok", "seed"],
                                                                 group.loc[group.status != "ok", "error"]))
        row["n_examples"] = "/".join(map(str, sorted({int(n) for n in good["n_examples"] if not pd.isna(n)})))
        row["n_bdmc"] = _joined_sizes(good["bdmc_examples"] if "bdmc_examples" in good else pd.Series(dtype=float))
        row["n_full"] = _joined_sizes(good["n_full"] if "n_full" in good else pd.Series(dtype=float))
        if "bdmc_gap_target_met" in frame:
            targeted = good[good["bdmc_gap_target_met"].notna()]
            row["ais_temperatures_used"] = _joined_sizes(targeted["ais_temperatures"])
            row["gap_target_missed"] = int((targeted["bdmc_gap_target_met"] == 0).sum())
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
    summary = pd.DataFrame(rows)
    summary.attrs["columns"] = declared
    return summary


def shown_in(summary: pd.DataFrame, column: Column) -> bool:
    """Whether some row of ``summary`` has ``column`` (computed, NaN or not)."""
    state = f"{column.name}_state"
    return state in summary and bool((summary[state] != "absent").any())
