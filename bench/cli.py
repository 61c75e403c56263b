"""The ``vaebench`` command line: run studies, make tables, list methods and data sets."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import VaebenchError


def _cmd_run(args: argparse.Namespace) -> int:
    from .report import write_report
    from .runner import Execution, plan_cell, run_study
    from .study import load_study

    study = load_study(args.study)
    execution = Execution(jobs=args.jobs, backend=args.backend, scheduler=args.scheduler, threads=args.threads)
    out = Path(args.out) if args.out else Path("runs") / study.name
    reference = Path(args.reference) if args.reference else Path("results") / study.name
    cells = study.cells()
    if args.dry_run:
        for run in cells:
            action = plan_cell(out, run, force=args.force, reevaluate=args.reevaluate)
            budget = f"{run.train.epochs} epochs" if run.train.epochs else f"{run.train.steps} steps"
            print(f"{run.cell_id}  {action}: {run.method} on {run.dataset}, latent {run.latent_dim}, "
                  f"seed {run.seed}, {budget} of batch {run.train.batch_size}")
        jobs, threads = execution.plan()
        print(f"{len(cells)} cells → {out} ({jobs} jobs × {threads} threads, {execution.backend})")
        return 0
    print(f"study {study.name}: {len(cells)} cells → {out}")
    command = " ".join(["vaebench", "run", args.study] + (["--out", args.out] if args.out else []))
    records = run_study(study, out, device=args.device, force=args.force, reevaluate=args.reevaluate,
                        progress=not args.no_progress, execution=execution, command=command)
    failed = [r["cell_id"] for r in records if r["status"] != "ok"]
    if len(failed) < len(records):
        paths = write_report(out, reference_dir=reference if reference.is_dir() else None)
        print(paths["md"].read_text(), end="")
        print(f"report: {paths['readme']} (table: {paths['md']})")
    if failed:
        print(f"{len(failed)} of {len(records)} cells failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _cmd_table(args: argparse.Namespace) -> int:
    from .report import write_table

    paths = write_table(Path(args.results_dir))
    print(paths["md"].read_text(), end="")
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    paths = write_report(Path(args.results_dir), reference_dir=Path(args.reference) if args.reference else None)
    print(paths["md"].read_text(), end="")
    print(f"wrote {len(paths)} files; see {paths['readme']}")
    return 0


def _cmd_methods(args: argparse.Namespace) -> int:
    from vaebench.methods import METHODS

    for name in METHODS.names():
        doc = (METHODS.get(name).__doc__ or "").strip().splitlines()
        print(f"{name:<10} {doc[0] if doc else ''}")
    return 0


def _cmd_datasets(args: argparse.Namespace) -> int:
    from vaebench.datasets import DATASETS

    for name in DATASETS.names():
        doc = (DATASETS.get(name).__doc__ or "").strip().splitlines()
        print(f"{name:<14} {doc[0] if doc else ''}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vaebench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a study (a TOML file or a preset name such as 'quick')")
    run.add_argument("study", help="study TOML file, or a preset: quick, toy, …")
    run.add_argument("--out", help="results folder (default: runs/<study name>; the committed reference "
                     "results live in results/<study name>)")
    run.add_argument("--reference", help="a results folder of the same study to compare with in the report "
                     "(default: results/<study name> when it exists)")
    run.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    run.add_argument("--force", action="store_true", help="train every cell again from scratch")
    run.add_argument("--reevaluate", action="store_true",
                     help="evaluate every trained cell again from its final checkpoint (no training)")
    run.add_argument("--dry-run", action="store_true", help="list the cells and exit")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--jobs", type=int, default=1, help="cells run in parallel (default 1)")
    run.add_argument("--backend", default="loky", choices=("loky", "dask"),
                     help="loky: processes on this machine; dask: a dask.distributed cluster")
    run.add_argument("--scheduler", help="dask scheduler address, e.g. tcp://10.0.0.1:8786 (with --backend dask)")
    run.add_argument("--threads", type=int, help="torch threads per cell (default: cores / jobs)")
    run.set_defaults(func=_cmd_run)

    table = sub.add_parser("table", help="write table.md, table.csv and table.tex from a results folder")
    table.add_argument("results_dir")
    table.set_defaults(func=_cmd_table)

    report = sub.add_parser("report", help="tables, figures and README.md from a results folder's records")
    report.add_argument("results_dir")
    report.add_argument("--reference", help="another results folder of the same study to compare with")
    report.set_defaults(func=_cmd_report)

    sub.add_parser("methods", help="list the registered methods").set_defaults(func=_cmd_methods)
    sub.add_parser("datasets", help="list the registered data sets").set_defaults(func=_cmd_datasets)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except VaebenchError as exc:
        print(f"vaebench: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
