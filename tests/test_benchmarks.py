"""The benchmark scripts in tiny configurations on the CPU, so that they cannot silently rot:
each runs end to end, names its device in its first line and returns finite numbers."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from vaebench.benchmarks import ais_throughput, matmul, preset_timing, run_overhead, training_throughput
from vaebench.errors import run_command
from vaebench.records import device_description

CPU_NAME = device_description("cpu")


def _numbers(out: dict) -> list[float]:
    """Every number in a benchmark's returned fields, nested ones included."""
    values = []
    for value in out.values():
        if isinstance(value, dict):
            values += _numbers(value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            values.append(value)
    return values


def _first_line(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().out.splitlines()[0]


def test_matmul(capsys: pytest.CaptureFixture[str]) -> None:
    out = matmul.main(["--device", "cpu", "--size", "128", "--repeats", "3"])
    assert out["device"] == CPU_NAME and out["size"] == 128
    assert math.isfinite(out["gflops"]) and out["gflops"] > 0
    assert _first_line(capsys).startswith(f"device {CPU_NAME} (cpu)")


@pytest.mark.parametrize("initial", ["prior", "posterior"])
def test_ais_throughput(initial: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = ais_throughput.main(["--device", "cpu", "--examples", "4", "--chains", "2", "--steps", "5",
                               "--leapfrog", "2", "--latent-dim", "4", "--initial", initial])
    assert out["device"] == CPU_NAME and out["rows"] == 8 and out["initial"] == initial
    assert all(math.isfinite(v) for v in _numbers(out)), out
    # an untrained decoder on MNIST: every image costs hundreds of nats
    assert out["log_likelihood"] < -100 and out["log_likelihood_sem"] > 0
    assert out["seconds"] > 0 and 0 < out["ratio"] and 0 <= out["acceptance"] <= 1
    line = _first_line(capsys)
    assert line.startswith(f'device="{CPU_NAME}" ' if " " in CPU_NAME else f"device={CPU_NAME} ")
    assert f"log_likelihood={out['log_likelihood']:.4g}" in line  # the estimate beside the time


def test_training_throughput(capsys: pytest.CaptureFixture[str]) -> None:
    threads = torch.get_num_threads()
    out = training_throughput.main(["--device", "cpu", "--train-examples", "200", "--repeats", "1",
                                    "--small-steps", "3", "--latent-dim", "4"])
    assert torch.get_num_threads() == threads  # no --threads: the process's setting is left alone
    assert out["device"] == CPU_NAME
    assert set(out["batch20"]) == {"vaebench loop", "plain torch loop", "burda2016 config"}
    assert all(math.isfinite(v) and v > 0 for v in _numbers(out)), out
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"device {CPU_NAME} (cpu), ")
    assert any(line.startswith("vaebench loop") and "train loss" in line for line in lines)


def test_preset_timing_times_every_row_at_its_own_latent_sizes(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    study = tmp_path / "rows.toml"
    study.write_text('methods = ["vae", {name = "vae", label = "v3", latent_dims = [3, 2]},\n'
                     '  {name = "avb", adversary_hidden = [4], adversary_features = 4, adversary_steps = 2}]\n'
                     'datasets = ["toy4"]\nlatent_dims = [2]\nseeds = [0, 1]\n[architecture]\nhidden = [8]\n'
                     '[train]\nepochs = 1\nbatch_size = 10\n')
    rows = preset_timing.main([str(study), "--device", "cpu", "--steps", "3", "--warmup", "1", "--repeats", "2"])
    # one row per label and latent size (seeds cost the same), measured against the first
    assert [(r["label"], r["latent_dim"]) for r in rows] == [("vae", 2), ("v3", 3), ("v3", 2), ("avb", 2)]
    assert rows[0]["relative"] == 1 and all(math.isfinite(r["relative"]) and r["step"] > 0 for r in rows)
    assert set(rows[3]["losses"]) == {"model", "adversary", "T_posterior"}
    assert all(math.isfinite(v) for r in rows for v in r["losses"].values())
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"device {CPU_NAME} (cpu), ") and "best of 2 round(s)" in lines[0]
    assert len(lines) == 1 + 3 * 4  # per row: its line, then wall and CPU time
    # --only: the named rows, after the first row, which every row is measured against
    only = preset_timing.main([str(study), "--device", "cpu", "--steps", "2", "--warmup", "0", "--only", "avb"])
    assert [(r["label"], r["latent_dim"]) for r in only] == [("vae", 2), ("avb", 2)]


def test_preset_timing_gives_epochs_and_hours_with_validation(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    study = tmp_path / "tiny.toml"
    study.write_text('''
methods = ["vae", {name = "vae", label = "warm", kl_warmup_steps = 4, analytic_kl = false}]
datasets = ["toy4"]
latent_dims = [2]
[architecture]
hidden = [8]
[train]
epochs = 30
batch_size = 10
early_stopping_patience = 3
''')
    out = preset_timing.main([str(study), "--device", "cpu", "--steps", "3", "--warmup", "1", "--eager",
                              "--epochs", "10", "20"])
    assert [r["label"] for r in out] == ["vae", "warm"]
    for timing in out:
        numbers = [v for k, v in timing.items() if isinstance(v, float)]
        assert all(math.isfinite(v) and v > 0 for v in numbers), timing
        assert timing["epoch"] == pytest.approx(timing["steps_per_epoch"] * timing["step"] + timing["valid"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"device {CPU_NAME} (cpu), ") and "study tiny" in lines[0]
    assert any(line.startswith("  CPU time: ") and "20 epochs" in line for line in lines)



def test_run_overhead(capsys: pytest.CaptureFixture[str]) -> None:
    out = run_overhead.main(["--dataset", "toy4", "--repeats", "1"])
    # the whole command ran (in a fresh process) and its record's seconds are inside its wall time
    assert 0 < out["train"] and 0 < out["eval"] and out["train"] + out["eval"] < out["wall"]
    assert out["overhead"] == pytest.approx(out["wall"] - out["train"] - out["eval"])
    assert out["import torch"] > 0 and out["run_study"] >= out["  of which training"]
    assert all(math.isfinite(v) for v in _numbers(out)), out
    assert "vaebench run: " in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("module", [matmul, ais_throughput, training_throughput])
def test_cuda_without_a_gpu_is_one_line_and_status_2(module, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_command(lambda: module.main(["--device", "cuda"]), prog="bench") == 2
    err = capsys.readouterr().err
    assert err == "bench: error: device 'cuda' was asked for, but torch sees no CUDA device here\n"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_from_the_command_line() -> None:
    done = subprocess.run([sys.executable, "-m", "vaebench.benchmarks.matmul", "--device", "cuda"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        "vaebench.benchmarks.matmul: error: device 'cuda' was asked for, but torch sees no CUDA device here"]


def test_plain_loop_takes_every_step_asked_for_when_they_need_more_than_one_pass() -> None:
    from vaebench.methods import create_method

    torch.manual_seed(0)
    model = create_method("vae", {}, data_shape=(784,), latent_dim=2, architecture=None)
    calls = []
    log_prob = model.decoder.log_prob
    model.decoder.log_prob = lambda x, z: calls.append(len(x)) or log_prob(x, z)
    train_x = torch.rand(50, 784)
    seconds, loss = training_throughput.plain_loop(model, train_x, 1, 20, steps=7)  # 140 images of 50
    assert calls == [20] * 7 and seconds > 0 and math.isfinite(loss)
