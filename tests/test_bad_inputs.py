"""Bad input of every kind gets one line on stderr and exit code 2, never a traceback; checks that
need the data or a model run in --dry-run, before any training."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import string
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vaebench.cli import field_descriptions, main, plain
from vaebench.methods import METHODS
from vaebench.methods.avb import AVBConfig

from test_study_validation import VALID, to_toml, toml_value

README = Path(__file__).resolve().parents[1] / "README.md"

TOY = """methods = ["vae"]
datasets = ["toy4"]
latent_dims = [2]
[train]
epochs = 1
batch_size = 10
[eval]
is_samples = 5
"""


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("vaebench: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


# --- study files: hypothesis --------------------------------------------------------------------

def _mutated(path: tuple, value) -> dict:
    study = json.loads(json.dumps(VALID))
    target = study
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return study


def _without(key: str) -> dict:
    return {k: v for k, v in VALID.items() if k != key}


_duplicate = st.one_of(
    st.integers(0, 5).map(lambda s: _mutated(("seeds",), [s, 1, s] if s != 1 else [1, 1])),
    st.just(_mutated(("datasets",), ["mnist", "mnist"])),
    st.integers(1, 8).map(lambda d: _mutated(("latent_dims",), [d, d])),
    st.floats(1e-4, 1e-2).map(lambda lr: _mutated(("methods",), [{"name": "vae", "lr": lr},
                                                                  {"name": "vae", "label": "again", "lr": lr}])),
    st.sampled_from(["vae", "iwae", "avb"]).map(lambda m: _mutated(("methods",), [m, {"name": "vae", "label": m}])),
)
_huge = st.integers(10**9 + 1, 2**64)
_absurd = st.one_of(
    _huge.map(lambda v: _mutated(("train", "epochs"), v)),
    _huge.map(lambda v: _mutated(("eval", "is_samples"), v)),
    _huge.map(lambda v: _mutated(("latent_dims",), [v])),
    st.integers(2**63, 2**70).map(lambda v: _mutated(("seeds",), [v])),
    st.sampled_from([float("inf"), float("-inf"), float("nan")]).map(
        lambda v: _mutated(("methods",), [{"name": "vae", "lr": v}])),
    st.integers(3, 64).map(lambda d: {**_mutated(("latent_dims",), [d]), "eval": {"quadrature": True}}),
)
_missing = st.sampled_from(["methods", "datasets", "latent_dims"]).map(_without)
_wrong_type = st.sampled_from(sorted(VALID)).flatmap(
    lambda key: st.one_of(st.integers(), st.text(max_size=4), st.booleans(), st.just({"x": 1}))
    .filter(lambda v: not isinstance(VALID[key], type(v)) or isinstance(v, bool)).map(lambda v: {**VALID, key: v}))
_texts = st.one_of(_duplicate, _absurd, _missing, _wrong_type).map(to_toml)
# raw bytes: anything at all, latin-1 text (not UTF-8 once it has a non-ASCII letter), or a valid study cut short
_latin1 = st.text(string.ascii_letters + "éàüß =[]\"\n", min_size=1, max_size=60).filter(
    lambda t: any(ord(c) > 127 for c in t)).map(lambda t: t.encode("latin-1"))
_cut = st.integers(1, len(to_toml(VALID)) - 2).map(lambda n: to_toml(VALID).encode()[:n] + b"\xff")
_bytes = st.one_of(st.binary(min_size=1, max_size=200), _latin1, _cut)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.one_of(_texts, _bytes))
def test_broken_study_files_get_one_line(content, capsys):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bad.toml"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        code, _, err = run_cli(["run", str(path), "--dry-run", "--out", str(Path(tmp) / "out")], capsys)
    assert_one_line(code, err)


# --- study files and --out: by hand ---------------------------------------------------------------

BY_HAND = [
    ("latin-1", TOY.encode() + b'description = "caf\xe9"\n', ["is not UTF-8", "byte"]),
    ("nested", ("x = " + "[" * 3000 + "]" * 3000).encode(), ["nested too deeply"]),
    ("seeds", TOY.replace("latent_dims = [2]", "latent_dims = [2]\nseeds = [3, 3]").encode(), ["study.seeds: 3 is listed twice"]),
    ("datasets", TOY.replace('["toy4"]', '["toy4", "toy4"]').encode(), ["study.datasets: 'toy4' is listed twice"]),
    ("same-method", TOY.replace('["vae"]', '["vae", {name = "vae", label = "v2", lr = 1e-3}]').encode(),
     ["study.methods[1]: 'v2' is methods[0] again"]),
    ("same-label", TOY.replace('["vae"]', '["vae", {name = "iwae", label = "vae"}]').encode(),
     ["study.methods[1]: label 'vae' is methods[0]'s at latent size 2"]),
    ("epochs-float", TOY.replace("epochs = 1", "epochs = 1e15").encode(), ["train.epochs: expected an integer, got 1000000000000000.0"]),
    ("epochs-huge", TOY.replace("epochs = 1", "epochs = 1000000000000000").encode(), ["train.epochs", "limit"]),
    ("quadrature", TOY.replace("[2]", "[2, 8]").encode() + b"quadrature = true\n", ["eval.quadrature", "has 8"]),
    ("lr-inf", TOY.replace('["vae"]', '[{name = "vae", lr = inf}]').encode(), ["lr: expected a finite number"]),
    ("gap-target", TOY.replace("is_samples = 5", "is_samples = 5\nais_steps = 10\nbdmc_examples = 2\n"
                                                 "bdmc_gap_target = 0.1\nais_max_steps = 5").encode(),
     ["eval: ais_max_steps (5) is below ais_steps (10)"]),
    ("quadrature-method", TOY.replace('["vae"]', '["vae", {name = "vae", label = "v8", latent_dims = [8]}]').encode()
     + b"quadrature = true\n", ["eval.quadrature", "has 8"]),
    # these need the data set's sizes or a model: caught by the preflight, naming file and field
    ("subset", TOY.encode() + b"[data]\ntrain_subset = 5000\n", ["bad.toml: data.train_subset", "toy4 has 4,000"]),
    ("batch", TOY.replace("batch_size = 10", "batch_size = 300").encode() + b"[data]\ntrain_subset = 200\n",
     ["bad.toml: train.batch_size: 300", "200 training examples"]),
    ("steps", TOY.replace("epochs = 1", "epochs = 900000000").encode(), ["train.epochs", "optimizer steps, beyond"]),
    ("examples", TOY.replace("is_samples = 5", "examples = 100").encode(),
     ["eval.examples: 100 asked for, but toy4 has 4 test examples"]),
    ("long-label", TOY.replace('["vae"]', '[{name = "vae", label = "%s"}]' % ("a" * 300)).encode(),
     ["methods[0].label: at most 64 characters"]),
    ("params", TOY.encode() + b"[architecture]\nhidden = [100000000]\n", ["parameters, beyond the limit"]),
    ("conv-on-toy", TOY.encode() + b'[architecture]\nbackbone = "conv"\n',
     ["study.methods[0] (vae) on toy4 with latent size 2", "conv backbone needs square images"]),
    # a method's own networks and latent sizes are the ones the preflight builds
    ("conv-on-toy-method", TOY.replace('["vae"]', '["vae", {name = "vae", label = "c", architecture = {backbone = "conv"}}]')
     .encode(), ["study.methods[1] (c) on toy4 with latent size 2", "conv backbone needs square images"]),
    ("params-method", TOY.replace('["vae"]', '["vae", {name = "vae", label = "big", latent_dims = [100000000]}]')
     .encode(), ["study.methods[1] (big) on toy4 with latent size 100000000", "parameters, beyond the limit"]),
    ("compile-step-avb", TOY.replace('["vae"]', '["vae", "avb"]').replace("epochs = 1", 'epochs = 1\ncompile = "step"')
     .encode(), ["bad.toml: study.methods[1] (avb) on toy4", "compile = 'step' needs the standard update"]),
]


@pytest.mark.parametrize("name, content, fragments", BY_HAND, ids=[case[0] for case in BY_HAND])
def test_bad_study_files_by_hand(tmp_path, capsys, name, content, fragments):
    path = tmp_path / "bad.toml"
    path.write_bytes(content)
    code, _, err = run_cli(["run", str(path), "--dry-run", "--out", str(tmp_path / "out")], capsys)
    assert_one_line(code, err, *fragments)


def test_a_utf8_byte_order_mark_is_accepted(tmp_path, capsys):
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + TOY.encode())
    assert run_cli(["run", str(path), "--dry-run", "--out", str(tmp_path / "out")], capsys)[0] == 0


def test_study_path_that_is_a_directory_or_unreadable(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "dir.toml"
    folder.mkdir()
    assert_one_line(*run_cli(["run", str(folder), "--dry-run"], capsys)[::2], "is a directory")
    path = tmp_path / "s.toml"
    path.write_text(TOY)

    def refuse(self):  # tests may run as root, for whom chmod 000 still reads
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)
    assert_one_line(*run_cli(["run", str(path), "--dry-run"], capsys)[::2], "cannot be read (Permission denied)")


def test_a_folder_named_like_a_preset_does_not_hide_the_preset(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quick").mkdir()  # e.g. its results, when run from the runs folder
    code, out, err = run_cli(["run", "quick", "--dry-run", "--out", str(tmp_path / "out")], capsys)
    assert code == 0, err
    assert "vae-mnist-z32-s0" in out  # the quick preset's cells
    (tmp_path / "mine").mkdir()  # a folder that names no preset is still refused in one line
    assert_one_line(*run_cli(["run", "mine", "--dry-run"], capsys)[::2], "is a directory")


@pytest.mark.parametrize("dry_run", [True, False])
def test_out_that_is_a_file_or_below_one_is_refused_before_anything_runs(tmp_path, capsys, dry_run):
    study = tmp_path / "s.toml"
    study.write_text(TOY)
    flag = ["--dry-run"] if dry_run else ["--no-progress"]
    assert_one_line(*run_cli(["run", str(study), "--out", str(study), *flag], capsys)[::2],
                    f"--out {study}: is a file")
    assert_one_line(*run_cli(["run", str(study), "--out", str(study / "sub"), *flag], capsys)[::2],
                    f"{study} is a file, not a folder")
    assert not (tmp_path / "checkpoints").exists()


def test_out_that_cannot_be_created(tmp_path, capsys):
    study = tmp_path / "s.toml"
    study.write_text(TOY)
    assert_one_line(*run_cli(["run", str(study), "--out", "/proc/vaebench-test", "--no-progress"], capsys)[::2],
                    "--out /proc/vaebench-test")


def test_cuda_asked_for_but_absent_is_refused_in_the_dry_run(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    study = tmp_path / "s.toml"
    study.write_text(TOY)
    assert_one_line(*run_cli(["run", str(study), "--dry-run", "--device", "cuda"], capsys)[::2], "cuda")


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"), min_size=1,
                    max_size=20).filter(lambda n: n not in (".", "..")))
def test_a_reference_folder_that_does_not_exist_is_one_line_not_a_silent_no_comparison(name, tmp_path, capsys):
    study = tmp_path / "s.toml"
    study.write_text(TOY)
    missing = tmp_path / "absent" / name
    assert_one_line(*run_cli(["run", str(study), "--dry-run", "--reference", str(missing)], capsys)[::2],
                    "--reference", "no such results folder")
    results = tmp_path / "results"
    results.mkdir(exist_ok=True)
    assert_one_line(*run_cli(["report", str(results), "--reference", str(missing)], capsys)[::2],
                    "--reference", "no such results folder")
    assert not any(results.iterdir())  # refused before anything was written


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.one_of(st.text(st.characters(blacklist_categories=("Cs",))).filter(lambda v: v != "step"),
                       st.integers(), st.floats(allow_nan=False), st.lists(st.booleans(), max_size=2)))
def test_train_compile_takes_true_false_or_step_only(value, tmp_path, capsys):
    study = tmp_path / "s.toml"
    study.write_text(TOY.replace("epochs = 1", f"epochs = 1\ncompile = {toml_value(value)}"), encoding="utf-8")
    assert_one_line(*run_cli(["run", str(study), "--dry-run", "--out", str(tmp_path / "o")], capsys)[::2],
                    "train.compile: expected true, false or 'step'")


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(option=st.sampled_from(["--threads", "--eval-threads", "--jobs"]), value=st.integers(max_value=0))
def test_non_positive_thread_and_job_counts_are_one_line(option, value, tmp_path, capsys):
    study = tmp_path / "s.toml"
    study.write_text(TOY)
    assert_one_line(*run_cli(["run", str(study), "--dry-run", option, str(value)], capsys)[::2],
                    f"{option} must be at least 1, got {value}")


# --- plugins ---------------------------------------------------------------------------------------

PLUGINS = [
    ("raise RuntimeError('boom\\nsecond line')", "failed on import: RuntimeError: boom second line"),
    ("import sys\nsys.exit(3)", "called sys.exit(3) on import"),
    ("import sys\nsys.exit()", "called sys.exit() on import"),
    ("def f(:\n", "failed on import: SyntaxError"),
    ("import no_such_module_anywhere", "cannot import"),
    ("from vaebench.errors import DataUnavailableError\nraise DataUnavailableError('no data here')", "no data here"),
]


@pytest.mark.parametrize("body, fragment", PLUGINS,
                         ids=["raises", "exit-3", "exit", "syntax", "import-error", "vaebench-error"])
def test_a_failing_plugin_is_one_line_naming_it(tmp_path, capsys, body, fragment):
    module = f"plugin_{abs(hash(body)) % 10**8}"
    (tmp_path / f"{module}.py").write_text(body)
    study = tmp_path / "s.toml"
    study.write_text(f'plugins = ["{module}"]\n' + TOY)
    code, _, err = run_cli(["run", str(study), "--dry-run"], capsys)
    assert_one_line(code, err, f"s.toml: study.plugins", fragment)


def test_a_missing_data_set_is_refused_in_the_dry_run(tmp_path, capsys):
    (tmp_path / "absent_data.py").write_text(
        "from vaebench.datasets import register_dataset\n"
        "from vaebench.errors import DataUnavailableError\n"
        "@register_dataset('absent')\n"
        "def load():\n"
        "    raise DataUnavailableError('absent: put its files in /nowhere')\n")
    study = tmp_path / "s.toml"
    study.write_text('plugins = ["absent_data"]\n' + TOY.replace('"toy4"', '"absent"'))
    assert_one_line(*run_cli(["run", str(study), "--dry-run"], capsys)[::2], "absent: put its files in /nowhere")


def readme_plugin() -> str:
    """The plugin module of the README's "Adding a method" section (it registers ``my-vae``)."""
    return re.search(r"## Adding a method.*?```python\n(.*?)```", README.read_text(), re.S).group(1)


def test_the_readme_plugin_example_runs_from_beside_its_study_without_pythonpath(tmp_path):
    (tmp_path / "my_methods.py").write_text(readme_plugin())
    study = tmp_path / "my-study.toml"
    study.write_text('plugins = ["my_methods"]\n' + TOY.replace('["vae"]', '["my-vae"]'))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-m", "vaebench", "run", str(study), "--dry-run"],
                         capture_output=True, text=True, cwd="/", env=env)
    assert out.returncode == 0, out.stderr
    assert "train: my-vae on toy4, latent 2, seed 0, 1 epoch of batch 10" in out.stdout


def test_the_real_exit_code_is_2_with_one_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_bytes(b"\x80\x81 not utf-8")
    out = subprocess.run([sys.executable, "-m", "vaebench", "run", str(path), "--dry-run"],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "is not UTF-8" in out.stderr and "Traceback" not in out.stderr


# --- reports ---------------------------------------------------------------------------------------

def test_report_on_a_record_missing_fields_is_one_line(tmp_path, capsys):
    records = tmp_path / "records"
    records.mkdir()
    (records / "x.json").write_text(json.dumps({"cell_id": "x", "status": "ok", "config": {"label": "vae"}}))
    for command in ("report", "table"):
        assert_one_line(*run_cli([command, str(tmp_path)], capsys)[::2], str(tmp_path))


# --- the rest of the command line --------------------------------------------------------------------

def test_version_and_help_without_markup(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and re.fullmatch(r"vaebench \d+\.\d+\.\d+\S*\n", capsys.readouterr().out)
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "``" not in capsys.readouterr().out


def test_plain_removes_restructuredtext_markup():
    assert plain("``lr``: see :class:`~vaebench.backbones.Architecture` and :mod:`vaebench.ais`") == \
        "lr: see Architecture and vaebench.ais"


def test_methods_lists_and_shows_one_methods_options(capsys):
    code, out, _ = run_cli(["methods"], capsys)
    assert code == 0 and "``" not in out and out.startswith("aae ")
    code, out, _ = run_cli(["methods", "avb"], capsys)
    assert code == 0 and "``" not in out
    assert "noise_dim (int, default 32)" in out and "dimension of the encoder's noise ε" in out
    assert "adversary_hidden (list of int, default [1024, 1024, 1024])" in out
    assert_one_line(*run_cli(["methods", "nope"], capsys)[::2], "unknown method 'nope'")


def _not_importable(name: str) -> bool:
    """No part of ``name`` (``a,b``: two) names a module that this process has or could import."""
    for part in name.split(","):
        top = part.strip().split(".")[0]
        if top.isidentifier() and (top in sys.modules or importlib.util.find_spec(top) is not None):
            return False
    return True


_names = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=_names.filter(lambda n: n not in METHODS))
def test_methods_with_an_unknown_name_is_one_line(name, capsys):
    assert_one_line(*run_cli(["methods", "--", name], capsys)[::2], f"unknown method {name!r}")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=_names.filter(_not_importable))
def test_methods_with_a_plugin_that_does_not_import_is_one_line(name, tmp_path, capsys):
    assert_one_line(*run_cli(["methods", f"--plugins={name}"], capsys)[::2], "--plugins: ")
    study = tmp_path / "s.toml"
    study.write_text(f"plugins = [{toml_value(name)}]\n" + TOY, encoding="utf-8")
    assert_one_line(*run_cli(["methods", "--study", str(study)], capsys)[::2], "s.toml: study.plugins")


def test_methods_lists_a_plugins_methods_and_their_options(tmp_path):
    (tmp_path / "my_methods.py").write_text(readme_plugin())
    (tmp_path / "my-study.toml").write_text('plugins = ["my_methods"]\n' + TOY.replace('["vae"]', '["my-vae"]'))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def methods(*argv: str, cwd: Path) -> str:  # -P: only vaebench puts the current folder on sys.path
        out = subprocess.run([sys.executable, "-P", "-m", "vaebench", "methods", *argv], capture_output=True,
                             text=True, cwd=cwd, env=env)
        assert out.returncode == 0, out.stderr
        return out.stdout

    listed = methods("--plugins", "my_methods", cwd=tmp_path)
    lines = listed.split("\n\n")[0].splitlines()
    assert re.search(r"^my-vae +One line that vaebench methods shows\.  \(plugin my_methods\)$", listed, re.M)
    assert any(line.startswith("vae ") for line in lines) and "(plugin" not in listed.replace("(plugin my_methods)", "")
    # one column for the descriptions, two spaces after the longest name
    width = max(len(line.split()[0]) for line in lines)
    assert {len(line) - len(line[width:].lstrip()) for line in lines} == {width + 2}
    options = methods("my-vae", "--study", str(tmp_path / "my-study.toml"), cwd=Path("/"))
    assert options.startswith("my-vae: One line") and "beta (float, default 1.0)" in options


def test_field_descriptions_cover_every_avb_field_and_inherited_ones():
    docs = field_descriptions(AVBConfig)
    assert set(docs) == {f.name for f in dataclasses.fields(AVBConfig)}
    assert docs["lr"].startswith("Adam learning rate of encoder and decoder")  # the subclass's own wins


def test_dry_run_says_one_epoch_and_one_cell(tmp_path, capsys):
    study = tmp_path / "s.toml"
    study.write_text(TOY)
    code, out, _ = run_cli(["run", str(study), "--dry-run"], capsys)
    assert code == 0 and "1 epoch of batch 10" in out and "1 cell →" in out
    assert "1 epochs" not in out and "1 cells" not in out
