"""A preset's training time per row: ms per step, each as a multiple of the first row's, s per
epoch and the hours its epochs take.

Every row of a study (a preset name or a TOML file), that is each method label at each of its
latent sizes on each data set, is built as a run builds its cells (seeds cost the same, so the
first seed stands for all), with the study's architecture, optimizer and ``[train] compile``
setting. Each row takes ``--warmup`` training steps (compilation happens there) on the cell's
own training batches, then ``--repeats`` rounds over the rows, taken in turn, each timing
``--steps`` more per row: on a shared machine the load varies, and the best of rounds
interleaved this way is the fairest comparison between rows (the load average is printed).
One validation pass is timed per row as the training loop runs it (the logged objective, and
the unweighted bound too when early stopping watches it and the objective is weighted). It
prints milliseconds per step and their ratio to the first row's, seconds per validation pass,
seconds per epoch (steps per epoch × step + validation) and the hours that given epoch counts
would take (``--epochs``, default the study's budget), in wall-clock time and in this
process's CPU time (with one torch thread, about the wall time on a core of its own: on a busy
machine the wall time measures the other processes too). Evaluation, checkpoints and data
loading are not timed.

    python -m vaebench.benchmarks.preset_timing STUDY [--threads 1] [--steps 200] [--warmup 20]
        [--repeats 1] [--only LABEL ...] [--eager] [--epochs 151 2000] [--device auto|cpu|cuda]

Not a test: the numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from typing import Any

import torch

from vaebench.compiled_step import compiled_update
from vaebench.datasets import TrainBatches, load_dataset
from vaebench.device import resolve_device
from vaebench.errors import run_command
from vaebench.metrics import batched_mean
from vaebench.records import device_description
from vaebench.runner import build_method
from vaebench.study import RunConfig, load_study

from .matmul import add_device_option, synchronize


class Row:
    """One row's model, compiled or eager update and training batches, built once and timed in rounds."""

    def __init__(self, run: RunConfig, device: torch.device) -> None:
        self.run, self.device = run, device
        data = load_dataset(run.dataset, run.data)
        train_x, self.valid_x = data.train.to(device), data.valid.to(device)
        torch.manual_seed(run.seed)
        self.method = build_method(run, data).to(device)
        self.method.init_from_data(train_x)
        self.method.configure_optimizers()
        self.update = compiled_update(self.method, run.train.compile)
        self.batches = TrainBatches(train_x, run.train.batch_size,
                                    dynamic=run.data.train_binarization == "dynamic", seed=run.seed,
                                    shuffle=run.train.shuffle)
        self._stream = iter(())

    def _next_batch(self) -> torch.Tensor:
        for batch in self._stream:
            return batch
        self._stream = iter(self.batches)  # a new pass over the training set
        return next(self._stream)

    def steps(self, n: int) -> tuple[float, float, dict[str, float]]:
        """(wall s, CPU s per step, the mean of each loss) over ``n`` training steps."""
        self.method.train()
        synchronize(self.device)
        tic, cpu = time.perf_counter(), time.process_time()
        totals: dict[str, torch.Tensor] = {}
        for _ in range(n):
            for name, value in self.update(self._next_batch()).items():
                totals[name] = totals.get(name, 0) + value.detach()
        means = {name: float(total) / max(n, 1) for name, total in totals.items()}  # the one read-back
        synchronize(self.device)
        return (time.perf_counter() - tic) / max(n, 1), (time.process_time() - cpu) / max(n, 1), means

    def validation(self) -> tuple[float, float]:
        """(wall s, CPU s) of one validation pass as training runs it."""
        run, method = self.run, self.method
        method.eval()
        tic, cpu = time.perf_counter(), time.process_time()
        batched_mean(method.objective, self.valid_x, run.train.valid_batch_size)
        if run.train.early_stopping_patience and method.stopping_objective_name != method.objective_name:
            batched_mean(method.stopping_objective, self.valid_x, run.train.valid_batch_size)
        synchronize(self.device)
        return time.perf_counter() - tic, time.process_time() - cpu


def study_rows(study, only: list[str] | None = None) -> list[RunConfig]:
    """The first cell (seed) of each row, in the order of the study's methods and each method's latent
    sizes; with ``only``, those labels' rows after the study's first row, which every row is measured
    against."""
    order = {(spec.label, z): (i, j) for i, spec in enumerate(study.methods)
             for j, z in enumerate(study.method_latent_dims(spec))}
    rows: dict[tuple[str, str, int], RunConfig] = {}
    for run in study.cells():
        rows.setdefault((run.label, run.dataset, run.latent_dim), run)
    cells = sorted(rows.values(), key=lambda run: (study.datasets.index(run.dataset),
                                                   order[(run.label, run.latent_dim)]))
    if only:
        cells = cells[:1] + [run for run in cells[1:] if run.label in only]
    return cells


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Time every row of the study; print the device first, then each row; return the rows."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study", help="a preset name or a study TOML file")
    add_device_option(parser)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--steps", type=int, default=200, help="timed training steps per row and round")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps first (compilation happens here)")
    parser.add_argument("--repeats", type=int, default=1, help="rounds over the rows, taken in turn; best kept")
    parser.add_argument("--only", nargs="+", default=None, metavar="LABEL",
                        help="time only these method labels (the first row is still the yardstick)")
    parser.add_argument("--eager", action="store_true", help="time the steps eagerly, whatever [train] compile says")
    parser.add_argument("--epochs", type=int, nargs="*", default=None,
                        help="epoch counts to give hours for (default: the study's epoch budget)")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    study = load_study(args.study)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    print(f"device {device_description(device)} ({device.type}), {torch.get_num_threads()} torch thread(s), "
          f"load average {load} on {os.cpu_count()} cores; study {study.name}, {args.steps} timed steps after "
          f"{args.warmup}, best of {args.repeats} round(s){', eager' if args.eager else ''}", flush=True)
    rows = []
    for run in study_rows(study, args.only):
        if args.eager:
            run = dataclasses.replace(run, train=dataclasses.replace(run.train, compile=False))
        row = Row(run, device)
        row.steps(args.warmup)
        rows.append(row)
    best: list[tuple[float, float, dict[str, float]]] = [(float("inf"), float("inf"), {})] * len(rows)
    for _ in range(args.repeats):
        for i, row in enumerate(rows):
            best[i] = min(best[i], row.steps(args.steps), key=lambda timed: timed[0])
    results = []
    for row, (step, step_cpu, losses) in zip(rows, best):
        run = row.run
        valid, valid_cpu = row.validation()
        n = len(row.batches)
        timing = {"label": run.label, "dataset": run.dataset, "latent_dim": run.latent_dim,
                  "step": step, "step_cpu": step_cpu, "relative": step / best[0][0], "valid": valid,
                  "valid_cpu": valid_cpu, "steps_per_epoch": n, "epoch": n * step + valid,
                  "epoch_cpu": n * step_cpu + valid_cpu, "losses": losses}
        epochs = args.epochs or ([run.train.epochs] if run.train.epochs else [])
        print(f"{run.label} z={run.latent_dim} ({run.dataset}): {step * 1e3:.2f} ms/step, "
              f"{timing['relative']:.2f}× the first row (compile = {run.train.compile!r}); mean losses "
              + "  ".join(f"{name} {value:.2f}" for name, value in losses.items()), flush=True)
        for kind, suffix in (("wall", ""), ("CPU", "_cpu")):
            hours = ", ".join(f"{e:,} epochs {e * timing['epoch' + suffix] / 3600:.1f} h" for e in epochs)
            print(f"  {kind} time: {timing['step' + suffix] * 1e3:.2f} ms/step, validation "
                  f"{timing['valid' + suffix]:.2f} s, {timing['epoch' + suffix]:.1f} s/epoch of {n} steps; {hours}",
                  flush=True)
        results.append(timing)
    return results


if __name__ == "__main__":
    sys.exit(run_command(lambda: main() and 0))
