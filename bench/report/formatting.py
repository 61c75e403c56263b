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
from .statistics import falls_below, missed_gap_target, uneven_gaps

FLAG = "⚠"
#: beside a paired difference of AIS estimates whose two sides' BDMC gaps differ by more than its SE
UNEVEN = "†"


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
        flags = falls_below(summary, column)
        if column.name == "bdmc_gap":
            flags = flags | missed_gap_target(summary)
        cells = [c + (f" {FLAG}" if flagged and c not in ("—", "nan") else "") for c, flagged in zip(cells, flags)]
        heading = column.heading if column.heading not in shown else f"{column.heading} ({column.name})"
        shown[heading] = [c.replace("±", "$\\pm$").replace(FLAG, "(!)") if latex else c for c in cells]
        names.add(column.name)
    shown["N"] = summary["n_examples"]
    if "bdmc_gap" in names and summary["n_bdmc"].astype(bool).any():
        shown["N BDMC"] = summary["n_bdmc"]  # its own images, simulated from each model
    if "log_likelihood_ais" in names and gap_targeted(summary):
        shown["AIS temperatures"] = summary["ais_temperatures_used"]  # found per cell by the gap target
    if "log_likelihood_is_full" in names and summary["n_full"].astype(bool).any():
        shown["N full"] = summary["n_full"]
    shown["seeds"] = summary["n_seeds"]
    if summary["failed"].astype(bool).any():
        shown["failed"] = summary["failed"]
    return shown


def gap_targeted(summary: pd.DataFrame) -> bool:
    """Whether some row's AIS found its temperatures by a BDMC gap target."""
    return "ais_temperatures_used" in summary and bool(summary["ais_temperatures_used"].astype(bool).any())


def gap_target_legend(summary: pd.DataFrame, target: float | None, cap: int | None) -> list[str]:
    """What the AIS temperatures column and a ⚠ beside a BDMC gap mean, for a study with a gap target."""
    if not gap_targeted(summary):
        return []
    goal = f"at most {target:g} nats" if target is not None else "within the study's target"
    limit = f"the cap of {cap:,} temperatures" if cap is not None else "the study's cap on temperatures"
    lines = [f"- **AIS temperatures**: the temperatures of each cell's AIS, found on the images simulated for the "
             f"BDMC gap: doubled from the study's start until the gap was {goal}, or {limit} ('/' between "
             "seeds that needed different numbers)"]
    if missed_gap_target(summary).any():
        lines.append(f"- {FLAG} beside **BDMC gap**: in at least one seed the gap was still above the target at "
                     f"{limit}: that row's AIS is looser than the study asked for")
    return lines


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


def _has_gaps(paired: pd.DataFrame) -> bool:
    return "bdmc_gap" in paired and bool((paired["bdmc_gap"].notna() & paired["reference_bdmc_gap"].notna()).any())


def paired_table(paired: pd.DataFrame) -> str:
    """Paired differences (:func:`~vaebench.report.statistics.paired_differences`) in Markdown; where
    the sides have BDMC gaps, those too, and :data:`UNEVEN` beside a difference whose sides' gaps
    differ by more than its standard error."""
    shown = paired[["dataset", "latent_dim", "method", "reference", "metric", "seeds", "N"]].copy()
    shown["method − reference"] = [f"{d:+.2f}" + (f" {UNEVEN}" if uneven else "")
                                   for d, uneven in zip(paired["difference"], uneven_gaps(paired))]
    shown["± SE over seeds"] = ["" if pd.isna(s) else f"{s:.2f}" for s in paired["se_over_seeds"]]
    shown["± SE over images (paired)"] = [f"{s:.2f}" for s in paired["se_over_images"]]
    if _has_gaps(paired):
        shown["BDMC gaps (method / reference)"] = [
            "" if pd.isna(a) or pd.isna(b) else f"{a:.2f} / {b:.2f}"
            for a, b in zip(paired["bdmc_gap"], paired["reference_bdmc_gap"])]
    return shown.to_markdown(index=False)


def paired_legend(paired: pd.DataFrame) -> list[str]:
    """What the BDMC gaps beside paired differences and the mark :data:`UNEVEN` mean (none without gaps)."""
    if not _has_gaps(paired):
        return []
    lines = ["- **BDMC gaps (method / reference)**: each side's BDMC gap in nats (on images simulated from its "
             "own model), averaged over the paired seeds: how far each side's AIS may fall short of log p(x)"]
    if uneven_gaps(paired).any():
        lines.append(f"- {UNEVEN} beside a difference: the two sides' BDMC gaps differ by more than the difference's "
                     "standard error (over seeds; over images where there is one seed), so the two AIS estimates "
                     "are not equally tight, and part of the difference may be the estimator's, not the models'")
    return lines
