"""Fixed overhead of ``vaebench run``: the wall time of a one-cell study beyond training and evaluation.

Run: ``python -m vaebench.benchmarks.run_overhead [--dataset mnist] [--repeats 2]``.

It writes a one-cell study (a small VAE, one epoch on 1,000 images, a light evaluation),
runs ``python -m vaebench run`` on it in a fresh process (best of ``--repeats``; the first
run also warms the file cache), and subtracts the training and evaluation seconds that the
cell's record holds. The rest is the overhead, broken down by phase in another fresh process
that calls the same functions as the command (study loading, preflight, the runner, the
report) and times the imports they trigger. Not a test: the numbers depend on the machine
and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vaebench.errors import run_command

STUDY = """\
name = "overhead"
methods = ["vae"]
datasets = ["{dataset}"]
latent_dims = [8]
seeds = [0]
[architecture]
hidden = [64]
[data]
{subsets}
[train]
epochs = 1
batch_size = 100
[eval]
is_samples = 10
examples = {examples}
ais_steps = 10
bdmc_examples = 2
"""

#: per data set: the [data] subsets and the test images evaluated (toy4 has four)
DATA = {"mnist": ("train_subset = 1000\nvalid_subset = 100\ntest_subset = 100", 20),
        "toy4": ("train_subset = 1000", 4)}


def _record_seconds(out: Path) -> tuple[float, float]:
    """(training, evaluation) seconds of the one record in ``out``."""
    (path,) = (out / "records").glob("*.json")
    timings = json.loads(path.read_text())["timings"]
    return timings["train_seconds"], timings["eval_seconds"]


def whole_command(study: Path, repeats: int) -> dict[str, float]:
    """Best-of-``repeats`` wall time of ``vaebench run`` in a fresh process, and its record's seconds."""
    best: dict[str, float] = {"wall": float("inf")}
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "out"
            tic = time.perf_counter()
            subprocess.run([sys.executable, "-m", "vaebench", "run", str(study), "--out", str(out),
                            "--no-progress", "--threads", "1"],
                           check=True, stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - tic
            train_s, eval_s = _record_seconds(out)
        if wall < best["wall"]:
            best = {"wall": wall, "train": train_s, "eval": eval_s,
                    "overhead": wall - train_s - eval_s}
    return best


def phases(study_path: str) -> dict[str, float]:
    """Seconds of each phase of ``vaebench run``, timed in this (fresh) process."""
    times: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal tic
        now = time.perf_counter()
        times[name] = now - tic
        tic = now

    tic = time.perf_counter()
    import torch

    torch.set_num_threads(1)
    lap("import torch")
    from vaebench.datasets import raw_splits
    from vaebench.preflight import preflight
    from vaebench.runner import Execution, run_study
    from vaebench.study import load_study
    lap("import vaebench")
    study = load_study(study_path)
    lap("load the study file")
    for name in study.datasets:
        raw_splits(name)
    lap("load the data set (once per process)")
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    lap("first optimizer (torch imports torch._dynamo)")
    preflight(study, "cpu", source=study_path)
    lap("preflight (build and step every model)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        run_study(study, out, device="cpu", progress=False, execution=Execution(threads=1),
                  echo=lambda line: None)
        lap("run_study")
        train_s, eval_s = _record_seconds(out)
        times["  of which training"] = train_s
        times["  of which evaluation"] = eval_s
        times["  of which the rest"] = times["run_study"] - train_s - eval_s
        tic = time.perf_counter()
        from vaebench.report import write_report
        lap("import the report and figure libraries")
        write_report(out)
        lap("write the report (tables, figures)")
    return times


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(DATA), default="mnist")
    parser.add_argument("--repeats", type=int, default=2, help="runs of the whole command; best kept")
    parser.add_argument("--phases-of", metavar="STUDY", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args(argv)
    if args.phases_of:
        print(json.dumps(phases(args.phases_of)))
        return {}

    with tempfile.TemporaryDirectory() as tmp:
        study = Path(tmp) / "overhead.toml"
        subsets, examples = DATA[args.dataset]
        study.write_text(STUDY.format(dataset=args.dataset, subsets=subsets, examples=examples))
        whole = whole_command(study, args.repeats)
        child = subprocess.run([sys.executable, "-m", "vaebench.benchmarks.run_overhead", "--phases-of", str(study)],
                               check=True, capture_output=True, text=True)
        parts = json.loads(child.stdout.strip().splitlines()[-1])

    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"one-cell study on {args.dataset}, one thread, load average {load} on {os.cpu_count()} cores")
    print(f"vaebench run: {whole['wall']:.2f} s wall = training {whole['train']:.2f} s + evaluation "
          f"{whole['eval']:.2f} s + overhead {whole['overhead']:.2f} s (best of {args.repeats})")
    print("phases, timed in a fresh process:")
    for name, seconds in parts.items():
        print(f"  {name:<48} {seconds:6.2f} s")
    return {**whole, **parts}


if __name__ == "__main__":
    sys.exit(run_command(main, prog="vaebench.benchmarks.run_overhead"))
