"""Results in Python: a results folder as pandas frames, for analyses of one's own.

    from vaebench import results

    res = results.load("results/quick")
    res.summary()             # the table's numbers: one row per data set, latent size and method
    res.tidy()                # one row per cell and metric: mean and standard error over images
    res.per_example_frame()   # one row per cell, metric and test image
    res.paired("iwae-k5", "vae", "log_likelihood_ais")   # iwae-k5 − vae on the same images and seeds

Built on the report's own functions (:mod:`vaebench.report`), so the numbers are the report's.
Only the cells of the study as it is now enter; stale records and unreadable files are listed
apart. Each per-example file is read once per :class:`Results`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .columns import BUILTIN_COLUMNS, Column
from .errors import VaebenchError
from .records import PerExampleValues
from .report.frames import method_columns, ordered_frame, summary_frame
from .report.readme import load_study_records
from .report.statistics import paired_differences, per_image

#: the keys of a cell in the long frames
CELL_KEYS = ("cell_id", "method", "dataset", "latent_dim", "seed")
#: per-example arrays that are test indices, not metrics
INDEX_ARRAYS = ("indices", "indices_full")


@dataclass
class Results:
    """The records of one results folder (see :func:`load`).

    ``records``: the study's current cells, finished and failed, as read from their JSON files;
    ``stale``: records of other settings (not in any frame); ``unreadable``: record files that
    are not valid records; ``info``: the folder's ``study.json`` ({} without one).
    """

    results_dir: Path
    records: list[dict[str, Any]]
    stale: list[dict[str, Any]] = field(default_factory=list)
    unreadable: list[Path] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    _values: PerExampleValues = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.results_dir = Path(self.results_dir)
        self._values = PerExampleValues(self.results_dir)

    @property
    def finished(self) -> list[dict[str, Any]]:
        """The records of the cells that finished (status ok)."""
        return [r for r in self.records if r.get("status") == "ok"]

    @property
    def methods(self) -> list[str]:
        """The method labels, in the study's order."""
        return list(dict.fromkeys(self.frame()["method"]))

    @property
    def columns(self) -> tuple[Column, ...]:
        """The declarations of the columns the records hold: the built-in ones some cell has, then
        those the records' methods declare."""
        present = {k for r in self.finished for k in [*r.get("metrics", {}), *r.get("timings", {})]}
        return tuple(c for c in BUILTIN_COLUMNS if c.name in present) + method_columns(self.records)

    def frame(self) -> pd.DataFrame:
        """One row per cell (finished or failed), in the study's method order: its keys, seed,
        status, cell id and each metric's mean over its test images (``<metric>__sem``: the standard
        error over images; ``<metric>__has``: computed for that cell)."""
        return ordered_frame(self.records, self.results_dir, self.info)

    def summary(self) -> pd.DataFrame:
        """The table's frame: per data set, latent size and method, ``<metric>_mean``, ``_se`` (over
        seeds, over images with one seed) and ``_state`` ("ok", "nan", "absent") of every column."""
        return summary_frame(self.frame())

    def tidy(self) -> pd.DataFrame:
        """One row per finished cell and metric (the record's metrics and timings): the cell's keys,
        ``metric``, ``value`` (mean over the cell's test images) and ``sem`` (its standard error over
        them, NaN where the record has none)."""
        rows = []
        for r in self.finished:
            metrics = r.get("metrics", {})
            numbers = {k: v for k, v in metrics.items() if not k.endswith("_sem")}
            numbers.update({k: v for k, v in r.get("timings", {}).items() if isinstance(v, (int, float))})
            for metric, value in numbers.items():
                rows.append({**self._cell(r), "metric": metric, "value": value,
                             "sem": metrics.get(f"{metric}_sem", np.nan)})
        return pd.DataFrame(rows, columns=[*CELL_KEYS, "metric", "value", "sem"])

    def record(self, cell_id: str) -> dict[str, Any]:
        """The record of one cell of the study."""
        for r in self.records:
            if r.get("cell_id") == cell_id:
                return r
        raise VaebenchError(f"{self.results_dir}: no cell {cell_id!r} in the study's records")

    def per_example(self, cell_id: str) -> pd.DataFrame:
        """One cell's per-example values, long: the cell's keys, ``test_index``, ``metric``, ``value``
        (full-test-set metrics on their own test indices)."""
        record = self.record(cell_id)
        arrays = self._values(record)
        if arrays is None:
            raise VaebenchError(f"{self.results_dir}: cell {cell_id!r} has no readable per-example values")
        parts = []
        for metric in sorted(set(arrays) - set(INDEX_ARRAYS)):
            pair = per_image(arrays, metric)
            if pair is None:
                continue
            indices, values = pair
            parts.append(pd.DataFrame({"test_index": indices.astype(np.int64), "metric": metric,
                                       "value": values.astype(np.float64)}))
        frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
            {"test_index": pd.Series(dtype=np.int64), "metric": pd.Series(dtype=object),
             "value": pd.Series(dtype=np.float64)})
        for key, value in reversed(self._cell(record).items()):
            frame.insert(0, key, value)
        return frame

    def per_example_frame(self) -> pd.DataFrame:
        """:meth:`per_example` of every finished cell that has per-example values, in one frame."""
        order = {cell: i for i, cell in enumerate(self.frame()["cell_id"])}  # the study's method order
        finished = sorted(self.finished, key=lambda r: order.get(r["cell_id"], len(order)))
        parts = [self.per_example(r["cell_id"]) for r in finished if self._values(r) is not None]
        if not parts:
            return pd.DataFrame(columns=[*CELL_KEYS, "test_index", "metric", "value"])
        return pd.concat(parts, ignore_index=True)

    def paired(self, method_a: str, method_b: str, metric: str) -> pd.DataFrame:
        """``method_a`` − ``method_b`` in ``metric`` on the same test images and seeds, per data set
        and latent size: ``difference`` (mean over seeds of the per-seed mean difference),
        ``se_over_seeds`` (NaN with one seed), ``se_over_images`` (from the per-image differences),
        ``seeds`` and ``N`` (the fewest shared images of a seed), as in the report's paired table."""
        known = set(self.frame()["method"])
        for method in (method_a, method_b):
            if method not in known:
                raise VaebenchError(f"{self.results_dir}: no method {method!r}; its methods are "
                                    f"{', '.join(sorted(known))}")
        chosen = [r for r in self.records if r["config"]["label"] in (method_a, method_b)]
        paired = paired_differences(chosen, self.results_dir, reference=method_b, order=[method_b, method_a],
                                    values=self._values, metrics=(metric,))
        columns = ["dataset", "latent_dim", "method", "reference", "metric", "seeds", "N", "difference", "se_over_seeds",
                   "se_over_images"]
        if paired.empty:
            return pd.DataFrame(columns=columns)
        return paired[paired["method"] == method_a][columns].reset_index(drop=True)

    @staticmethod
    def _cell(record: dict[str, Any]) -> dict[str, Any]:
        cfg = record["config"]
        return {"cell_id": record["cell_id"], "method": cfg["label"], "dataset": cfg["dataset"],
                "latent_dim": cfg["latent_dim"], "seed": cfg["seed"]}


def load(results_dir: str | Path) -> Results:
    """The study's records in ``results_dir`` (a folder ``vaebench run`` wrote, or a committed one
    under ``results/``) as a :class:`Results`; an error when it holds no record of the study."""
    results_dir = Path(results_dir)
    if not (results_dir / "records").is_dir():
        raise VaebenchError(f"{results_dir}: no records folder, not a results folder")
    current, stale, unreadable, info = load_study_records(results_dir)
    results = Results(results_dir, current, stale, unreadable, info)
    results.frame()  # refuses a folder without records of the study, as the report does
    return results


__all__ = ["Results", "load"]
