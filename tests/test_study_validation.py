"""Hypothesis-generated bad study files: each is refused with one clear line, never a traceback."""

from __future__ import annotations

import dataclasses
import json
import string
import typing
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vaebench.cli import main
from vaebench.datasets import list_datasets
from vaebench.methods import list_methods
from vaebench.methods.vae import VAEConfig
from vaebench.study import Study, load_study, preset_names

VALID = {
    "methods": ["vae"],
    "datasets": ["mnist"],
    "latent_dims": [2],
    "seeds": [0],
    "train": {"epochs": 1, "batch_size": 10},
    "data": {"train_subset": 100},
    "eval": {"is_samples": 10},
    "architecture": {"hidden": [8]},
}


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if value == value and abs(value) != float("inf") else str(value).lower()
    if isinstance(value, str):
        # JSON's escapes of quotes, backslashes and C0 controls are TOML's too; its \uXXXX escapes of
        # characters beyond the BMP (surrogate pairs) are not, so those stay raw, and DEL is escaped
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def to_toml(study: dict) -> str:
    top = [f"{json.dumps(k)} = {toml_value(v)}" for k, v in study.items() if not isinstance(v, dict)]
    tables = [f"[{k}]\n" + "\n".join(f"{json.dumps(kk)} = {toml_value(vv)}" for kk, vv in v.items())
              for k, v in study.items() if isinstance(v, dict)]
    return "\n".join(top) + "\n\n" + "\n\n".join(tables) + "\n"


SECTIONS = {name: {f.name for f in dataclasses.fields(tp)}
            for name, tp in typing.get_type_hints(Study).items() if name in ("train", "data", "eval", "architecture")}
names = st.text(string.ascii_lowercase + "_", min_size=1, max_size=12)
not_int = st.one_of(st.text(max_size=5), st.floats(allow_nan=False, allow_infinity=False), st.booleans(),
                    st.lists(st.integers(), max_size=2))
non_positive = st.integers(max_value=0)


def mutate(path: tuple[str, ...], value):
    study = json.loads(json.dumps(VALID))
    target = study
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value
    return study


bad_studies = st.one_of(
    names.filter(lambda k: k not in VALID and k not in {"name", "plugins"}).map(lambda k: mutate((k,), 1)),
    st.sampled_from(sorted(SECTIONS)).flatmap(
        lambda section: names.filter(lambda k: k not in SECTIONS[section]).map(lambda k: mutate((section, k), 1))),
    names.filter(lambda n: n not in list_methods()).map(lambda n: mutate(("methods",), [n])),
    names.filter(lambda n: n not in list_datasets()).map(lambda n: mutate(("datasets",), [n])),
    st.one_of(non_positive.map(lambda v: [v]), st.just([]), st.text(max_size=5), st.booleans(),
              st.floats(allow_nan=False, allow_infinity=False), st.lists(st.text(max_size=3), min_size=1, max_size=2),
              ).map(lambda v: mutate(("latent_dims",), v)),
    st.one_of(non_positive, not_int).map(lambda v: mutate(("train", "batch_size"), v)),
    st.one_of(non_positive, not_int).map(lambda v: mutate(("train", "epochs"), v)),
    st.one_of(non_positive, not_int).map(lambda v: mutate(("data", "train_subset"), v)),
    st.integers(max_value=-1).map(lambda v: mutate(("eval", "is_samples"), v)),
    st.one_of(st.just([]), st.just([0]), st.lists(st.integers(max_value=0), min_size=1, max_size=3))
    .map(lambda v: mutate(("architecture", "hidden"), v)),
    st.text(string.ascii_letters, min_size=1, max_size=8).filter(
        lambda a: a not in {"relu", "elu", "softplus", "tanh", "leaky_relu"}
    ).map(lambda v: mutate(("architecture", "activation"), v)),
    st.floats(max_value=0, allow_nan=False).map(lambda v: mutate(("methods",), [{"name": "vae", "lr": v}])),
    names.filter(lambda k: k not in {f.name for f in dataclasses.fields(VAEConfig)} | {"name", "label"})
    .map(lambda k: mutate(("methods",), [{"name": "vae", k: 1}])),
    st.one_of(st.integers(), st.just([]), st.just({"name": 3})).map(lambda v: mutate(("methods",), v)),
    st.one_of(non_positive.map(lambda v: [v]), st.just([]), st.just([8, 8]), st.text(max_size=5), st.booleans(),
              st.integers(), st.lists(st.text(max_size=3), min_size=1, max_size=2), st.just([True]))
    .map(lambda v: mutate(("methods",), [{"name": "vae", "latent_dims": v}])),
    st.one_of(st.integers(), st.text(max_size=3), st.lists(st.integers(), max_size=2),
              names.filter(lambda k: k not in SECTIONS["architecture"]).map(lambda k: {k: 1}),
              st.just({"hidden": [0]}), st.just({"conv_decoder": "conv2"}),
              # the conv options on the study's mlp backbone would do nothing
              st.just({"conv_decoder": "conv0"}), st.just({"conv_encoder_batch_norm": False}))
    .map(lambda v: mutate(("methods",), [{"name": "vae", "architecture": v}])),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(study=bad_studies)
def test_every_bad_study_gets_one_clear_error_line(study, capsys):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bad.toml"
        path.write_text(to_toml(study))
        code = main(["run", str(path), "--dry-run", "--out", str(Path(tmp) / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2, (to_toml(study), err)
    assert len(err.splitlines()) == 1 and err.startswith("vaebench: error: "), err
    assert "Traceback" not in err


def test_the_valid_base_study_is_accepted(tmp_path, capsys):
    path = tmp_path / "ok.toml"
    path.write_text(to_toml(VALID))
    assert main(["run", str(path), "--dry-run", "--out", str(tmp_path / "out")]) == 0


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_loads_and_expands_into_cells(name):
    study = load_study(name)
    cells = study.cells()
    assert study.name == name and cells
    assert len({run.cell_id for run in cells}) == len(cells)  # no two cells share a checkpoint folder


def test_options_added_later_leave_the_training_identity_alone_at_their_default():
    """A cell trained before an option existed keeps its id (records, checkpoints) when the option
    is at the default that reproduces the old behaviour; any other value is a new model."""
    from vaebench.study import parse_study

    def cell_id(method: dict) -> str:
        study = parse_study({"name": "ids", "methods": [method], "datasets": ["toy4"], "latent_dims": [2],
                             "seeds": [0]})
        return study.cells()[0].cell_id

    plain = cell_id({"name": "iwae", "label": "m", "k": 5})
    assert cell_id({"name": "iwae", "label": "m", "k": 5, "gradient": "standard", "kl_weight": 1.0,
                    "kl_warmup_steps": 0, "kl_warmup_hold": 0, "scale": "softplus"}) == plain
    for option in ({"gradient": "dreg"}, {"kl_weight": 0.5}, {"kl_warmup_steps": 10}, {"k": 6},
                   {"scale": "logvar-hardtanh"}):
        assert cell_id({"name": "iwae", "label": "m", "k": 5, **option}) != plain

    # options of the other sections: early stopping, off by default
    def train_id(train: dict) -> str:
        study = parse_study({"name": "ids", "methods": ["vae"], "datasets": ["toy4"], "latent_dims": [2],
                             "seeds": [0], "train": train})
        return study.cells()[0].cell_id

    assert train_id({"early_stopping_patience": 0, "early_stopping_start": 0}) == train_id({})
    data = parse_study({"name": "ids", "methods": ["vae"], "datasets": ["toy4"], "latent_dims": [2],
                        "seeds": [0], "data": {"grey_levels": "stored"}}).cells()[0].cell_id
    assert data == train_id({})
    assert train_id({"early_stopping_patience": 50}) != train_id({})
    assert train_id({"early_stopping_patience": 50, "early_stopping_start": 100}) != train_id(
        {"early_stopping_patience": 50})
    # the ids of the committed presets' records: this one was written before the options existed
    committed = json.loads((Path(__file__).resolve().parents[1] / "results/burda2016/study.json").read_text())
    ids = {c["cell_id"] for c in committed["cells"]}
    assert {c.cell_id for c in load_study("burda2016").cells()} == ids


def test_evaluation_options_added_later_leave_every_committed_record_current():
    """A gap target or a refined AIS start changes a cell's evaluation (its eval_id), never its training (its cell id); absent,
    the cells of every committed preset's records keep their cell, evaluation and protocol ids."""
    from vaebench.study import parse_study

    def ids(evaluation: dict) -> tuple[str, str]:
        study = parse_study({"name": "ids", "methods": ["vae"], "datasets": ["toy4"], "latent_dims": [2],
                             "seeds": [0], "eval": {"ais_steps": 10, "bdmc_examples": 2, **evaluation}})
        run = study.cells()[0]
        return run.cell_id, run.eval_id

    plain = ids({})
    targeted = ids({"bdmc_gap_target": 0.1, "ais_max_steps": 40})
    assert targeted[0] == plain[0] and targeted[1] != plain[1]
    refined = ids({"ais_initial": "posterior", "ais_refine_steps": 100})
    assert refined[0] == plain[0] and refined[1] not in (plain[1], ids({"ais_initial": "posterior"})[1])
    for path in sorted((Path(__file__).resolve().parents[1] / "results").glob("*/study.json")):
        committed = {(c["cell_id"], c["eval_id"], c["protocol_id"]) for c in json.loads(path.read_text())["cells"]}
        # a preset may have gained cells since its results were committed; none of those records turns stale
        assert committed <= {(run.cell_id, run.eval_id, run.protocol_id)
                             for run in load_study(path.parent.name).cells()}, path.parent.name


RESULTS = Path(__file__).resolve().parents[1] / "results"


@pytest.mark.parametrize("name", sorted(p.parent.name for p in RESULTS.glob("*/study.json")
                                        if p.parent.name in preset_names()))
def test_committed_presets_keep_their_cell_ids(name):
    """Every cell of a preset's committed results is still a cell of the preset, under the same id
    (so its record and checkpoint still count); a preset may gain cells, never rename them."""
    committed = {c["cell_id"] for c in json.loads((RESULTS / name / "study.json").read_text())["cells"]}
    assert committed <= {c.cell_id for c in load_study(name).cells()}


def test_paper_rows_other_than_avb_keep_their_ids():
    """paper has no committed results; its rows that the authors' AVB networks do not touch keep the
    ids they had before the conv options existed (seed 0, as computed then)."""
    ids = {c.cell_id for c in load_study("paper").cells()}
    assert {"vae-mnist-z8-s0-07caaacd63", "aae-mnist-z8-s0-499e0e4546", "iaf-mnist-z8-s0-1186cbe685",
            "iwae-mnist-z8-s0-e24d517358", "vae-mnist-z32-s0-2ff3932cd9", "aae-mnist-z32-s0-be43304531",
            "iaf-mnist-z32-s0-5fb9eae7e7", "iwae-mnist-z32-s0-db5a6474cf"} <= ids


def test_architecture_options_added_later_leave_the_training_identity_alone_at_their_default():
    from vaebench.study import parse_study

    def cell_id(architecture: dict) -> str:
        study = parse_study({"name": "ids", "methods": [{"name": "vae", "label": "m"}], "datasets": ["mnist"],
                             "latent_dims": [2], "architecture": {"backbone": "conv", **architecture}})
        return study.cells()[0].cell_id

    plain = cell_id({})
    assert cell_id({"conv_decoder": "conv1", "conv_encoder_batch_norm": True}) == plain
    assert len({plain, cell_id({"conv_decoder": "conv0"}), cell_id({"conv_encoder_batch_norm": False})}) == 3


def test_methods_may_have_their_own_latent_sizes_and_architecture():
    from vaebench.study import parse_study

    study = parse_study({
        "name": "own", "datasets": ["mnist"], "latent_dims": [32], "seeds": [0, 1],
        "architecture": {"backbone": "conv"},
        "methods": ["vae",
                    {"name": "vae", "label": "vae-8", "latent_dims": [8, 2]},
                    {"name": "avb", "latent_dims": [8],
                     "architecture": {"conv_decoder": "conv0", "conv_encoder_batch_norm": False}}],
    })
    cells = study.cells()
    # dataset, latent size (the study's, then the methods' own in order), method, seed
    assert [(c.label, c.latent_dim, c.seed) for c in cells] == [
        ("vae", 32, 0), ("vae", 32, 1), ("vae-8", 8, 0), ("vae-8", 8, 1), ("avb", 8, 0), ("avb", 8, 1),
        ("vae-8", 2, 0), ("vae-8", 2, 1)]
    arch = {c.label: c.architecture for c in cells}
    assert arch["vae"] == arch["vae-8"] == study.architecture
    assert (arch["avb"].backbone, arch["avb"].conv_decoder, arch["avb"].conv_encoder_batch_norm) == (
        "conv", "conv0", False)
    # a method's own latent sizes replace the study's, so the vae at 32 is the same cell as before
    alone = parse_study({"name": "own", "datasets": ["mnist"], "latent_dims": [32], "seeds": [0, 1],
                         "architecture": {"backbone": "conv"}, "methods": ["vae"]})
    assert [c.cell_id for c in alone.cells()] == [c.cell_id for c in cells[:2]]
    # a method that sets the study's own value is the same model, so the same cell
    same = parse_study({"name": "own", "datasets": ["mnist"], "latent_dims": [32], "seeds": [0, 1],
                        "architecture": {"backbone": "conv"},
                        "methods": [{"name": "vae", "architecture": {"backbone": "conv"}}]})
    assert [c.cell_id for c in same.cells()] == [c.cell_id for c in cells[:2]]


def test_entries_at_different_latent_sizes_may_share_a_label():
    """One table row per label and latent size: the authors' AVB-AC has other noise sizes at 32 than at 8."""
    from vaebench.errors import ConfigError
    from vaebench.study import parse_study

    base = {"name": "labels", "datasets": ["mnist"], "latent_dims": [8]}
    study = parse_study({**base, "methods": ["avb-ac", {"name": "avb-ac", "latent_dims": [32], "noise_dim": 64}]})
    assert [(c.label, c.latent_dim, c.resolved_config.noise_dim) for c in study.cells()] == [
        ("avb-ac", 8, 32), ("avb-ac", 32, 64)]
    with pytest.raises(ConfigError, match="label 'avb-ac' is methods\\[0\\]'s at latent size 8"):
        parse_study({**base, "methods": ["avb-ac", {"name": "avb-ac", "latent_dims": [8, 32], "noise_dim": 64}]})


def test_a_method_repeated_with_other_networks_or_latent_sizes_is_not_a_duplicate():
    from vaebench.errors import ConfigError
    from vaebench.study import parse_study

    base = {"name": "dup", "datasets": ["mnist"], "latent_dims": [8], "architecture": {"backbone": "conv"}}
    parse_study({**base, "methods": ["avb", {"name": "avb", "label": "b", "architecture": {"conv_decoder": "conv0"}}]})
    parse_study({**base, "methods": ["avb", {"name": "avb", "label": "b", "latent_dims": [32]}]})
    with pytest.raises(ConfigError, match="is methods\\[0\\] again"):
        parse_study({**base, "methods": ["avb", {"name": "avb", "label": "b", "latent_dims": [8]}]})


def test_the_tomczak2018_preset_plans_the_authors_protocol_and_passes_its_dry_run(tmp_path, capsys):
    study = load_study("tomczak2018")
    cells = study.cells()
    assert [c.label for c in cells] == ["vae", "vampprior"] and {c.latent_dim for c in cells} == {40}
    assert study.architecture.backbone == "gated" and study.architecture.hidden == (300, 300)
    assert study.architecture.init == "he"
    for cell in cells:
        config = cell.resolved_config
        assert (config.optimizer, config.lr, config.scale, config.analytic_kl) == (
            "adam-normgrad", 5e-4, "logvar-hardtanh", False)
        # their warm-up of 100 epochs, in steps of batches of 100 over 50,000 training images
        assert config.kl_warmup_steps == 100 * 50_000 // study.train.batch_size
        assert config.kl_warmup_hold == 50_000 // study.train.batch_size  # one epoch's steps: their β per epoch
    assert cells[1].resolved_config.components == 500
    assert (study.train.epochs, study.train.early_stopping_patience, study.train.early_stopping_start) == (
        2000, 50, 100)
    assert study.eval.full_test_is_samples == 5000 and study.data.grey_levels == "max-to-one"
    # every check that runs before training, the models built and stepped once
    assert main(["run", "tomczak2018", "--dry-run", "--out", str(tmp_path / "out")]) == 0, capsys.readouterr().err


def _parameters(cell) -> int:
    from vaebench.methods import create_method

    method = create_method(cell.method, cell.resolved_config, data_shape=(1, 28, 28), latent_dim=cell.latent_dim,
                           architecture=cell.architecture)
    return sum(p.numel() for p in method.parameters())


def test_the_burda2016_2l_preset_plans_the_authors_two_layer_networks_and_passes_its_dry_run(tmp_path, capsys):
    study, one_layer = load_study("burda2016-2l"), load_study("burda2016")
    cells = study.cells()
    assert [c.label for c in cells] == ["vae-2l", "iwae-2l-k5", "iwae-2l-k50"]
    assert [c.method for c in cells] == ["vae-2l", "iwae-2l", "iwae-2l"]
    assert {c.latent_dim for c in cells} == {100}  # z1; z2 is top_latent_dim
    for cell in cells:
        config = cell.resolved_config
        assert (config.top_latent_dim, config.top_hidden, config.scale, config.optimizer, config.betas) == (
            50, (100, 100), "exp", "burda-adam", (0.99, 0.999))
        # yburda/iwae experiments.py --layers 2: 784-200-200-100 and 100-100-100-50 tanh chains, each Gaussian
        # layer with a mean and a σ head, the decoder 50-100-100-100 and 100-200-200-784: 521,084 parameters
        assert _parameters(cell) == 521_084
    assert [c.resolved_config.k for c in cells[1:]] == [5, 50]
    # everything but the networks is the one-layer preset's protocol
    assert (study.train, study.data, study.eval) == (one_layer.train, one_layer.data, one_layer.eval)
    assert study.architecture == one_layer.architecture
    assert study.published.values == {"vae-2l": -85.33, "iwae-2l-k5": -83.89, "iwae-2l-k50": -82.90}
    assert study.published.metric == "log_likelihood_is_full"
    # every check that runs before training, the models built and stepped once, the compiled step's needs met
    assert main(["run", "burda2016-2l", "--dry-run", "--out", str(tmp_path / "out")]) == 0, capsys.readouterr().err


def test_the_rainforth2018_preset_plans_pythaes_protocol_and_passes_its_dry_run(tmp_path, capsys):
    study = load_study("rainforth2018")
    cells = study.cells()
    assert [(c.label, c.method) for c in cells] == [
        ("iwae-k64", "iwae"), ("vae-m64", "miwae"), ("miwae-m8-k8", "miwae"), ("piwae-m8-k8", "piwae"),
        ("ciwae-b0p05", "ciwae"), ("ciwae-b0p5", "ciwae")]
    configs = {c.label: c.resolved_config for c in cells}
    assert configs["iwae-k64"].k == 64
    # M·K = 64 draws per example in every row
    assert [(configs[label].m, configs[label].k) for label in ("vae-m64", "miwae-m8-k8", "piwae-m8-k8")] == [
        (64, 1), (8, 8), (8, 8)]
    assert [(configs[label].k, configs[label].beta) for label in ("ciwae-b0p05", "ciwae-b0p5")] == [
        (64, 0.05), (64, 0.5)]
    for config in configs.values():  # pythae's Adam: lr 1e-3, ε 1e-4, torch's β
        assert (config.optimizer, config.lr, config.eps, config.betas) == ("adam", 1e-3, 1e-4, (0.9, 0.999))
    assert {c.latent_dim for c in cells} == {50} and study.architecture.hidden == (200, 200)
    assert (study.architecture.activation, study.architecture.init) == ("tanh", "glorot")
    # pythae's MultiStepLR(milestones=[2, 5, 14, 28, 41, 122, 365, 1094], gamma=10^(-1/7)), stepped per epoch
    milestones = [2, 5, 14, 28, 41, 122, 365, 1094]
    gamma = 10 ** (-1 / 7)
    from vaebench.schedules import lr_scale

    assert study.train.epochs == 3280 and study.train.batch_size == 20 and study.train.shuffle
    for epoch in range(1, 3281):  # 1-based here, pythae's epoch index is epoch − 1
        expected = gamma ** sum(m <= epoch - 1 for m in milestones)
        assert lr_scale(study.train.lr_stages, epoch) == pytest.approx(expected, rel=1e-12), epoch
    assert study.data.grey_levels == "max-to-one" and study.data.train_binarization == "dynamic"
    assert study.eval.full_test_is_samples == 5000
    assert study.published.values == {"miwae-m8-k8": -84.97, "piwae-m8-k8": -84.46, "ciwae-b0p05": -84.57}
    assert main(["run", "rainforth2018", "--dry-run", "--out", str(tmp_path / "out")]) == 0, capsys.readouterr().err
