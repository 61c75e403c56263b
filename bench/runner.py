"""Running cells: train, evaluate, and write one record per cell."""

from __future__ import annotations

import contextlib
import functools
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from joblib import Parallel, delayed, parallel_config
from tqdm.auto import tqdm

from vaebench.datasets import DataConfig, DataSplits, load_dataset
from vaebench.methods import Method, create_method

from .checkpoint import save_config
from .config import require
from .device import resolve_device, seed_everything
from .evaluation import evaluate
from .images import image_summary
from .records import environment, read_record, record_path, write_record
from .study import RunConfig, Study, import_plugins
from .training import train

CHECKPOINTS = "checkpoints"
FIGURES = "figures"


@functools.lru_cache(maxsize=4)
def _cached_dataset(name: str, config: DataConfig) -> DataSplits:
    return load_dataset(name, config)


def build_method(run: RunConfig, data: DataSplits) -> Method:
    return create_method(run.method, run.method_config, data_shape=data.image_shape,
                         latent_dim=run.latent_dim, architecture=run.architecture)


def run_cell(run: RunConfig, results_dir: Path, *, device: str | None = "auto",
             progress: bool = True) -> dict[str, Any]:
    """Train and evaluate one cell and write its record; a failure is recorded, not raised."""
    results_dir = Path(results_dir)
    cell_id = run.cell_id
    dev = resolve_device(device)
    record: dict[str, Any] = {"cell_id": cell_id, "config": run.to_dict(), "device": str(dev),
                              "environment": environment()}
    checkpoint_dir = results_dir / CHECKPOINTS / cell_id
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    save_config(checkpoint_dir, run.to_dict())
    tic = time.perf_counter()
    try:
        seed_everything(run.seed)
        data = _cached_dataset(run.dataset, run.data)
        train_data = DataSplits(data.name, data.train.to(dev), data.valid.to(dev), data.test.to(dev),
                                data.image_shape, data.binary)
        method = build_method(run, data).to(dev)
        dynamic = run.data.train_binarization == "dynamic" and not data.binary
        result = train(method, train_data, run.train, seed=run.seed, dynamic_binarization=dynamic,
                       checkpoint_dir=checkpoint_dir, progress=progress, description=cell_id)
        metrics = evaluate(method, train_data.test, run.eval, progress=progress, description=f"eval {cell_id}")
        if run.eval.quadrature and run.latent_dim == 2:
            from .figures import plot_toy_posteriors  # matplotlib only where a figure is drawn

            figure = plot_toy_posteriors(method, train_data.test, results_dir / FIGURES / f"{cell_id}.png",
                                         title=run.label)
            record["figure"] = str(figure.relative_to(results_dir))
        images = image_summary(method, train_data.test, data.image_shape, seed=run.seed)
        record.update(status="ok", metrics=metrics, history=result.history, images=images,
                      timings={"train_seconds": result.seconds, "eval_seconds": metrics.pop("eval_seconds"),
                               "train_steps": result.steps, "resumed_from_epoch": result.resumed_from_epoch})
    except Exception as exc:  # noqa: BLE001 - one cell's failure must not stop the study
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                      traceback=traceback.format_exc())
    record["wall_seconds"] = time.perf_counter() - tic
    record["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_record(results_dir, record)
    return record


def finished_record(results_dir: Path, run: RunConfig) -> dict[str, Any] | None:
    """``run``'s record if it is valid and has status ok, else None (a corrupt record does not count)."""
    record = read_record(record_path(results_dir, run.cell_id))
    return record if record is not None and record.get("status") == "ok" else None


def _run_in_worker(run: RunConfig, results_dir: Path, device: str | None, threads: int,
                   plugins: tuple[str, ...]) -> dict[str, Any]:
    """One cell in a joblib or dask worker: plugins imported, torch's threads capped."""
    torch.set_num_threads(threads)
    torch.set_float32_matmul_precision("high")
    import_plugins(plugins)
    return run_cell(run, results_dir, device=device, progress=False)


@dataclass(frozen=True)
class Execution:
    """How a study's cells are executed.

    ``jobs``: cells run at once (loky processes; 1 runs in this process). ``backend``:
    ``loky`` on this machine, or ``dask`` on the dask.distributed cluster at ``scheduler``.
    ``threads``: torch threads per cell (default: the cores divided among the jobs).
    """

    jobs: int = 1
    backend: str = "loky"
    scheduler: str | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        require(self.jobs >= 1, f"--jobs must be at least 1, got {self.jobs}")
        require(self.backend in ("loky", "dask"), f"unknown backend {self.backend!r}; use loky or dask")
        require(self.backend != "dask" or bool(self.scheduler), "--backend dask needs --scheduler ADDRESS")
        require(self.threads is None or self.threads >= 1, f"--threads must be at least 1, got {self.threads}")

    def plan(self) -> tuple[int, int]:
        """(jobs, threads per job) such that jobs × threads never exceeds this machine's cores."""
        if self.backend == "dask":
            return self.jobs, self.threads or 1
        cores = os.cpu_count() or 1
        jobs = min(self.jobs, cores)
        return jobs, min(self.threads or cores // jobs, cores // jobs) or 1


def run_study(study: Study, results_dir: Path, *, device: str | None = "auto", force: bool = False,
              progress: bool = True, execution: Execution | None = None,
              echo: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run every cell of ``study`` not already finished in ``results_dir``; return every cell's record.

    Finished cells (valid records with status ok) are skipped unless ``force``; a cell
    interrupted mid-training resumes from its checkpoint. Each finished cell prints one
    line as it completes; a failed cell is recorded and the others go on.
    """
    execution = execution or Execution()
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    import_plugins(study.plugins)
    torch.set_float32_matmul_precision("high")
    for dataset in study.datasets:  # a missing data set stops the study before any cell runs
        _cached_dataset(dataset, study.data)
    cells = study.cells()
    records: dict[str, dict[str, Any]] = {}
    todo = []
    for run in cells:
        record = None if force else finished_record(results_dir, run)
        if record is None:
            todo.append(run)
        else:
            records[run.cell_id] = record
    if len(todo) < len(cells):
        echo(f"skipping {len(cells) - len(todo)} finished cells (--force recomputes them)")
    jobs, threads = execution.plan()
    tic = time.perf_counter()
    bar = tqdm(total=len(todo), desc=f"study {study.name}", unit="cell",
               disable=None if progress and todo else True, dynamic_ncols=True)
    ran: list[dict[str, Any]] = []

    def finish(record: dict[str, Any]) -> None:
        ran.append(record)
        records[record["cell_id"]] = record
        detail = record["error"] if record["status"] == "failed" else _summary(record)
        bar.write(f"[{len(ran)}/{len(todo)}] {record['status']:<6} {record['cell_id']}  {detail}")
        bar.update(1)

    try:
        if jobs == 1 and execution.backend == "loky":
            torch.set_num_threads(threads)
            for run in todo:
                finish(run_cell(run, results_dir, device=device, progress=progress))
        else:
            tasks = (delayed(_run_in_worker)(run, results_dir, device, threads, study.plugins) for run in todo)
            with _backend(execution, jobs):
                for record in Parallel(return_as="generator_unordered")(tasks):
                    finish(record)
    finally:
        bar.close()
    failed = sum(r["status"] != "ok" for r in ran)
    echo(f"study {study.name}: {len(ran) - failed} ok, {failed} failed, {len(cells) - len(todo)} skipped "
         f"in {time.perf_counter() - tic:.0f}s ({jobs} jobs × {threads} threads, {execution.backend})")
    return [records[run.cell_id] for run in cells if run.cell_id in records]


@contextlib.contextmanager
def _backend(execution: Execution, jobs: int):
    if execution.backend == "dask":
        from dask.distributed import Client

        with Client(execution.scheduler) as client, parallel_config(backend="dask", n_jobs=-1):
            client.wait_for_workers(1, timeout=60)
            yield
    else:
        with parallel_config(backend="loky", n_jobs=jobs):
            yield


def _summary(record: dict[str, Any]) -> str:
    m = record["metrics"]
    parts = [f"{k}={m[k]:.2f}" for k in ("log_likelihood_ais", "bdmc_gap", "log_likelihood_is", "elbo") if k in m]
    return " ".join(parts + [f"train {record['timings']['train_seconds']:.0f}s"])
