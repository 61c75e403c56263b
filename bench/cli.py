"""The ``vaebench`` command line: run studies, make tables, list methods and data sets."""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any, get_type_hints

from .errors import ConfigError, VaebenchError, run_command
from .text import plain, plural


def check_out(out: Path, create: bool) -> None:
    """Refuse a results folder that is a file or cannot be created or written, before anything runs;
    with ``create``, make it."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file, not a folder")
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"--out {out}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out}: {existing} is not writable")
    if create:
        try:
            out.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=out):  # the permission bits do not tell of read-only mounts
                pass
        except OSError as exc:
            raise ConfigError(f"--out {out}: cannot be created or written ({exc.strerror or exc})") from None


def _existing_folder(option: str, folder: str | Path | None) -> Path | None:
    """A results folder given as ``option``: one that exists, or a one-line error (not a silent nothing)."""
    if folder is None:
        return None
    path = Path(folder)
    if not path.is_dir():
        raise ConfigError(f"{option} {folder}: no such results folder")
    return path


def _cmd_run(args: argparse.Namespace) -> int:
    from .preflight import preflight
    from .report import write_report
    from .runner import Execution, command_line, plan_cell, run_study
    from .study import load_study

    study = load_study(args.study)
    execution = Execution(jobs=args.jobs, backend=args.backend, scheduler=args.scheduler, threads=args.threads,
                          eval_threads=args.eval_threads)
    out = Path(args.out) if args.out else Path("runs") / study.name
    reference = _existing_folder("--reference", args.reference) or Path("results") / study.name
    check_out(out, create=not args.dry_run)
    preflight(study, args.device, source=args.study)
    cells = study.cells()
    if args.dry_run:
        for run in cells:
            action, _ = plan_cell(out, run, force=args.force, reevaluate=args.reevaluate)
            budget = plural(run.train.epochs, "epoch") if run.train.epochs else plural(run.train.steps, "step")
            print(f"{run.cell_id}  {action}: {run.method} on {run.dataset}, latent {run.latent_dim}, "
                  f"seed {run.seed}, {budget} of batch {run.train.batch_size}")
        jobs, threads = execution.plan()
        eval_threads = execution.eval_plan()
        print(f"{plural(len(cells), 'cell')} → {out} ({plural(jobs, 'job')} × {plural(threads, 'thread')}"
              f"{f' ({eval_threads} for evaluation)' if eval_threads != threads else ''}, "
              f"{execution.backend}); every check passed")
        return 0
    print(f"study {study.name}: {plural(len(cells), 'cell')} → {out}")
    command = command_line(args.study, args.out)  # home as ~, the current folder as .
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


def _cmd_peek(args: argparse.Namespace) -> int:
    import torch

    from .device import resolve_device
    from .peek import default_settings, peek_cell
    from .study import load_study

    study = load_study(args.study)
    out = _existing_folder("--out", args.out or Path("runs") / study.name)
    for name in ("examples", "is_samples", "batch_size", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')}: must be a positive integer, got {value}")
    cells = [run for run in study.cells() if not args.cell or any(part in run.cell_id for part in args.cell)]
    if not cells:
        raise ConfigError(f"--cell {' '.join(args.cell)}: no cell of {study.name} matches; its cells are "
                          f"{', '.join(run.cell_id for run in study.cells())}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    examples, is_samples = default_settings(study)
    examples = args.examples or examples
    is_samples = args.is_samples or is_samples
    for run in cells:
        reading = peek_cell(run, out, examples=examples, is_samples=is_samples,
                            batch_size=args.batch_size or study.eval.batch_size, device=device, seed=args.seed)
        print(reading.line() if reading else f"{run.cell_id}  no checkpoint yet", flush=True)
    return 0


def _cmd_posterior(args: argparse.Namespace) -> int:
    from .posterior.study import load_posterior_study, run_posterior_study

    if args.threads < 1:
        raise ConfigError(f"--threads: must be a positive integer, got {args.threads}")
    study = load_posterior_study(args.study)
    out = Path(args.out) if args.out else Path("runs") / study.name
    check_out(out, create=True)
    if not args.report_only:
        from .runner import typed_path

        command = " ".join(["vaebench", "posterior", typed_path(args.study), "--out", typed_path(out),
                            "--threads", str(args.threads)])
        print(f"posterior study {study.name} → {out}")
        run_posterior_study(study, out, threads=args.threads, command=command)
    from .posterior.report import write_posterior_report

    paths = write_posterior_report(out, study)
    print(paths["table"].read_text(), end="")
    print(f"report: {paths['readme']}")
    return 0


def _reporting(results_dir: str, write: Any) -> dict[str, Path]:
    """``write(folder)`` with anything a malformed or partial record raises as one line naming the folder."""
    try:
        return write(Path(results_dir))
    except (VaebenchError, OSError):
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a record missing a field or of the wrong shape
        raise ConfigError(f"{results_dir}: a record cannot be reported ({type(exc).__name__}: {exc})") from None


def _cmd_table(args: argparse.Namespace) -> int:
    from .report import write_table

    paths = _reporting(args.results_dir, write_table)
    print(paths["md"].read_text(), end="")
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    reference = _existing_folder("--reference", args.reference)
    paths = _reporting(args.results_dir, lambda folder: write_report(folder, reference_dir=reference))
    print(paths["md"].read_text(), end="")
    print(f"wrote {len(paths)} files; see {paths['readme']}")
    return 0


def _first_line(obj: Any) -> str:
    doc = (obj.__doc__ or "").strip().splitlines()
    return plain(doc[0]) if doc else ""


#: the start of a field's description in a config docstring: ``a``, ``b`` (inherited):
_FIELD_ENTRY = re.compile(r"((?:``\w+``(?:,\s*|\s+and\s+)?)+)(?:\s*\([^)]*\))?:\s")


def field_descriptions(cls: type) -> dict[str, str]:
    """Each config field's description from the ``name``: … entries of the class's docstrings
    (base classes first, so a subclass's own description wins)."""
    names = {f.name for f in dataclasses.fields(cls)}
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        doc = klass.__dict__.get("__doc__") or ""
        for paragraph in re.split(r"\n\s*\n", doc):
            text = " ".join(paragraph.split())
            entries = list(_FIELD_ENTRY.finditer(text))
            for entry, following in zip(entries, entries[1:] + [None]):
                description = plain(text[entry.end(): following.start() if following else len(text)].strip())
                for name in re.findall(r"``(\w+)``", entry.group(1)):
                    if name in names:
                        out[name] = description
    return out


def _describe_method(name: str) -> None:
    from vaebench.config import _type_name
    from vaebench.methods import METHODS

    cls = METHODS.get(name)
    config = cls.config_class
    print(f"{name}: {_first_line(cls)}")
    print(f"\noptions, set in a study as {{name = \"{name}\", option = value, …}}:")
    hints, docs = get_type_hints(config), field_descriptions(config)
    defaults = config()
    for f in dataclasses.fields(config):
        value = getattr(defaults, f.name)
        shown = list(value) if isinstance(value, tuple) else value
        print(f"\n  {f.name} ({_type_name(hints[f.name])}, default {shown!r})")
        if f.name in docs:
            print(textwrap.fill(docs[f.name], width=92, initial_indent="      ", subsequent_indent="      "))


def _cmd_methods(args: argparse.Namespace) -> int:
    from vaebench.methods import METHODS

    from .study import import_plugins, load_study_plugins

    if args.study:
        load_study_plugins(args.study)
    # modules of the current folder import as they would for `python -m`, without PYTHONPATH
    import_plugins(tuple(name.strip() for item in args.plugins for name in item.split(",")), Path.cwd(),
                   where="--plugins")
    if args.name:
        _describe_method(args.name)
        return 0
    width = max(map(len, METHODS.names()), default=0)
    for name in METHODS.names():
        cls = METHODS.get(name)
        origin = "" if cls.__module__.startswith("vaebench.") else f"  (plugin {cls.__module__})"
        print(f"{name:<{width}}  {_first_line(cls)}{origin}")
    print("\n`vaebench methods NAME` shows a method's options and their defaults")
    return 0


def _cmd_datasets(args: argparse.Namespace) -> int:
    from vaebench.datasets import DATASETS

    for name in DATASETS.names():
        print(f"{name:<14} {_first_line(DATASETS.get(name))}")
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vaebench")
    except PackageNotFoundError:  # run from a source tree that was never installed
        from . import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vaebench", description=plain(__doc__ or ""))
    parser.add_argument("--version", action="version", version=f"vaebench {_version()}")
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
    run.add_argument("--dry-run", action="store_true",
                     help="check everything that can be checked before training, list the cells and exit")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--jobs", type=int, default=1, help="cells run in parallel (default 1)")
    run.add_argument("--backend", default="loky", choices=("loky", "dask"),
                     help="loky: processes on this machine; dask: a dask.distributed cluster")
    run.add_argument("--scheduler", help="dask scheduler address, e.g. tcp://10.0.0.1:8786 (with --backend dask)")
    run.add_argument("--threads", type=int, help="torch threads per cell (default: cores / jobs)")
    run.add_argument("--eval-threads", type=int, help="torch threads per cell's evaluation (default: --threads; "
                     "at most cores / jobs)")
    run.set_defaults(func=_cmd_run)

    peek = sub.add_parser("peek", help="log p(x) by importance sampling at each cell's latest checkpoint, "
                          "mid-training included; writes nothing")
    peek.add_argument("study", help="the study file or preset that is running")
    peek.add_argument("--out", help="its results folder (default: runs/<study name>)")
    peek.add_argument("--cell", nargs="+", help="only cells whose id contains one of these")
    peek.add_argument("--examples", type=int, help="the first N test images (default: the study's own "
                      "importance-sampling column: all of them with full_test_is_samples, else eval.examples)")
    peek.add_argument("--is-samples", type=int, help="importance samples per image (default: the study's, as above)")
    peek.add_argument("--batch-size", type=int, help="images per batch (default: eval.batch_size)")
    peek.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")
    peek.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    peek.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    peek.set_defaults(func=_cmd_peek)

    table = sub.add_parser("table", help="write table.md, table.csv and table.tex from a results folder")
    table.add_argument("results_dir")
    table.set_defaults(func=_cmd_table)

    report = sub.add_parser("report", help="tables, figures and README.md from a results folder's records")
    report.add_argument("results_dir")
    report.add_argument("--reference", help="another results folder of the same study to compare with")
    report.set_defaults(func=_cmd_report)

    posterior = sub.add_parser("posterior", help="the posterior-approximation track: fit q to an unnormalised "
                               "density (AVB, AVB-AC, mean-field VI, a flow) against NUTS or an exact grid")
    posterior.add_argument("study", help="a posterior study TOML file, or the preset 'posterior'")
    posterior.add_argument("--out", help="results folder (default: runs/<study name>)")
    posterior.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    posterior.add_argument("--report-only", action="store_true", help="only the table, figures and README "
                           "from the records already there")
    posterior.set_defaults(func=_cmd_posterior)

    methods = sub.add_parser("methods", help="list the registered methods, or one method's options")
    methods.add_argument("name", nargs="?", help="a method: show its options, their types and defaults")
    methods.add_argument("--plugins", action="append", default=[], metavar="MODULE[,MODULE]",
                         help="import these modules first and list their methods too (looked for in the "
                         "current folder first; may be repeated)")
    methods.add_argument("--study", help="a study file or preset: import its plugins first")
    methods.set_defaults(func=_cmd_methods)
    sub.add_parser("datasets", help="list the registered data sets").set_defaults(func=_cmd_datasets)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
