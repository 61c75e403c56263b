"""A preset's expected training time, from a short timing of each of its cells.

For every cell of a study (a preset name or a TOML file) this builds the cell's model as a run
would, with the study's architecture, optimizer and ``[train] compile`` setting, takes
``--warmup`` training steps (compilation happens there) and then times ``--steps`` more on the
cell's own training batches, and times one validation pass as the training loop runs it (the
logged objective, and the unweighted bound too when early stopping watches it and the objective
is weighted). It prints milliseconds per step, seconds per validation pass, seconds per epoch
(steps per epoch × step + validation) and the hours that given epoch counts would take
(``--epochs``, default the study's budget), in wall-clock time and in this process's CPU time
(with one torch thread, about the wall time on a core of its own: on a busy machine the wall
time measures the other processes too). Evaluation is not timed. The load average is printed.

    python -m vaebench.benchmarks.preset_timing tomczak2018 --threads 1 --steps 200 [--eager] [--epochs 151 2000]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import torch

from vaebench.compiled_step import compiled_update
from vaebench.datasets import TrainBatches, load_dataset
from vaebench.errors import run_command
from vaebench.metrics import batched_mean
from vaebench.records import device_description
from vaebench.runner import build_method
from vaebench.study import load_study

from .matmul import add_device_option, synchronize


def time_cell(run, device: torch.device, steps: int, warmup: int) -> dict[str, float]:
    """Seconds per training step and per validation pass of one cell, on ``device``."""
    data = load_dataset(run.dataset, run.data)
    train_x, valid_x = data.train.to(device), data.valid.to(device)
    torch.manual_seed(run.seed)
    method = build_method(run, data).to(device)
    method.init_from_data(train_x)
    method.configure_optimizers()
    method.train()
    update = compiled_update(method, run.train.compile)
    batches = TrainBatches(train_x, run.train.batch_size, dynamic=run.data.train_binarization == "dynamic",
                           seed=run.seed, shuffle=run.train.shuffle)

    def take(n: int) -> float:
        taken = 0
        while taken < n:
            for batch in batches:
                loss = update(batch)
                taken += 1
                if taken == n:
                    break
        synchronize(device)
        return float(next(iter(loss.values())))

    take(warmup)
    tic, cpu = time.perf_counter(), time.process_time()
    loss = take(steps)
    step_seconds = (time.perf_counter() - tic) / steps
    step_cpu = (time.process_time() - cpu) / steps

    method.eval()
    tic, cpu = time.perf_counter(), time.process_time()
    batched_mean(method.objective, valid_x, run.train.valid_batch_size)
    if run.train.early_stopping_patience and method.stopping_objective_name != method.objective_name:
        batched_mean(method.stopping_objective, valid_x, run.train.valid_batch_size)
    synchronize(device)
    valid_seconds, valid_cpu = time.perf_counter() - tic, time.process_time() - cpu
    steps_per_epoch = len(batches)
    return {"step": step_seconds, "valid": valid_seconds, "steps_per_epoch": steps_per_epoch,
            "epoch": steps_per_epoch * step_seconds + valid_seconds, "step_cpu": step_cpu, "valid_cpu": valid_cpu,
            "epoch_cpu": steps_per_epoch * step_cpu + valid_cpu, "loss": loss}


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study", help="a preset name or a study TOML file")
    add_device_option(parser)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--steps", type=int, default=200, help="timed training steps per cell")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps first (compilation happens here)")
    parser.add_argument("--eager", action="store_true", help="time the steps eagerly, whatever [train] compile says")
    parser.add_argument("--epochs", type=int, nargs="*", default=None,
                        help="epoch counts to give hours for (default: the study's epoch budget)")
    args = parser.parse_args(argv)
    from vaebench.device import resolve_device

    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    study = load_study(args.study)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    print(f"device {device_description(device)} ({device.type}), {torch.get_num_threads()} torch thread(s), "
          f"load average {load}; study {study.name}, {args.steps} timed steps after {args.warmup}"
          f"{', eager' if args.eager else ''}")
    results = {}
    for run in study.cells():
        if args.eager:
            run = dataclasses.replace(run, train=dataclasses.replace(run.train, compile=False))
        epochs = args.epochs or ([run.train.epochs] if run.train.epochs else [])
        timing = time_cell(run, device, args.steps, args.warmup)
        for kind, suffix in (("wall", ""), ("CPU", "_cpu")):
            hours = ", ".join(f"{e:,} epochs {e * timing['epoch' + suffix] / 3600:.1f} h" for e in epochs)
            print(f"  {run.label} ({kind} time): {timing['step' + suffix] * 1e3:.2f} ms/step "
                  f"(compile = {run.train.compile!r}), validation {timing['valid' + suffix]:.2f} s, "
                  f"{timing['epoch' + suffix]:.1f} s/epoch of {timing['steps_per_epoch']} steps; {hours}", flush=True)
        print(f"  {run.label}: last training loss {timing['loss']:.1f}", flush=True)
        results[run.label] = timing
    return results


if __name__ == "__main__":
    sys.exit(run_command(lambda: main() and 0))
