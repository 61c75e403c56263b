"""Writing a report: the table files, and a README that says in prose what every table shows,
embeds the figures and names the code, packages and machines that produced the records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ..columns import POSTERIOR_COLUMNS, TABLE_COLUMNS
from ..manifest import split_records, study_info
from ..records import PerExampleValues, scan_records
from ..text import plural
from .comparisons import published_comparison, reference_comparison
from .formatting import (
    FLAG,
    column_legend,
    flag_legend,
    gap_target_legend,
    latex_table,
    markdown_table,
    method_table,
    paired_legend,
    paired_table,
    posterior_table,
    rows_with,
    spread_note,
)
from .frames import frame_columns, ordered_frame, study_order, summary_frame
from .statistics import estimator_gaps, missed_gap_target, paired_differences


def load_study_records(results_dir: Path
                       ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[Path], dict[str, Any]]:
    """(records of the study's current cells, stale records, unreadable record files, ``study.json``)."""
    records, broken = scan_records(results_dir)
    info = study_info(results_dir)
    current, stale = split_records(records, info)
    return current, stale, broken, info


def write_table(results_dir: Path, frame: pd.DataFrame | None = None) -> dict[str, Path]:
    """Write ``table.md``, ``table.csv`` and ``table.tex`` for the study's records under ``results_dir``
    (or for ``frame``, an :func:`~vaebench.report.frames.ordered_frame` of them already loaded)."""
    results_dir = Path(results_dir)
    if frame is None:
        current, _, _, info = load_study_records(results_dir)
        frame = ordered_frame(current, results_dir, info)
    summary = summary_frame(frame)
    paths = {"md": results_dir / "table.md", "csv": results_dir / "table.csv", "tex": results_dir / "table.tex"}
    apart = ["BDMC gap (N BDMC images simulated from the model)"]
    if summary["n_full"].astype(bool).any():
        apart.append("the full test set (N full)")
    caption = (f"N test images per cell, the same images for every column but {' and '.join(apart)}; "
               f"{spread_note(summary)}.")
    if missed_gap_target(summary).any():
        caption += f" {FLAG} beside a BDMC gap: its target was not met within the cap on AIS temperatures."
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
        out["log_likelihood_ais"] = (f" ({evaluation.get('ais_chains')} chains × {evaluation.get('ais_leapfrog')} "
                                     f"leapfrog steps; {_ais_temperatures(evaluation)})")
    draws = max(evaluation.get(k) or 0 for k in ("is_samples", "elbo_samples", "moment_samples"))
    if draws:  # one set of draws per image serves the ELBO, reconstruction and the posterior's moments
        for key in ("elbo", "elbo_upper_bound", "recon_bernoulli_nll", "recon_mse", "recon_pixel_error"):
            out[key] = f" ({draws:,} draws per image)"
        if evaluation.get("active_units"):
            out["active_units"] = f" (where means are not exact: {draws:,} draws per image)"
    return out


def _ais_temperatures(evaluation: dict[str, Any]) -> str:
    """Where AIS starts and at how many temperatures, as the study's ``[eval]`` sets them."""
    refine = evaluation.get("ais_refine_steps") or 0
    initial = evaluation.get("ais_initial", "auto")
    if initial == "posterior":
        start = "from the Gaussian fitted to the posterior's draws" + (
            f" after {refine} HMC transitions on p(z|x), for every method" if refine else ", for every method")
        starts = f"{evaluation['ais_steps']} temperatures {start}"
        first = f"{evaluation['ais_steps']} ({start})"
    elif initial == "prior":
        starts = f"{evaluation.get('ais_prior_steps') or evaluation['ais_steps']} temperatures from the prior"
        first = f"{evaluation.get('ais_prior_steps') or evaluation['ais_steps']} (from the prior)"
    else:
        prior = evaluation.get("ais_prior_steps") or evaluation["ais_steps"]
        starts = f"{evaluation['ais_steps']} temperatures from the posterior's Gaussian, {prior} from the prior"
        first = f"{evaluation['ais_steps']} (from the posterior's Gaussian) or {prior} (from the prior)"
    if evaluation.get("bdmc_gap_target") is None:
        return starts
    return (f"temperatures doubled from {first} up to {evaluation.get('ais_max_steps'):,} until the BDMC gap "
            f"was at most {evaluation['bdmc_gap_target']:g} nats: see AIS temperatures")


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
    set beside this one. Each per-example file is read once.
    """
    from .. import figures  # matplotlib is imported only when figures are drawn

    results_dir = Path(results_dir)
    current, stale, broken, info = load_study_records(results_dir)
    frame = ordered_frame(current, results_dir, info)
    paths = write_table(results_dir, frame)
    summary = summary_frame(frame)
    declared = frame_columns(frame)
    values = PerExampleValues(results_dir)
    ok = [r for r in current if r.get("status") == "ok"]
    failed = [r for r in current if r.get("status") != "ok"]
    methods = study_order(info)
    paired = paired_differences(ok, results_dir, reference=methods[0] if methods else None, order=methods,
                                values=values)
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
    lines += ["Columns:", ""] + column_legend(summary, TABLE_COLUMNS, _estimator_settings(study.get("eval") or {}))
    if "n_bdmc" in summary and summary["n_bdmc"].astype(bool).any():
        lines += ["- **N BDMC**: images simulated from each model for the BDMC gap"]
    evaluation = study.get("eval") or {}
    lines += gap_target_legend(summary, evaluation.get("bdmc_gap_target"), evaluation.get("ais_max_steps"))
    lines += [""]
    diagnostics = posterior_table(summary)
    if diagnostics:
        lines += ["## Posterior diagnostics", "",
                  f"On the same N test images as the table; {spread_note(rows_with(summary, POSTERIOR_COLUMNS))}.",
                  "", diagnostics, ""]
        lines += column_legend(summary, POSTERIOR_COLUMNS, _estimator_settings(study.get("eval") or {})) + [""]
    own = method_table(summary, declared)
    if own:
        lines += ["## Method columns", "",
                  "Per-example numbers that methods declare for themselves, for the rows of the methods that "
                  f"declare them, on the same N test images as the table; "
                  f"{spread_note(rows_with(summary, declared))}.", "", own, ""]
        lines += column_legend(summary, declared, declared=True) + flag_legend(summary, declared) + [""]
    if not paired.empty:
        paths["paired"] = results_dir / "paired.md"
        legend = paired_legend(paired)
        paths["paired"].write_text(paired_table(paired) + "\n" + "".join(f"\n{line}" for line in legend)
                                   + ("\n" if legend else ""))
        ref = paired["reference"].iloc[0]
        lines += [f"## Paired differences from {ref}", "",
                  "Each method minus the reference on the same test images and seeds: the mean over seeds of "
                  "the per-seed mean difference, its standard error over seeds, and the standard error from "
                  "the per-image differences (paired).", "", paired_table(paired), ""]
        lines += legend + ([""] if legend else [])
    gaps = estimator_gaps(ok, results_dir, order=methods, values=values)
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
