"""The table, figures and README of a posterior study, from its records alone."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from vaebench.records import load_records, read_values

from .figures import contour_figure, curves_figure, stamp
from .targets import TARGETS

#: an optional hand-written section that the README carries (findings, read from the numbers)
FINDINGS = "findings.md"


def _mean_sd(values: list[float]) -> str:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"


COLUMNS = ("target", "method", "seeds", "quantile error, mean", "quantile error, worst", "energy distance",
           "ELBO", "KL(q‖p)", "ELBO, adversary's estimate (not a bound)", "adversary accuracy", "fit (s)")


def summary_rows(records: list[dict[str, Any]], targets: list[str], methods: list[str]) -> list[list[str]]:
    """One row per target and method (± is the standard deviation over seeds), after a row for the
    reference's own noise floor (a second, independent reference against the first)."""
    rows = []
    for target in targets:
        reference = next((r for r in records if r["cell_id"] == f"{target}-reference"), None)
        if reference is not None:
            m = reference["metrics"]
            second = "second NUTS run" if reference["config"]["label"] == "nuts" else "second grid draw"
            rows.append([target, f"floor: {second}", "—", f"{m['mean_quantile_error_floor']:.3f}",
                         f"{np.max(m['quantile_error_floor']):.3f}", f"{m['energy_distance_floor']:.4f}",
                         "—", "—", "—", "—", f"{reference['seconds']:.0f}"])
        for method in methods:
            cells = [r for r in records if r.get("kind") == "approximation" and r["config"]["dataset"] == target
                     and r["config"]["label"] == method]
            if not cells:
                continue

            def column(key: str) -> list[float]:
                return [c["metrics"].get(key) for c in cells]

            energy = column("energy_distance")
            rows.append([target, method, str(len(cells)), _mean_sd(column("mean_quantile_error")),
                         _mean_sd(column("max_quantile_error")),
                         f"{np.mean(energy):.4f} ± {np.std(energy, ddof=1):.4f}" if len(energy) > 1 else f"{energy[0]:.4f}",
                         _mean_sd(column("elbo")), _mean_sd(column("kl")),
                         _mean_sd(column("elbo_adversary_estimate_not_a_bound")),
                         _mean_sd(column("adversary_accuracy")), f"{np.mean([c['seconds'] for c in cells]):.0f}"])
    return rows


def parameter_rows(records: list[dict[str, Any]], target: str, methods: list[str]) -> tuple[list[str], list[list[str]]]:
    """Per parameter: the quantile error averaged over the five levels and the seeds, per method, after the floor."""
    reference = next((r for r in records if r["cell_id"] == f"{target}-reference"), None)
    if reference is None:
        return [], []
    header = ["method"] + list(reference["config"]["parameters"])
    rows = [["floor"] + [f"{v:.3f}" for v in np.mean(reference["metrics"]["quantile_error_floor"], axis=0)]]
    for method in methods:
        cells = [r for r in records if r.get("kind") == "approximation" and r["config"]["dataset"] == target
                 and r["config"]["label"] == method]
        if cells:
            errors = np.mean([np.mean(c["metrics"]["quantile_errors"], axis=0) for c in cells], axis=0)
            rows.append([method] + [f"{v:.3f}" for v in errors])
    return header, rows


def markdown(header: list[str] | tuple[str, ...], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


def _reference_lines(records: list[dict[str, Any]], targets: list[str]) -> list[str]:
    lines = []
    for target in targets:
        reference = next((r for r in records if r["cell_id"] == f"{target}-reference"), None)
        if reference is None:
            continue
        m = reference["metrics"]
        if reference["config"]["label"] == "grid":
            exact = m.get("log_normaliser_exact")
            lines.append(f"- **{target}**: exact grid, log Z = {m['log_normaliser_grid']:.6f} by the midpoint rule"
                         + (f" against {exact:.6f} exactly" if exact is not None else "")
                         + "; reference draws from the grid (a cell by its mass, uniform within it).")
        else:
            for run in ("nuts_run1", "nuts_run2"):
                d = m[run]
                lines.append(f"- **{target}**, NUTS {run[-4:]} ({d['seconds']:.0f} s): as sampled, largest R-hat "
                             f"{d['raw']['max_rhat']:.3f}, smallest bulk / tail ESS {d['raw']['min_ess_bulk']:.0f} / "
                             f"{d['raw']['min_ess_tail']:.0f}, {d['raw']['divergences']} divergent transitions; after the "
                             f"(τ, η) → (−τ, −η) reflection: R-hat {d['reflected']['max_rhat']:.3f}, ESS "
                             f"{d['reflected']['min_ess_bulk']:.0f} / {d['reflected']['min_ess_tail']:.0f}.")
    return lines


def _provenance_lines(records: list[dict[str, Any]]) -> list[str]:
    env = [(r.get("provenance") or {}).get("environment") or {} for r in records]
    packages = sorted({f"{k} {v}" for e in env for k, v in (e.get("packages") or {}).items() if v})
    commands = sorted({(r.get("provenance") or {}).get("command") or "?" for r in records})
    return [f"- {stamp(records)}", f"- packages: {', '.join(packages)}",
            f"- Python {', '.join(sorted({e.get('python', '?') for e in env}))}",
            f"- command: {'; '.join(f'`{c}`' for c in commands)}"]


def write_posterior_report(out: Path, study: Any) -> dict[str, Path]:
    """table.md, table.csv, the figures and README.md in ``out``, from its records."""
    out = Path(out)
    records = [r for r in load_records(out) if r.get("status") == "ok"]
    targets = [t for t in study.targets if any(r["config"]["dataset"] == t for r in records)]
    methods = list(study.methods)
    rows = summary_rows(records, targets, methods)
    paths = {"table": out / "table.md", "csv": out / "table.csv", "readme": out / "README.md"}
    paths["table"].write_text(markdown(COLUMNS, rows))
    buffer = io.StringIO()
    csv.writer(buffer).writerows([list(COLUMNS)] + rows)
    paths["csv"].write_text(buffer.getvalue())
    caption = stamp(records)
    figures = []
    for name in targets:
        target = TARGETS[name]
        reference = next((r for r in records if r["cell_id"] == f"{name}-reference"), None)
        cells = [r for r in records if r.get("kind") == "approximation" and r["config"]["dataset"] == name]
        if reference is None or not cells:
            continue
        reference_draws = read_values(out, reference)["reference"]
        panels = []
        for method in methods:
            cell = next((r for r in cells if r["config"]["label"] == method and r["config"]["seed"] == min(study.seeds)),
                        None)
            values = read_values(out, cell) if cell else None
            if values is not None:
                panels.append((method, values["draws"]))
        figures.append(contour_figure(target, reference_draws, panels, out / "figures" / f"{name}-contours.png",
                                      f"seed {min(study.seeds)}; {caption}"))
        figures.append(curves_figure(target, cells, methods, out / "figures" / f"{name}-training.png", caption))
    lines = [f"# {study.name}: approximating a posterior from its unnormalised density", "",
             "Non-amortised AVB and AVB-AC as the authors' `notebooks/Stan-example.ipynb` fits them, beside "
             "mean-field Gaussian VI and a normalising flow, on the notebook's eight-schools model and its two 2-D "
             "densities. References: NUTS (pyro-ppl) for eight schools, the exact density on a grid for the 2-D "
             "targets. Regenerate with `vaebench posterior " + study.name + " --out " + out.as_posix()
             + " --report-only`.", ""]
    findings = out / FINDINGS
    if findings.is_file():
        lines += [findings.read_text().rstrip(), ""]
    lines += ["## Table", "",
              "Quantile error: |quantile of q − the reference's| at 5, 25, 50, 75 and 95 %, averaged over levels and "
              "parameters (mean) or their largest (worst), in the parameters' units. Energy distance: squared, "
              "V-statistic, between draws of q and the reference's (each side "
              f"{study.draws:,} draws); the floor row is the same statistic between two independent references, "
              f"so a q indistinguishable from the posterior sits near it. ELBO: Monte Carlo over {study.elbo_draws:,} "
              "draws of q (eight schools: a lower bound on log p(y); 2-D: on log Z of the unnormalised density); "
              "KL(q‖p) = log Z − ELBO with log Z by quadrature. AVB has no density: its ELBO column is empty and "
              "the adversary's own estimate, no bound, stands beside it. ± is the standard deviation over seeds.", "",
              markdown(COLUMNS, rows)]
    for name in targets:
        header, prow = parameter_rows(records, name, methods)
        if header and len(header) > 3:
            lines += [f"### {name}: quantile error per parameter (mean over levels and seeds)", "", markdown(header, prow)]
    lines += ["## References", ""] + _reference_lines(records, targets) + [""]
    lines += ["## Figures", ""] + [f"![{p.stem}](figures/{p.name})" for p in figures] + [""]
    lines += ["## Provenance", ""] + _provenance_lines(records) + [""]
    paths["readme"].write_text("\n".join(lines))
    return paths
