"""Milliseconds per training step of every row of a study, and each as a multiple of the first row's.

Each method of the study is built at each of its latent sizes with its own networks (as its
cells are) and takes ``--steps`` optimizer updates (``method.update``, every optimizer of the
method, the adversary's extra steps included) on batches of the study's batch size from the
training split of its first data set, binarized afresh as training does, after ``--warmup``
untimed updates. Rows run one after another in one process, ``--repeats`` rounds of them in
turn, and each row keeps its best round: on a shared machine the load varies, and the best of
rounds interleaved this way is the fairest comparison between rows (the load average is
printed). Only the step is timed: no validation, checkpoints or data loading, so a cell's
wall time is this times its steps plus those.

    python -m vaebench.benchmarks.step_time STUDY [--threads 1] [--steps 300] [--warmup 20]
        [--repeats 3] [--only LABEL ...] [--device auto|cpu|cuda]

STUDY is a preset name or a study file. Not a test: the numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from vaebench.datasets import load_dataset
from vaebench.device import resolve_device
from vaebench.errors import run_command
from vaebench.methods import create_method
from vaebench.records import device_description
from vaebench.study import load_study

from .matmul import add_device_option, synchronize


def time_steps(method: torch.nn.Module, train: torch.Tensor, batch_size: int, steps: int, warmup: int,
               device: torch.device) -> tuple[float, dict[str, float]]:
    """(seconds per update over ``steps`` timed updates, the mean of each loss over them)."""
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randint(len(train), (batch_size,), generator=generator) for _ in range(warmup + steps)]
    method.train()
    totals: dict[str, torch.Tensor] = {}
    for i, idx in enumerate(batches):
        if i == warmup:
            synchronize(device)
            tic = time.perf_counter()
            totals = {}
        losses = method.update(torch.bernoulli(train[idx]))
        for name, value in losses.items():
            totals[name] = totals.get(name, 0) + value.detach()
    means = {name: float(total) / steps for name, total in totals.items()}  # the one read-back
    synchronize(device)
    return (time.perf_counter() - tic) / steps, means


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    """Time every row of the study; print one line per row (the device first) and return them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", help="a preset name or a study file")
    add_device_option(parser)
    parser.add_argument("--steps", type=int, default=300, help="timed updates per row")
    parser.add_argument("--warmup", type=int, default=20, help="untimed updates before them")
    parser.add_argument("--repeats", type=int, default=3, help="rounds over the rows, taken in turn; best kept")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--only", nargs="+", default=None, metavar="LABEL",
                        help="time only these method labels (the first row is still the yardstick)")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    study = load_study(args.study)
    data = load_dataset(study.datasets[0], study.data)
    train = data.train.to(device)
    batch_size = study.train.batch_size
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"device {device_description(device)} ({device}), threads {torch.get_num_threads()}, load average "
          f"{load} on {os.cpu_count()} cores; study {study.name}, {study.datasets[0]}, batch {batch_size}, "
          f"{args.steps} timed updates after {args.warmup}")
    models = []
    for spec in study.methods:
        for latent_dim in study.method_latent_dims(spec):
            if args.only and spec.label not in args.only and models:  # the first row is the yardstick
                continue
            torch.manual_seed(0)
            method = create_method(spec.name, spec.config, data_shape=data.image_shape, latent_dim=latent_dim,
                                   architecture=study.method_architecture(spec)).to(device)
            method.init_from_data(train)
            models.append((spec.label, latent_dim, method))
    best: list[tuple[float, dict[str, float]]] = [(float("inf"), {})] * len(models)
    for _ in range(args.repeats):
        for i, (_, _, method) in enumerate(models):
            best[i] = min(best[i], time_steps(method, train, batch_size, args.steps, args.warmup, device),
                          key=lambda timed: timed[0])
    rows: list[dict[str, object]] = []
    for (label, latent_dim, _), (seconds, losses) in zip(models, best):
        relative = seconds / best[0][0]
        shown = "  ".join(f"{name} {value:.2f}" for name, value in losses.items())
        print(f"{label:<20} z={latent_dim:<4} {seconds * 1e3:8.2f} ms/step  {relative:6.2f}× the first row  "
              f"(mean losses of that round: {shown})")
        rows.append({"label": label, "latent_dim": latent_dim, "seconds": seconds, "relative": relative,
                     "losses": losses})
    return rows


if __name__ == "__main__":
    raise SystemExit(run_command(main))
