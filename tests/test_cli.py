import shutil
import subprocess
import sys

import pytest

from vaebench.cli import main
from vaebench.records import load_records

STUDY = """
name = "tiny"
methods = [{name = "vae", label = "vae-mc", analytic_kl = false}, "vae"]
datasets = ["mnist"]
latent_dims = [4]
seeds = [0, 1]

[architecture]
hidden = [32]

[data]
train_subset = 400
valid_subset = 100
test_subset = 50

[train]
epochs = 1
batch_size = 100

[eval]
is_samples = 20
"""


@pytest.fixture
def study(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(STUDY)
    return path


def test_run_writes_records_and_a_table_then_skips_finished_cells(study, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(study), "--out", str(out), "--no-progress"]) == 0
    records = load_records(out)
    assert len(records) == 4 and all(r["status"] == "ok" for r in records)
    r = records[0]
    assert {"elbo", "log_likelihood_is", "recon_bernoulli_nll", "recon_mse", "recon_pixel_error"} <= set(r["metrics"])
    assert r["metrics"]["log_likelihood_is"] < 0
    assert r["config"]["train"]["epochs"] == 1 and r["provenance"]["packages"]["torch"]
    readme = (out / "README.md").read_text()
    for figure in ("log_likelihood", "training_curves", "samples", "reconstructions"):
        assert (out / "figures" / f"{figure}.png").stat().st_size > 1000
        assert f"(figures/{figure}.png)" in readme
    assert f"vaebench run {study}" in readme
    assert "\\toprule" in (out / "table.tex").read_text()
    table = (out / "table.md").read_text()
    assert "| vae " in table and "| vae-mc " in table and "± " in table
    assert table.index("| vae-mc ") < table.index("| vae ")  # the study's order, not alphabetical
    assert (out / "table.csv").exists()
    capsys.readouterr()

    assert main(["run", str(study), "--out", str(out), "--no-progress"]) == 0
    out_text = capsys.readouterr().out
    assert "skipping 4 finished cells" in out_text and "0 ok, 0 failed, 4 skipped" in out_text


def test_dry_run_lists_cells_with_stable_ids(study, capsys):
    assert main(["run", str(study), "--dry-run"]) == 0
    first = capsys.readouterr().out
    assert main(["run", str(study), "--dry-run"]) == 0
    assert capsys.readouterr().out == first
    assert first.count(": vae on mnist, latent 4") == 4 and "4 cells" in first
    assert first.count("  train: ") == 4


@pytest.mark.parametrize("text, message", [
    ('methods = ["nope"]\ndatasets = ["mnist"]\nlatent_dims = [2]', "unknown method 'nope'; registered methods:"),
    ('methods = ["vae"]\ndatasets = ["cifar"]\nlatent_dims = [2]', "unknown dataset 'cifar'"),
    ('methods = ["vae"]\ndatasets = ["mnist"]\nlatent_dims = [-2]', "latent_dims: expected positive sizes"),
    ('methods = ["vae"]\ndatasets = ["mnist"]\nlatent_dims = [2]\n[train]\nepochs = 0', "budget must be positive"),
    ('methods = ["vae"]\ndatasets = ["mnist"]\nlatent_dims = [2]\ncolour = 1', "unknown key 'colour'"),
    ('methods = ["vae"\n', "not valid TOML"),
])
def test_bad_studies_are_one_line_errors(tmp_path, capsys, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    assert main(["run", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_console_entry_points_list_methods():
    out = subprocess.run([sys.executable, "-m", "vaebench", "methods"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("vae") or "\nvae " in out.stdout


def test_report_and_table_rebuild_from_records_alone(study, tmp_path, capsys):
    out = tmp_path / "out"
    main(["run", str(study), "--out", str(out), "--no-progress"])
    shutil.rmtree(out / "checkpoints")
    before = (out / "table.md").read_text()
    for name in ("table.md", "table.csv", "table.tex", "README.md"):
        (out / name).unlink()
    shutil.rmtree(out / "figures")
    assert main(["report", str(out)]) == 0
    assert (out / "table.md").read_text() == before
    assert (out / "figures" / "samples.png").exists() and (out / "README.md").exists()
    (out / "table.md").unlink()
    assert main(["table", str(out)]) == 0
    assert (out / "table.md").read_text() == before
    assert main(["table", str(tmp_path / "empty")]) == 2
