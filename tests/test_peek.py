"""``vaebench peek``: log p(x) by importance sampling at a cell's latest checkpoint, mid-training included."""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from vaebench.checkpoint import load_checkpoint
from vaebench.cli import main
from vaebench.datasets import load_dataset
from vaebench.metrics import importance_sampled_log_likelihood
from vaebench.runner import CHECKPOINTS, build_method
from vaebench.study import load_study
from vaebench.training import TrainConfig, train

STUDY = """name = "peeked"
methods = ["vae"]
datasets = ["toy4"]
latent_dims = [2]
[train]
epochs = 3
batch_size = 100
[eval]
is_samples = 50
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A study trained and evaluated to the end: (study file, results folder)."""
    folder = tmp_path_factory.mktemp("peek")
    study = folder / "peeked.toml"
    study.write_text(STUDY)
    out = folder / "out"
    assert main(["run", str(study), "--out", str(out), "--no-progress"]) == 0
    return study, out


def _reading(capsys, *argv):
    assert main(["peek", *map(str, argv)]) == 0
    out = capsys.readouterr().out
    match = re.search(r"IS-([\d,]+) on the first ([\d,]+) test images (-?\d+\.\d+) ± (\d+\.\d+)", out)
    assert match, out
    return out, float(match.group(3)), float(match.group(4))


def test_peek_gives_what_the_estimator_gives_on_the_checkpoint(finished, capsys):
    study_file, out = finished
    line, value, _ = _reading(capsys, study_file, "--out", out, "--is-samples", 5000)
    assert "epoch 3 of 3 (finished): log p(x) IS-5,000 on the first 4 test images" in line

    # the same draws through the estimator by hand, on the model the checkpoint holds
    run = load_study(str(study_file)).cells()[0]
    data = load_dataset(run.dataset, run.data)
    model = build_method(run, data)
    model.load_state_dict(load_checkpoint(out / CHECKPOINTS / run.cell_id)["model"])
    model.eval()
    torch.manual_seed(0)
    with torch.no_grad():
        by_hand = importance_sampled_log_likelihood(model, data.test, 5000).mean().item()
    assert f"{by_hand:.3f}" == f"{value:.3f}"


def test_a_checkpoint_mid_training_reads_as_interim(finished, tmp_path, capsys):
    study_file, _ = finished
    run = load_study(str(study_file)).cells()[0]
    data = load_dataset(run.dataset, run.data)
    torch.manual_seed(0)
    train(build_method(run, data), data, TrainConfig(epochs=1, batch_size=100), seed=0, dynamic_binarization=False,
          checkpoint_dir=tmp_path / CHECKPOINTS / run.cell_id, progress=False)
    line, _, _ = _reading(capsys, study_file, "--out", tmp_path, "--is-samples", 10)
    assert "epoch 1 of 3 (interim)" in line


def test_a_cell_without_a_checkpoint_says_so(finished, tmp_path, capsys):
    study_file, _ = finished
    assert main(["peek", str(study_file), "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip().endswith("no checkpoint yet")


def _one_line(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cell=st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1,
                    max_size=20).filter(lambda c: not c.startswith("-")))
def test_a_cell_that_matches_nothing_is_one_line_naming_the_cells(finished, capsys, cell):
    study_file, out = finished
    assume(cell not in load_study(str(study_file)).cells()[0].cell_id)  # e.g. "3" may be in its hash
    err = _one_line(capsys, ["peek", str(study_file), "--out", str(out), "--cell", cell])
    assert "no cell of peeked matches; its cells are vae-toy4-z2-s0-" in err


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(option=st.sampled_from(["--examples", "--is-samples", "--batch-size", "--threads"]),
       value=st.integers(max_value=0))
def test_non_positive_sizes_are_one_line(finished, capsys, option, value):
    study_file, out = finished
    err = _one_line(capsys, ["peek", str(study_file), "--out", str(out), option, str(value)])
    assert f"{option}: must be a positive integer, got {value}" in err


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(examples=st.integers(min_value=5, max_value=10**12))
def test_more_examples_than_test_images_are_one_line(finished, capsys, examples):
    study_file, out = finished
    err = _one_line(capsys, ["peek", str(study_file), "--out", str(out), "--examples", str(examples)])
    assert f"examples must lie in 1 … 4 (the test images of toy4), got {examples}" in err


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"), min_size=1,
                    max_size=20).filter(lambda n: n not in (".", "..")))
def test_a_results_folder_that_does_not_exist_is_one_line(finished, tmp_path, capsys, name):
    study_file, _ = finished
    err = _one_line(capsys, ["peek", str(study_file), "--out", str(tmp_path / "absent" / name)])
    assert "no such results folder" in err
