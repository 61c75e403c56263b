"""Running cells: train (or resume), evaluate, and write one record per cell.

A cell's training identity (:attr:`RunConfig.train_id`) names its checkpoint and record;
its evaluation settings have an id of their own (:attr:`RunConfig.eval_id`), so changing
them re-evaluates the final checkpoint instead of training again. A results folder is
locked while a study runs in it.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import shlex
import shutil
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from joblib import Parallel, delayed, parallel_config
from tqdm.auto import tqdm

from vaebench.datasets import DataConfig, DataSplits, load_dataset
from vaebench.datasets.storage import sha256_file
from vaebench.methods import Method, create_method

from .checkpoint import CHECKPOINT, save_config
from .config import require
from .device import resolve_device, seed_everything
from .errors import ConfigError
from .evaluation import evaluate
from .images import image_summary
from .records import device_description, environment, now, read_record, record_path, write_record, write_values
from .study import RunConfig, Study, import_plugins
from .text import plural
from .training import train

CHECKPOINTS = "checkpoints"
FIGURES = "figures"
LOCK = ".lock"


@functools.lru_cache(maxsize=4)
def _cached_dataset(name: str, config: DataConfig) -> DataSplits:
    return load_dataset(name, config)


def build_method(run: RunConfig, data: DataSplits) -> Method:
    """The cell's model, from the config its study resolved (or, read back from a record, from its dict)."""
    config = run.resolved_config if run.resolved_config is not None else run.method_config
    return create_method(run.method, config, data_shape=data.image_shape,
                         latent_dim=run.latent_dim, architecture=run.architecture)


def _provenance(device: torch.device | None) -> dict[str, Any]:
    return {**environment(), "device": device_description(device) if device is not None else None,
            "threads": torch.get_num_threads(), "started_at": now()}


def run_cell(run: RunConfig, results_dir: Path, *, device: str | None = "auto", progress: bool = True,
             retrain: bool = False, eval_threads: int | None = None) -> dict[str, Any]:
    """Train (or resume) and evaluate one cell, then write its record; a failure is recorded, not raised.

    ``retrain`` discards the cell's checkpoint first. Without it a finished checkpoint is
    evaluated as it is, so a changed evaluation never trains again. ``eval_threads``: torch
    threads for the evaluation (default: as many as training had); training's count is restored after.
    """
    results_dir = Path(results_dir)
    record: dict[str, Any] = {"cell_id": run.cell_id, "train_id": run.train_id, "eval_id": run.eval_id,
                              "protocol_id": run.protocol_id, "config": run.to_dict(), "notes": []}
    tic = time.perf_counter()
    dev = None
    try:
        dev = resolve_device(device)
        record["provenance"] = _provenance(dev)
        checkpoint_dir = results_dir / CHECKPOINTS / run.cell_id
        if retrain:
            shutil.rmtree(checkpoint_dir, ignore_errors=True)
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        save_config(checkpoint_dir, run.training_dict())
        seed_everything(run.seed)
        data = _cached_dataset(run.dataset, run.data)
        on_device = DataSplits(data.name, data.train.to(dev), data.valid.to(dev), data.test.to(dev),
                               data.image_shape, data.binary)
        method = build_method(run, data).to(dev)
        dynamic = run.data.train_binarization == "dynamic" and not data.binary
        p = record["provenance"]
        trainer = {"commit": p.get("commit"), "dirty": p.get("dirty"), "torch": p["packages"].get("torch"),
                   "device": p.get("device"), "threads": p.get("threads"), "started_at": p.get("started_at")}
        result = train(method, on_device, run.train, seed=run.seed, dynamic_binarization=dynamic,
                       checkpoint_dir=checkpoint_dir, progress=progress, description=run.cell_id,
                       provenance=trainer)
        p["training_segments"] = result.segments
        record["notes"] += result.notes
        if result.early_stopping is not None:  # the best epoch, whose model is the one evaluated
            record["early_stopping"] = result.early_stopping
        record["checkpoint_sha256"] = sha256_file(checkpoint_dir / CHECKPOINT)
        training_threads = torch.get_num_threads()
        torch.set_num_threads(eval_threads or training_threads)
        p["eval_threads"] = torch.get_num_threads()
        try:
            evaluation = evaluate(method, on_device.test, run.eval, progress=progress,
                                  description=f"eval {run.cell_id}")
        finally:
            torch.set_num_threads(training_threads)
        arrays = {"indices": evaluation.indices, **evaluation.per_example}
        full = getattr(evaluation, "per_example_full", None) or {}
        if full:
            arrays.update({"indices_full": evaluation.indices_full, **full})
        record["per_example"] = write_values(results_dir, run.cell_id, arrays)
        if evaluation.bdmc_search:  # gap-targeted AIS: every schedule tried, and whether the last met the target
            record["bdmc_search"] = evaluation.bdmc_search
            if not evaluation.summary.get("bdmc_gap_target_met"):
                last = evaluation.bdmc_search[-1]
                record["notes"].append(
                    f"BDMC gap target not met: {last['bdmc_gap']:.3f} nats at the cap of "
                    f"{last['temperatures']:,.0f} temperatures, above the target of {run.eval.bdmc_gap_target:g}")
        # the method's own columns travel with the record, so the report needs no method to show them
        record["columns"] = [column.to_dict() for column in evaluation.columns]
        if evaluation.active_units is not None:  # A_u per unit: one number per unit, not per image
            record["active_units"] = evaluation.active_units.to_dict()
        if run.eval.quadrature and run.latent_dim == 2:
            from .figures import plot_toy_posteriors  # matplotlib only where a figure is drawn

            figure = plot_toy_posteriors(method, on_device.test, results_dir / FIGURES / f"{run.cell_id}.png",
                                         title=run.label)
            record["figure"] = str(figure.relative_to(results_dir))
        record.update(status="ok", metrics=evaluation.summary, n_examples=len(evaluation.indices),
                      history=result.history,
                      images=image_summary(method, on_device.test, data.image_shape, seed=run.seed),
                      timings={"train_seconds": result.seconds, "eval_seconds": evaluation.seconds["total"],
                               "eval_parts": evaluation.seconds, "train_steps": result.steps,
                               "resumed_from_epoch": result.resumed_from_epoch})
    except Exception as exc:  # noqa: BLE001 - one cell's failure must not stop the study
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                      traceback=portable_traceback(traceback.format_exc()))
        record.setdefault("provenance", _provenance(dev))
    record["provenance"]["finished_at"] = now()
    record["wall_seconds"] = time.perf_counter() - tic
    try:
        write_record(results_dir, record)
    except OSError as exc:  # a full disk or an unwritable folder fails this cell, not the study
        record.update(status="failed", error=f"cannot write the record: {type(exc).__name__}: {exc}")
    return record


def plan_cell(results_dir: Path, run: RunConfig, *, force: bool = False, reevaluate: bool = False
              ) -> tuple[str, dict[str, Any] | None]:
    """What a run does with ``run`` and the record that decided it (read once): ``skip`` (a finished
    record with the study's evaluation), ``evaluate`` (a trained model, new evaluation) or ``train``."""
    if force:
        return "train", None
    record = read_record(record_path(results_dir, run.cell_id))
    if record is None or record.get("status") != "ok":
        return "train", record
    if record.get("eval_id") == run.eval_id and not reevaluate:
        return "skip", record
    if (Path(results_dir) / CHECKPOINTS / run.cell_id / CHECKPOINT).exists():
        return "evaluate", record
    return "train", record


def _run_in_worker(run: RunConfig, results_dir: Path, device: str | None, threads: int,
                   plugins: tuple[str, ...], retrain: bool, eval_threads: int | None = None) -> dict[str, Any]:
    """One cell in a joblib or dask worker: plugins imported (once per worker), torch's threads capped."""
    torch.set_num_threads(threads)
    torch.set_float32_matmul_precision("high")
    import_plugins(plugins)
    return run_cell(run, results_dir, device=device, progress=False, retrain=retrain, eval_threads=eval_threads)


@dataclass(frozen=True)
class Execution:
    """How a study's cells are executed.

    ``jobs``: cells run at once (loky processes; 1 runs in this process). ``backend``:
    ``loky`` on this machine, or ``dask`` on the dask.distributed cluster at ``scheduler``.
    ``threads``: torch threads per cell (default: the cores divided among the jobs).
    ``eval_threads``: torch threads for each cell's evaluation (default: ``threads``); small-batch
    training is fastest on one thread, while evaluation's large batches use more.
    """

    jobs: int = 1
    backend: str = "loky"
    scheduler: str | None = None
    threads: int | None = None
    eval_threads: int | None = None

    def __post_init__(self) -> None:
        require(self.jobs >= 1, f"--jobs must be at least 1, got {self.jobs}")
        require(self.backend in ("loky", "dask"), f"unknown backend {self.backend!r}; use loky or dask")
        require(self.backend != "dask" or bool(self.scheduler), "--backend dask needs --scheduler ADDRESS")
        require(self.threads is None or self.threads >= 1, f"--threads must be at least 1, got {self.threads}")
        require(self.eval_threads is None or self.eval_threads >= 1,
                f"--eval-threads must be at least 1, got {self.eval_threads}")

    def plan(self) -> tuple[int, int]:
        """(jobs, threads per job) such that jobs × threads never exceeds this machine's cores."""
        if self.backend == "dask":
            return self.jobs, self.threads or 1
        cores = os.cpu_count() or 1
        jobs = min(self.jobs, cores)
        return jobs, min(self.threads or cores // jobs, cores // jobs) or 1

    def eval_plan(self) -> int:
        """Torch threads per cell's evaluation, within the same cap as :meth:`plan`'s."""
        jobs, threads = self.plan()
        if not self.eval_threads:
            return threads
        if self.backend == "dask":
            return self.eval_threads
        return min(self.eval_threads, (os.cpu_count() or 1) // jobs) or 1


@contextlib.contextmanager
def results_lock(results_dir: Path) -> Iterator[None]:
    """Hold ``results_dir/.lock`` so that two runs never write into one folder at once."""
    results_dir = Path(results_dir)
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
        handle = open(results_dir / LOCK, "a+")
    except OSError as exc:
        raise ConfigError(f"--out {results_dir}: cannot be used as a results folder ({exc.strerror})") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise ConfigError(f"{results_dir} is in use by another vaebench run ({holder}); "
                              "wait for it or choose another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


def typed_path(path: str | Path) -> str:
    """``path`` as its user would type it, naming no folder of this machine: an absolute path
    inside the current folder relative to it, one inside the home folder from ``~``; a relative
    path (or a preset's name) as given. Quoted for a POSIX shell where it needs it."""
    text = str(path)
    if os.path.isabs(text):
        normal = Path(os.path.normpath(text))
        for base, prefix in ((Path.cwd(), None), (Path.home(), "~")):
            if base.parent != base and normal.is_relative_to(base):  # a base of / would take every path
                rest = str(normal.relative_to(base))
                if prefix is None:
                    return shlex.quote(rest)
                return prefix if rest == "." else f"{prefix}/{shlex.quote(rest)}"
    return shlex.quote(text)


def portable_traceback(text: str) -> str:
    """A traceback naming no folder of this machine: the package's files from its parent folder
    (``bench/runner.py`` in a checkout), others inside the home folder from ``~``."""
    package_parent = str(Path(__file__).resolve().parent.parent) + os.sep
    return text.replace(package_parent, "").replace(str(Path.home()) + os.sep, "~" + os.sep)


def command_line(study: str | Path, out: str | Path | None = None) -> str:
    """The ``vaebench run`` command that a results folder records, free of this machine's absolute paths."""
    return " ".join(["vaebench", "run", typed_path(study)] + (["--out", typed_path(out)] if out is not None else []))


def _remove_stale_temporaries(results_dir: Path) -> None:
    """Half-written files of a killed run (atomic writes leave ``.name.*.tmp`` behind)."""
    for path in Path(results_dir).glob("**/.*.tmp"):
        path.unlink(missing_ok=True)


def run_study(study: Study, results_dir: Path, *, device: str | None = "auto", force: bool = False,
              reevaluate: bool = False, progress: bool = True, execution: Execution | None = None,
              echo: Callable[[str], None] = print, command: str | None = None) -> list[dict[str, Any]]:
    """Run every cell of ``study`` not already finished in ``results_dir``; return every cell's record.

    Finished cells (valid records with status ok and the study's evaluation settings) are
    skipped. A cell whose evaluation settings changed is re-evaluated from its final
    checkpoint; ``reevaluate`` does that for every cell; ``force`` trains every cell from
    scratch. A cell interrupted mid-training resumes from its checkpoint. Each finished
    cell prints one line; a failed cell is recorded and the others go on. Ctrl-C stops the
    study, keeps every finished cell, and says how to resume. ``command``: the command line
    to record in ``study.json`` (which also records the study's cells for the report; default
    :func:`command_line` of the study's name and ``results_dir``).
    """
    from .manifest import write_study_file

    execution = execution or Execution()
    results_dir = Path(results_dir)
    with results_lock(results_dir):
        _remove_stale_temporaries(results_dir)
        write_study_file(results_dir, study, command or command_line(study.name, results_dir))
        return _run_locked(study, results_dir, device=device, force=force, reevaluate=reevaluate,
                           progress=progress, execution=execution, echo=echo)


def _run_locked(study: Study, results_dir: Path, *, device: str | None, force: bool, reevaluate: bool,
                progress: bool, execution: Execution, echo: Callable[[str], None]) -> list[dict[str, Any]]:
    # the study's plugins were imported when it was parsed; workers import them in _run_in_worker
    torch.set_float32_matmul_precision("high")
    resolve_device(device)  # CUDA asked for but absent stops the study before any cell runs
    for dataset in study.datasets:  # so does a missing data set
        _cached_dataset(dataset, study.data)
    cells = study.cells()
    records: dict[str, dict[str, Any]] = {}
    todo: list[tuple[RunConfig, bool]] = []
    actions = {"skip": 0, "evaluate": 0, "train": 0}
    for run in cells:
        action, record = plan_cell(results_dir, run, force=force, reevaluate=reevaluate)
        actions[action] += 1
        if action == "skip":
            records[run.cell_id] = record
        else:
            todo.append((run, force))
    if actions["skip"]:
        echo(f"skipping {plural(actions['skip'], 'finished cell')} (--reevaluate evaluates them again, "
             "--force retrains)")
    if actions["evaluate"]:
        echo(f"re-evaluating {plural(actions['evaluate'], 'trained cell')} with the study's evaluation settings")
    jobs, threads = execution.plan()
    eval_threads = execution.eval_plan()
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
            for run, retrain in todo:
                finish(run_cell(run, results_dir, device=device, progress=progress, retrain=retrain,
                                eval_threads=eval_threads))
        else:
            tasks = (delayed(_run_in_worker)(run, results_dir, device, threads, study.plugins, retrain, eval_threads)
                     for run, retrain in todo)
            with _backend(execution, jobs):
                for record in Parallel(return_as="generator_unordered")(tasks):
                    finish(record)
    except KeyboardInterrupt:
        bar.close()
        echo(f"interrupted: {len(ran)} of {len(todo)} cells finished and are kept; "
             "run the same command again to resume (interrupted cells continue from their last checkpoint)")
        raise
    finally:
        bar.close()
    failed = sum(r["status"] != "ok" for r in ran)
    echo(f"study {study.name}: {len(ran) - failed} ok, {failed} failed, {actions['skip']} skipped "
         f"in {time.perf_counter() - tic:.0f}s ({plural(jobs, 'job')} × {plural(threads, 'thread')}"
         f"{f' ({eval_threads} for evaluation)' if eval_threads != threads else ''}, {execution.backend})")
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
    parts = [f"{k}={m[k]:.3f}" for k in ("exact_log_likelihood", "log_likelihood_ais", "bdmc_gap", "log_likelihood_is", "elbo")
             if k in m]
    return " ".join(parts + [f"train {record['timings']['train_seconds']:.0f}s",
                             f"eval {record['timings']['eval_seconds']:.0f}s"])
