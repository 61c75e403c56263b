"""Tables for people: mean ± SE cells, the main table in Markdown and LaTeX, the posterior and
method-column tables, paired differences, and the legends that explain their columns.

Every table is built from column declarations (:class:`~vaebench.columns.Column`): its heading,
its description, and the bound it should respect, which puts a ⚠ beside a row that breaks it.
"""

from __future__ import annotations

import pandas as pd
from tabulate import tabulate

from ..columns import BUILTIN_COLUMNS, POSTERIOR_COLUMNS, TABLE_COLUMNS, Column
from .frames import KEYS, shown_in
from .statistics import falls_below

FLAG = "⚠"


def format_mean(mean: float, se: float, state: str, digits: int | None = None) -> str:
    """``mean ± se`` to ``digits`` decimals, by default a precision that suits the mean's size; "—" not
    computed, "nan" not a number."""
    if state == "absent":
        return "—"
    if state == "nan" or pd.isna(mean):
        return "nan"
    if digits is None:
        digits = 4 if abs(mean) < 1 else 3 if abs(mean) < 10 else 2
    return f"{mean:.{digits}f}" if pd.isna(se) else f"{mean:.{digits}f} ± {se:.{digits}f}"


def _shown(summary: pd.DataFrame, columns: tuple[Column, ...], latex: bool = False) -> pd.DataFrame:
    """The summary's rows with one formatted cell per shown column, then N, the seeds and failures."""
    shown = summary[list(KEYS)].copy()
    names = set()
    for column in columns:
        if not shown_in(summary, column):
            continue
        cells = [format_mean(m, s, st, column.digits) for m, s, st in
                 zip(summary[f"{column.name}_mean"], summary[f"{column.name}_se"], summary[f"{column.name}_state"])]
        cells = [c + (f" {FLAG}" if flagged and c not in ("—", "nan") else "")
                 for c, flagged in zip(cells, falls_below(summary, column))]
        heading = column.heading if column.heading not in shown else f"{column.heading} ({column.name})"
        shown[heading] = [c.replace("±", "$\\pm$").replace(FLAG, "(!)") if latex else c for c in cells]
        names.add(column.name)
    shown["N"] = summary["n_examples"]
    if "bdmc_gap" in names and summary["n_bdmc"].astype(bool).any():
        shown["N BDMC"] = summary["n_bdmc"]  # its own images, simulated from each model
    if "log_likelihood_is_full" in names and summary["n_full"].astype(bool).any():
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
    """The main table (:data:`~vaebench.columns.TABLE_COLUMNS`) in Markdown."""
    return _shown(summary, TABLE_COLUMNS).to_markdown(index=False)


def latex_table(summary: pd.DataFrame) -> str:
    """The main table in LaTeX (booktabs)."""
    return tabulate(_shown(summary, TABLE_COLUMNS, latex=True), headers="keys", tablefmt="latex_booktabs",
                    showindex=False, disable_numparse=True)


def rows_with(summary: pd.DataFrame, columns: tuple[Column, ...]) -> pd.DataFrame:
    """The summary's rows that have at least one of ``columns``."""
    states = [f"{c.name}_state" for c in columns if f"{c.name}_state" in summary]
    if not states:
        return summary.iloc[0:0]
    return summary[(summary[states] != "absent").any(axis=1)]


def _partial_table(summary: pd.DataFrame, columns: tuple[Column, ...]) -> str | None:
    rows = rows_with(summary, columns)
    if rows.empty:
        return None
    return _shown(rows, columns).drop(columns=["failed"], errors="ignore").to_markdown(index=False)


def posterior_table(summary: pd.DataFrame) -> str | None:
    """The posterior diagnostics (:data:`~vaebench.columns.POSTERIOR_COLUMNS`) of the rows that
    have them, or None."""
    return _partial_table(summary, POSTERIOR_COLUMNS)


def _bounds_of(columns: tuple[Column, ...]) -> tuple[Column, ...]:
    """The columns that ``columns`` should not fall below and that are not among them."""
    known = {c.name: c for c in BUILTIN_COLUMNS + columns}
    names = {c.name for c in columns}
    out = []
    for column in columns:
        other = column.should_not_fall_below[0] if column.should_not_fall_below else None
        if other and other not in names and other in known and known[other] not in out:
            out.append(known[other])
    return tuple(out)


def method_table(summary: pd.DataFrame, columns: tuple[Column, ...]) -> str | None:
    """The method-declared ``columns`` of the rows that have them, each beside the column it
    should not fall below (if any), or None."""
    rows = rows_with(summary, columns)
    if rows.empty:
        return None
    return _shown(rows, columns + _bounds_of(columns)).drop(columns=["failed"], errors="ignore").to_markdown(
        index=False)


def _direction(column: Column) -> str:
    return {True: "; higher is better", False: "; lower is better"}.get(column.higher_is_better, "")


def column_legend(summary: pd.DataFrame, columns: tuple[Column, ...], settings: dict[str, str] | None = None,
                  *, declared: bool = False) -> list[str]:
    """One Markdown line per shown column: its heading and description (with ``settings[name]``
    appended); a method-declared column (``declared``) also names its key and which way is better."""
    settings = settings or {}
    lines = []
    for column in columns:
        if shown_in(summary, column):
            name = f" (`{column.name}`)" if declared else ""
            lines.append(f"- **{column.heading}**{name}: {column.description}{settings.get(column.name, '')}"
                         f"{_direction(column) if declared else ''}")
    return lines


def flag_legend(summary: pd.DataFrame, columns: tuple[Column, ...]) -> list[str]:
    """What ⚠ means, one line per shown column that declares a bound it should not fall below."""
    headings = {c.name: c.heading for c in BUILTIN_COLUMNS + columns}
    lines = []
    for column in columns:
        if column.should_not_fall_below is None or not shown_in(summary, column):
            continue
        other, tolerance = column.should_not_fall_below
        lines.append(f"- {FLAG} beside **{column.heading}**: its mean lies more than {tolerance:g} below that of "
                     f"**{headings.get(other, other)}**, which bounds from below the quantity it estimates: "
                     "that row's estimate is not to be trusted")
    return lines


def paired_table(paired: pd.DataFrame) -> str:
    """Paired differences (:func:`~vaebench.report.statistics.paired_differences`) in Markdown."""
    shown = paired[["dataset", "latent_dim", "method", "reference", "metric", "seeds", "N"]].copy()
    shown["method − reference"] = [f"{d:+.2f}" for d in paired["difference"]]
    shown["± SE over seeds"] = ["" if pd.isna(s) else f"{s:.2f}" for s in paired["se_over_seeds"]]
    shown["± SE over images (paired)"] = [f"{s:.2f}" for s in paired["se_over_images"]]
    return shown.to_markdown(index=False)
