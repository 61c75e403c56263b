"""The study runner: failure isolation, corrupt records, SIGKILL and resume, parallel backends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vaebench.checkpoint import load_checkpoint
from vaebench.cli import main
from vaebench.records import load_records, read_record, record_path
from vaebench.runner import Execution, run_study
from vaebench.study import load_study

TINY = """
name = "tiny"
methods = {methods}
datasets = ["mnist"]
latent_dims = [2]
seeds = {seeds}
plugins = {plugins}

[architecture]
hidden = [32]

[data]
train_subset = {n_train}
valid_subset = 100
test_subset = 20

[train]
epochs = {epochs}
batch_size = 100

[eval]
is_samples = 10
"""

NAN_PLUGIN = '''
from vaebench.methods import register
from vaebench.methods.vae import VAE


@register("test-nan")
class NaNVAE(VAE):
    """A VAE whose loss is NaN: a stand-in for a diverging method."""

    def training_step(self, batch):
        return {"model": super().training_step(batch)["model"] * float("nan")}
'''


def write_study(tmp_path: Path, methods='["vae"]', seeds="[0]", plugins="[]", n_train=300, epochs=1) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY.format(methods=methods, seeds=seeds, plugins=plugins, n_train=n_train, epochs=epochs))
    return path


def test_a_diverging_cell_is_recorded_as_failed_and_the_others_go_on(tmp_path, monkeypatch, capsys):
    (tmp_path / "nan_plugin.py").write_text(NAN_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    study = write_study(tmp_path, methods='["test-nan", "vae"]', plugins='["nan_plugin"]')
    out = tmp_path / "out"
    assert main(["run", str(study), "--out", str(out), "--no-progress"]) == 1
    records = {r["config"]["method"]: r for r in load_records(out)}
    assert records["vae"]["status"] == "ok"
    assert records["test-nan"]["status"] == "failed"
    assert "TrainingDiverged" in records["test-nan"]["error"] and "nan" in records["test-nan"]["error"]
    captured = capsys.readouterr()
    assert f"1 of 2 cells failed: {records['test-nan']['cell_id']}" in captured.err
    assert "| vae " in (out / "table.md").read_text()


def test_a_corrupt_record_is_detected_and_its_cell_rerun(tmp_path, capsys):
    study_path = write_study(tmp_path, seeds="[0, 1]")
    out = tmp_path / "out"
    assert main(["run", str(study_path), "--out", str(out), "--no-progress"]) == 0
    cells = load_study(study_path).cells()
    path = record_path(out, cells[1].cell_id)
    path.write_text(path.read_text()[:100])  # truncated mid-write by a dying process
    assert read_record(path) is None
    capsys.readouterr()
    assert main(["run", str(study_path), "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "skipping 1 finished cell " in text and f"ok     {cells[1].cell_id}" in text
    assert read_record(path)["status"] == "ok"


def test_sigkill_mid_study_loses_only_the_cell_in_flight_which_resumes(tmp_path):
    study_path = write_study(tmp_path, seeds="[0, 1]", n_train=1000, epochs=150)
    first, second = (run.cell_id for run in load_study(study_path).cells())
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "vaebench", "run", str(study_path), "--out", str(out),
                             "--no-progress", "--threads", "1"],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    checkpoint = out / "checkpoints" / second / "checkpoint.pt"
    deadline = time.monotonic() + 240
    while not checkpoint.exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "the second cell never wrote a checkpoint"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    saved_epoch = load_checkpoint(checkpoint.parent)["epoch"]
    assert 1 <= saved_epoch < 150
    assert read_record(record_path(out, first))["status"] == "ok"
    assert read_record(record_path(out, second)) is None  # the cell in flight, and only it, is lost

    records = run_study(load_study(study_path), out, progress=False, echo=lambda s: None)
    by_id = {r["cell_id"]: r for r in records}
    assert by_id[second]["status"] == "ok"
    assert by_id[second]["timings"]["resumed_from_epoch"] >= saved_epoch
    assert len(by_id[second]["history"]) == 150
    # the record names both processes that trained the cell, each with the epochs it trained
    provenance = by_id[second]["provenance"]
    segments = provenance["training_segments"]
    assert [(s["from_epoch"], s["to_epoch"]) for s in segments] == [(0, saved_epoch), (saved_epoch, 150)]
    assert all(s["commit"] == provenance["commit"] and s["device"] == provenance["device"] for s in segments)
    assert segments[0]["started_at"] <= segments[1]["started_at"]  # whole seconds: both may start in one
    finished = read_record(record_path(out, first))["provenance"]["finished_at"]
    assert by_id[first]["provenance"]["finished_at"] == finished  # not rerun


def test_loky_jobs_run_cells_in_parallel_processes(tmp_path):
    study = load_study(write_study(tmp_path, seeds="[0, 1]"))
    records = run_study(study, tmp_path / "out", progress=False, echo=lambda s: None,
                        execution=Execution(jobs=2, threads=1))
    assert [r["status"] for r in records] == ["ok", "ok"]
    assert Execution(jobs=64).plan()[0] * Execution(jobs=64).plan()[1] <= (os.cpu_count() or 1)


def test_evaluation_threads_apart_from_training_threads_are_recorded_and_undone(tmp_path):
    study = load_study(write_study(tmp_path, seeds="[0]"))
    before = torch.get_num_threads()
    lines = []
    (record,) = run_study(study, tmp_path / "out", progress=False, echo=lines.append,
                          execution=Execution(jobs=1, threads=1, eval_threads=2))
    cores = os.cpu_count() or 1
    assert record["status"] == "ok"
    assert record["provenance"]["threads"] == 1  # training's
    assert record["provenance"]["eval_threads"] == min(2, cores)
    assert torch.get_num_threads() == 1  # the next cell trains with the training threads again
    assert ("(2 for evaluation)" in lines[-1]) == (cores >= 2)
    from vaebench.report import write_report
    readme = write_report(tmp_path / "out")["readme"].read_text()
    assert ("1 thread (2 for evaluation)" in readme) == (cores >= 2)
    torch.set_num_threads(before)
    assert Execution(jobs=2, eval_threads=64).eval_plan() * 2 <= max(cores, 2)
    assert Execution(threads=1).eval_plan() == 1  # default: as many as training


def test_dask_backend_on_a_local_cluster(tmp_path):
    from dask.distributed import LocalCluster

    study = load_study(write_study(tmp_path))
    with LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                      processes=True) as cluster:
        records = run_study(study, tmp_path / "out", progress=False, echo=lambda s: None,
                            execution=Execution(backend="dask", scheduler=cluster.scheduler_address))
    assert [r["status"] for r in records] == ["ok"]
    assert load_records(tmp_path / "out")[0]["metrics"]["elbo"] < 0


def test_same_config_gives_the_same_numbers(tmp_path):
    study = load_study(write_study(tmp_path))
    a = run_study(study, tmp_path / "a", progress=False, echo=lambda s: None)[0]
    b = run_study(study, tmp_path / "b", progress=False, echo=lambda s: None)[0]
    assert a["metrics"] == b["metrics"]


def test_a_changed_evaluation_reuses_the_checkpoint_and_force_retrains(tmp_path, capsys):
    study_path = write_study(tmp_path)
    out = tmp_path / "out"
    assert main(["run", str(study_path), "--out", str(out), "--no-progress"]) == 0
    (first,) = load_records(out)
    weights = load_checkpoint(out / "checkpoints" / first["cell_id"])["model"]
    # a new evaluation setting: same cell, same checkpoint, no training
    study_path.write_text(study_path.read_text().replace("is_samples = 10", "is_samples = 20"))
    capsys.readouterr()
    assert main(["run", str(study_path), "--out", str(out), "--no-progress"]) == 0
    assert "re-evaluating 1 trained cell " in capsys.readouterr().out
    (second,) = load_records(out)
    assert second["cell_id"] == first["cell_id"] and second["eval_id"] != first["eval_id"]
    assert second["checkpoint_sha256"] == first["checkpoint_sha256"]
    assert second["timings"]["resumed_from_epoch"] == 1  # the final checkpoint: nothing trained
    assert second["history"] == first["history"]
    # --reevaluate evaluates again without training; --force trains from scratch
    assert main(["run", str(study_path), "--out", str(out), "--no-progress", "--reevaluate"]) == 0
    assert load_records(out)[0]["timings"]["resumed_from_epoch"] == 1
    assert main(["run", str(study_path), "--out", str(out), "--no-progress", "--force"]) == 0
    (third,) = load_records(out)
    assert third["timings"]["resumed_from_epoch"] == 0
    again = load_checkpoint(out / "checkpoints" / first["cell_id"])["model"]
    assert all(torch.equal(weights[k], again[k]) for k in weights)  # seeded: the same weights again


def test_a_changed_study_keeps_old_cells_out_of_the_table(tmp_path):
    study_path = write_study(tmp_path)
    out = tmp_path / "out"
    assert main(["run", str(study_path), "--out", str(out), "--no-progress"]) == 0
    study_path.write_text(study_path.read_text().replace("hidden = [32]", "hidden = [16]"))
    assert main(["run", str(study_path), "--out", str(out), "--no-progress"]) == 0
    assert len(load_records(out)) == 2
    table = (out / "table.md").read_text()
    assert table.count("| vae ") == 1
    readme = (out / "README.md").read_text()
    assert "## Stale records" in readme


def test_a_folder_in_use_is_refused_with_one_line(tmp_path, capsys):
    import fcntl

    study_path = write_study(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("pid 4242\n")
        held.flush()
        assert main(["run", str(study_path), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "in use by another vaebench run" in err[0] and "pid 4242" in err[0]


def test_a_record_that_cannot_be_written_fails_its_cell_only(tmp_path, monkeypatch):
    import vaebench.runner as runner

    study = load_study(write_study(tmp_path, seeds="[0, 1]"))
    real = runner.write_record
    first = study.cells()[0].cell_id

    def full_disk(results_dir, record):
        if record["cell_id"] == first:
            raise OSError(28, "No space left on device")
        return real(results_dir, record)

    monkeypatch.setattr(runner, "write_record", full_disk)
    records = run_study(study, tmp_path / "out", progress=False, echo=lambda s: None)
    assert [r["status"] for r in records] == ["failed", "ok"]
    assert "No space left on device" in records[0]["error"]
    monkeypatch.setattr(runner, "write_record", real)
    # the trained model is kept: the next run evaluates it without training
    again = run_study(study, tmp_path / "out", progress=False, echo=lambda s: None)
    assert again[0]["status"] == "ok" and again[0]["timings"]["resumed_from_epoch"] == 1


def test_a_failed_cells_traceback_names_no_folder_of_this_machine(tmp_path, monkeypatch):
    import vaebench.runner as runner

    study = load_study(write_study(tmp_path))

    def broken_estimator(*args, **kwargs):
        raise RuntimeError("the estimator broke")

    monkeypatch.setattr(runner, "evaluate", broken_estimator)
    (record,) = run_study(study, tmp_path / "out", progress=False, echo=lambda s: None)
    assert record["status"] == "failed" and "the estimator broke" in record["error"]
    package = Path(runner.__file__).resolve().parent
    assert f"{package.name}/runner.py" in record["traceback"]
    assert str(package) not in record["traceback"] and str(Path.home()) not in record["traceback"]


def test_a_corrupt_checkpoint_is_set_aside_not_blocking(tmp_path):
    study = load_study(write_study(tmp_path))
    out = tmp_path / "out"
    cell = study.cells()[0].cell_id
    checkpoint = out / "checkpoints" / cell / "checkpoint.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"not a checkpoint")
    (checkpoint.parent / ".checkpoint.pt.abc.tmp").write_bytes(b"half")  # left by a killed run
    (record,) = run_study(study, out, progress=False, echo=lambda s: None)
    assert record["status"] == "ok" and "set aside" in record["notes"][0]
    assert (checkpoint.parent / "checkpoint.pt.corrupt").exists()
    assert not list(out.glob("**/.*.tmp"))


# --- the recorded command, and each thing once per process ------------------------------------------

def test_the_recorded_command_names_no_absolute_folder_of_this_machine(tmp_path, monkeypatch):
    from vaebench.runner import command_line, typed_path

    home, work = tmp_path / "home", tmp_path / "home" / "work"
    work.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    assert typed_path(home / ".cache" / "vaebench" / "runs" / "b") == "~/.cache/vaebench/runs/b"
    assert typed_path(work / "runs" / "x") == "runs/x"  # inside the current folder: relative, before ~
    assert (typed_path(work), typed_path(home)) == (".", "~")
    assert typed_path(f"{work}/../work/s.toml") == "s.toml"
    assert typed_path(home / "my runs" / "a") == "~/'my runs/a'"  # quoted after the ~, which must stay bare
    for given in ("quick", "../elsewhere/s.toml", "/opt/data/s.toml"):  # as typed, or outside both folders
        assert typed_path(given) == given
    assert command_line("burda2016", home / ".cache" / "runs") == "vaebench run burda2016 --out ~/.cache/runs"
    assert command_line(work / "s.toml") == "vaebench run s.toml"
    # run_study records it in study.json with ~ where no command is given
    import vaebench.runner as runner

    monkeypatch.setattr(runner, "_run_locked", lambda *args, **kwargs: [])
    run_study(load_study(write_study(tmp_path)), home / "runs" / "tiny", progress=False, echo=lambda s: None)
    recorded = json.loads((home / "runs" / "tiny" / "study.json").read_text())["command"]
    assert recorded == "vaebench run tiny --out ~/runs/tiny"


COUNTING_PLUGIN = '''
from dataclasses import dataclass

from vaebench.methods import METHODS, register

VAE = METHODS.get("vae")
RESOLVED = []  # every config of this method built from its settings


@dataclass(frozen=True)
class CountedConfig(VAE.config_class):
    def __post_init__(self):
        super().__post_init__()
        RESOLVED.append(self)


@register("{name}")
class CountedVAE(VAE):
    """The VAE, counting how often its config is resolved."""

    config_class = CountedConfig
'''


def test_a_dry_run_resolves_each_method_config_once_and_imports_each_plugin_once(tmp_path, monkeypatch, capsys):
    import importlib
    import uuid

    from vaebench.runner import _cached_dataset, build_method

    module = f"counting_{uuid.uuid4().hex[:12]}"  # new to this process: its method name too
    name = module.replace("_", "-")
    (tmp_path / f"{module}.py").write_text(COUNTING_PLUGIN.format(name=name))
    study = tmp_path / "s.toml"
    study.write_text(f'plugins = ["{module}"]\nmethods = ["{name}", {{name = "{name}", label = "b", lr = 2e-3}}]\n'
                     'datasets = ["toy4"]\nlatent_dims = [2, 3]\nseeds = [0, 1]\n'
                     "[train]\nepochs = 1\nbatch_size = 10\n[eval]\nis_samples = 5\n")
    imports = []
    real_import = importlib.import_module

    def spy(module_name, package=None):
        if module_name == module:
            imports.append(module_name)
        return real_import(module_name, package)

    monkeypatch.setattr(importlib, "import_module", spy)
    assert main(["run", str(study), "--dry-run", "--out", str(tmp_path / "out")]) == 0
    assert "8 cells" in capsys.readouterr().out
    resolved = sys.modules[module].RESOLVED
    # two method entries: two resolutions, not one per check, model built (2 latent sizes, meta and real) or cell
    assert imports == [module] and len(resolved) == 2
    # a study parsed again resolves again, but its cells' models are built from what it resolved
    run = load_study(study).cells()[0]
    assert imports == [module] and len(resolved) == 4
    build_method(run, _cached_dataset(run.dataset, run.data))
    assert len(resolved) == 4


def test_committed_results_record_their_command_without_an_absolute_path():
    results = Path(__file__).resolve().parents[1] / "results"
    for path in sorted(results.glob("*/study.json")):
        command = json.loads(path.read_text())["command"]
        assert not any(word.startswith("/") for word in command.split()), (path, command)
