"""A posterior-approximation study: its preset, its cells, and running them into records.

A study names targets, methods (with their options) and seeds. Each target first gets its
reference (``<target>-reference``: the exact grid for a 2-D target, two independent NUTS runs
otherwise) and its noise floors; then every (seed, target, method) cell fits q, draws from it
and measures it against the reference. One strict-JSON record per cell with the draws beside it
(``records/<cell>.npz``), written atomically; a finished cell is skipped on a rerun.
"""

from __future__ import annotations

import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from vaebench.device import seed_everything
from vaebench.errors import ConfigError
from vaebench.records import (device_description, environment, load_records, now, read_values, record_path,
                              write_record, write_values)

from .approximations import FITTERS
from .approximations.base import Fit
from .metrics import QUANTILE_LEVELS, energy_distance, marginal_quantiles, quantile_errors
from .reference import convergence, grid_reference, nuts_reference
from .targets import TARGETS, Target

#: draws of q kept beside each record for the figures
FIGURE_DRAWS = 2000


@dataclass(frozen=True)
class PosteriorStudy:
    """``name``; ``seeds``; ``targets``: names in :data:`~vaebench.posterior.targets.TARGETS`;
    ``methods``: name → options, in the preset's order; ``draws``: draws of each q (and of each
    reference side) that the metrics use; ``elbo_draws``: draws of the Monte Carlo ELBO;
    ``nuts``: chains, warmup and draws of each NUTS run; ``grid_points``: the grid's side."""

    name: str
    seeds: tuple[int, ...]
    targets: tuple[str, ...]
    methods: dict[str, dict[str, Any]]
    draws: int = 4000
    elbo_draws: int = 20000
    nuts: tuple[int, int, int] = (4, 500, 1000)
    grid_points: int = 1024


def preset_names() -> list[str]:
    return sorted(p.name.removesuffix(".toml") for p in resources.files("vaebench.posterior.presets").iterdir()
                  if p.name.endswith(".toml"))


def load_posterior_study(source: str | Path) -> PosteriorStudy:
    """A study from a TOML file or a preset name; a one-line :class:`ConfigError` for anything unusable."""
    path = Path(source)
    if path.is_file():
        text, default_name = path.read_text(), path.stem
    elif str(source) in preset_names():
        text = resources.files("vaebench.posterior.presets").joinpath(f"{source}.toml").read_text()
        default_name = str(source)
    else:
        raise ConfigError(f"{source!r} is neither a study file nor a posterior preset; presets: "
                          f"{', '.join(preset_names())}")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML ({exc})") from None
    known = {"name", "seeds", "targets", "methods", "draws", "elbo_draws", "reference"}
    if unknown := sorted(set(raw) - known):
        raise ConfigError(f"{source}: unknown key {', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}")
    targets = tuple(raw.get("targets", ()))
    if not targets or (bad := [t for t in targets if t not in TARGETS]):
        raise ConfigError(f"{source}: targets must name some of {', '.join(TARGETS)}"
                          + (f"; unknown: {', '.join(map(str, bad))}" if targets else ""))
    methods = raw.get("methods", {})
    if not methods or (bad := [m for m in methods if m not in FITTERS]):
        raise ConfigError(f"{source}: [methods.NAME] tables must name some of {', '.join(FITTERS)}"
                          + (f"; unknown: {', '.join(bad)}" if methods else ""))
    seeds = raw.get("seeds", [0])
    if not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise ConfigError(f"{source}: seeds must be a list of non-negative integers, got {seeds!r}")
    reference = raw.get("reference", {})
    nuts = reference.get("nuts", {})
    study = PosteriorStudy(name=raw.get("name", default_name), seeds=tuple(seeds), targets=targets,
                           methods={m: dict(o) for m, o in methods.items()}, draws=raw.get("draws", 4000),
                           elbo_draws=raw.get("elbo_draws", 20000),
                           nuts=(nuts.get("chains", 4), nuts.get("warmup", 500), nuts.get("draws", 1000)),
                           grid_points=reference.get("grid", {}).get("points", 1024))
    for label, value in (("draws", study.draws), ("elbo_draws", study.elbo_draws),
                         ("reference.grid.points", study.grid_points), *zip(("chains", "warmup", "draws"), study.nuts)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{source}: {label} must be a positive integer, got {value!r}")
    return study


def reference_id(target: str) -> str:
    return f"{target}-reference"


def cell_id(target: str, method: str, seed: int) -> str:
    return f"{target}-{method}-s{seed}"


def _provenance(threads: int, command: str | None) -> dict[str, Any]:
    return {"environment": environment(), "device": device_description("cpu"), "threads": threads,
            "finished": now(), "command": command}


def _floors(reference: torch.Tensor, second: torch.Tensor, reference_quantiles: torch.Tensor) -> dict[str, Any]:
    errors = quantile_errors(second, reference_quantiles)
    return {"energy_distance_floor": energy_distance(second, reference),
            "quantile_error_floor": errors.tolist(), "mean_quantile_error_floor": errors.mean().item()}


def run_reference(study: PosteriorStudy, target: Target, out: Path, threads: int, command: str | None) -> dict[str, Any]:
    """The reference of ``target``, its quantiles and its noise floors, as a record."""
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(0)
    if target.box is not None:
        grid = grid_reference(target, study.grid_points)
        reference, second = grid.sample(study.draws, generator), grid.sample(study.draws, generator)
        quantiles = grid.quantiles()
        kind = "grid"
        metrics: dict[str, Any] = {"log_normaliser_grid": grid.log_normaliser,
                                   "log_normaliser_exact": target.log_normaliser() if target.log_normaliser else None}
    else:
        chains, warmup, draws = study.nuts
        runs = [nuts_reference(target, chains=chains, warmup=warmup, draws=draws, seed=seed) for seed in (0, 1)]
        # the posterior is symmetric under (τ, η) → (−τ, −η) (see targets); NUTS crosses τ = 0
        # rarely, so each draw is reflected with probability 1/2, an exact move of the posterior,
        # and the diagnostics are given before and after it
        flipped = []
        for run in runs:
            signs = torch.where(torch.rand(run.draws.shape[:2], generator=generator, dtype=torch.float64) < 0.5,
                                -1.0, 1.0).unsqueeze(-1)
            flip = torch.ones(target.dim, dtype=torch.float64)
            flip[0] = 0.0
            factor = 1 + (signs - 1) * flip  # μ unchanged, τ and η times the sign
            flipped.append(run.draws * factor)
        metrics = {f"nuts_run{i + 1}": {"raw": run.diagnostics, "reflected": convergence(f.numpy()),
                                        "seconds": run.seconds} for i, (run, f) in enumerate(zip(runs, flipped))}
        reference = _subsample(flipped[0].reshape(-1, target.dim), study.draws, generator)
        second = _subsample(flipped[1].reshape(-1, target.dim), study.draws, generator)
        quantiles = marginal_quantiles(flipped[0].reshape(-1, target.dim))
        kind = "nuts"
    metrics.update(_floors(reference, second, quantiles))
    metrics["quantiles"] = quantiles.tolist()
    rid = reference_id(target.name)
    record = {"cell_id": rid, "status": "ok", "kind": "reference",
              "config": {"dataset": target.name, "latent_dim": target.dim, "label": kind, "seed": 0,
                         "parameters": list(target.parameters), "quantile_levels": list(QUANTILE_LEVELS)},
              "metrics": metrics, "seconds": time.perf_counter() - start,
              "per_example": write_values(out, rid, {"reference": reference.float().numpy(),
                                                     "second": second.float().numpy()}),
              "provenance": _provenance(threads, command)}
    write_record(out, record)
    return record


def _subsample(draws: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` of ``draws``, all of them in order when there are exactly ``n``, else a random choice."""
    if draws.shape[0] == n:
        return draws
    return draws[torch.randperm(draws.shape[0], generator=generator)[:n]] if draws.shape[0] > n \
        else draws[torch.randint(draws.shape[0], (n,), generator=generator)]


@torch.no_grad()
def measure(fit: Fit, target: Target, reference: dict[str, Any], reference_draws: torch.Tensor, draws: int,
            elbo_draws: int) -> tuple[dict[str, Any], torch.Tensor]:
    """The fitted q's metrics against the reference, and its draws."""
    q = fit.approximation
    z = q.sample(draws).double()
    errors = quantile_errors(z, torch.tensor(reference["metrics"]["quantiles"], dtype=torch.float64))
    metrics: dict[str, Any] = {
        "quantile_errors": errors.tolist(), "mean_quantile_error": errors.mean().item(),
        "max_quantile_error": errors.max().item(), "energy_distance": energy_distance(z, reference_draws),
        "energy_distance_floor": reference["metrics"]["energy_distance_floor"], **fit.own}
    if q.has_density:
        zs, log_q = q.sample_and_log_prob(elbo_draws)
        terms = (target.log_density(zs) - log_q).double()
        metrics["elbo"] = terms.mean().item()
        metrics["elbo_sem"] = (terms.std() / terms.numel() ** 0.5).item()
        log_z = reference["metrics"].get("log_normaliser_grid")
        if log_z is not None:  # KL(q ‖ p) = log Z − ELBO, log Z by quadrature
            metrics["kl"] = log_z - metrics["elbo"]
    return metrics, z


def run_cell(study: PosteriorStudy, target: Target, method: str, seed: int, reference: dict[str, Any],
             reference_draws: torch.Tensor, out: Path, threads: int, command: str | None) -> dict[str, Any]:
    """Fit ``method`` to ``target`` with ``seed``, measure it and write its record."""
    seed_everything(seed)
    fit = FITTERS[method](target, study.methods[method])
    torch.manual_seed(10_000 + seed)  # the evaluation draws: independent of the training draws
    metrics, z = measure(fit, target, reference, reference_draws, study.draws, study.elbo_draws)
    cid = cell_id(target.name, method, seed)
    record = {"cell_id": cid, "status": "ok", "kind": "approximation",
              "config": {"dataset": target.name, "latent_dim": target.dim, "label": method, "seed": seed,
                         "options": study.methods[method]},
              "metrics": metrics, "history": fit.history, "seconds": fit.seconds,
              "per_example": write_values(out, cid, {"draws": z[:FIGURE_DRAWS].float().numpy()}),
              "provenance": _provenance(threads, command)}
    write_record(out, record)
    return record


def run_posterior_study(study: PosteriorStudy, out: Path, *, threads: int = 1, command: str | None = None,
                        echo: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Every reference, then every (seed, target, method) cell not yet in ``out``; returns all records."""
    torch.set_num_threads(threads)
    environment()  # the code's commit and its dirty flag as the run starts, not as its first record is written
    done = {r["cell_id"]: r for r in load_records(out) if r.get("status") == "ok"}
    references: dict[str, tuple[dict[str, Any], torch.Tensor]] = {}
    for name in study.targets:
        target = TARGETS[name]
        rid = reference_id(name)
        if rid not in done:
            start = time.perf_counter()
            done[rid] = run_reference(study, target, out, threads, command)
            echo(f"{rid}: {time.perf_counter() - start:.0f} s")
        values = read_values(out, done[rid])
        if values is None:
            raise ConfigError(f"{record_path(out, rid)}: its draws are missing or altered; delete the record to redo it")
        references[name] = (done[rid], torch.from_numpy(values["reference"]).double())
    for seed in study.seeds:
        for name in study.targets:
            for method in study.methods:
                cid = cell_id(name, method, seed)
                if cid in done:
                    continue
                record = run_cell(study, TARGETS[name], method, seed, *references[name], out, threads, command)
                done[cid] = record
                m = record["metrics"]
                echo(f"{cid}: {record['seconds']:.0f} s, quantile error {m['mean_quantile_error']:.3f}, energy "
                     f"distance {m['energy_distance']:.4f} (floor {m['energy_distance_floor']:.4f})"
                     + (f", ELBO {m['elbo']:.3f}" if "elbo" in m else ""))
    return [done[k] for k in sorted(done)]

