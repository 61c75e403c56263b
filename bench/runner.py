"""Running cells: train, evaluate, and write one record per cell."""

from __future__ import annotations

import functools
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from vaebench.datasets import DataConfig, DataSplits, load_dataset
from vaebench.methods import Method, create_method

from .checkpoint import save_config
from .device import resolve_device, seed_everything
from .evaluation import evaluate
from .records import environment, read_record, record_path, write_record
from .study import RunConfig, Study
from .training import train

CHECKPOINTS = "checkpoints"


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
        record.update(status="ok", metrics=metrics, history=result.history,
                      timings={"train_seconds": result.seconds, "eval_seconds": metrics.pop("eval_seconds"),
                               "train_steps": result.steps, "resumed_from_epoch": result.resumed_from_epoch})
    except Exception as exc:  # noqa: BLE001 - one cell's failure must not stop the study
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                      traceback=traceback.format_exc())
    record["wall_seconds"] = time.perf_counter() - tic
    record["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_record(results_dir, record)
    return record


def finished(results_dir: Path, run: RunConfig) -> bool:
    record = read_record(record_path(results_dir, run.cell_id))
    return record is not None and record.get("status") == "ok"


def run_study(study: Study, results_dir: Path, *, device: str | None = "auto", force: bool = False,
              progress: bool = True) -> list[dict[str, Any]]:
    """Run every cell of ``study`` not already finished in ``results_dir``; return all their records."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    torch.set_float32_matmul_precision("high")
    records = []
    for run in study.cells():
        if not force and finished(results_dir, run):
            records.append(read_record(record_path(results_dir, run.cell_id)))
            print(f"skip    {run.cell_id} (finished)")
            continue
        record = run_cell(run, results_dir, device=device, progress=progress)
        summary = record["error"] if record["status"] == "failed" else _summary(record)
        print(f"{record['status']:<7} {run.cell_id}  {summary}", flush=True)
        records.append(record)
    return records


def _summary(record: dict[str, Any]) -> str:
    m = record["metrics"]
    parts = [f"{k}={m[k]:.2f}" for k in ("log_likelihood_ais", "bdmc_gap", "log_likelihood_is", "elbo") if k in m]
    return " ".join(parts + [f"train {record['timings']['train_seconds']:.0f}s"])
