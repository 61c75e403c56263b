"""Studies: a TOML file naming methods × data sets × latent sizes × seeds, expanded into cells.

A cell is one fully resolved :class:`RunConfig`; its id is a hash of that config, so
the same cell has the same id in every run and a finished cell can be recognised.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import itertools
import json
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from vaebench.datasets import DATASETS, DataConfig
from vaebench.methods import METHODS, method_config

from .backbones import Architecture
from .config import from_dict, require, to_dict
from .errors import ConfigError
from .evaluation import EvalConfig
from .training import TrainConfig


@dataclass(frozen=True)
class MethodSpec:
    """One method entry of a study: registered ``name``, a ``label`` for tables, hyperparameters."""

    name: str
    label: str
    params: dict[str, Any] = field(default_factory=dict)


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:10]


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines one cell's result."""

    method: str
    label: str
    method_config: dict[str, Any]
    dataset: str
    latent_dim: int
    seed: int
    architecture: Architecture
    data: DataConfig
    train: TrainConfig
    eval: EvalConfig

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def training_dict(self) -> dict[str, Any]:
        """What determines the trained model: everything but the evaluation settings."""
        data = self.to_dict()
        del data["eval"]
        data["data"].pop("test_subset", None)  # the test images never reach training
        return data

    def evaluation_dict(self) -> dict[str, Any]:
        """What determines how a trained model is evaluated."""
        return {"eval": to_dict(self.eval), "test_subset": self.data.test_subset}

    @property
    def train_id(self) -> str:
        """``label-dataset-zN-sM-hash``: readable, and the hash pins every training setting.

        Evaluation settings are not part of it: changing them re-evaluates the trained
        model instead of training it again.
        """
        return f"{self.label}-{self.dataset}-z{self.latent_dim}-s{self.seed}-{_digest(self.training_dict())}"

    @property
    def eval_id(self) -> str:
        """A hash of the evaluation settings; a record with another eval_id is re-evaluated."""
        return _digest(self.evaluation_dict())

    @property
    def protocol_id(self) -> str:
        """A hash of every setting but the seed: records that share it may be averaged over seeds."""
        training = self.training_dict()
        del training["seed"]
        return _digest({"training": training, "evaluation": self.evaluation_dict()})

    @property
    def cell_id(self) -> str:
        """The cell's name in ``records/`` and ``checkpoints/``: its :attr:`train_id`."""
        return self.train_id

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        return from_dict(cls, data, where="run")


@dataclass(frozen=True)
class Published:
    """Numbers from the literature that a study reproduces, shown beside its own in the report.

    ``source``: the citation; ``metric``: the record key they correspond to (e.g.
    ``log_likelihood_is_full``); ``values``: method label → published value.
    """

    source: str = ""
    metric: str = "log_likelihood_ais"
    values: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for label, value in self.values.items():
            require(isinstance(value, (int, float)) and not isinstance(value, bool),
                    f"published.values.{label}: expected a number, got {value!r}")


@dataclass(frozen=True)
class Study:
    """A parsed, validated study file. ``description`` is shown at the top of its report."""

    name: str
    methods: tuple[MethodSpec, ...]
    datasets: tuple[str, ...]
    latent_dims: tuple[int, ...]
    seeds: tuple[int, ...] = (0,)
    architecture: Architecture = Architecture()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    #: modules imported before the study runs (in every worker too): methods or data sets of your own
    plugins: tuple[str, ...] = ()
    description: str = ""
    published: Published = Published()

    def cells(self) -> list[RunConfig]:
        """The study's matrix, in a stable order: dataset, latent size, method, seed."""
        return [
            RunConfig(method=spec.name, label=spec.label,
                      method_config=to_dict(method_config(spec.name, spec.params)),
                      dataset=dataset, latent_dim=latent_dim, seed=seed, architecture=self.architecture,
                      data=self.data, train=self.train, eval=self.eval)
            for dataset, latent_dim, spec, seed in itertools.product(
                self.datasets, self.latent_dims, self.methods, self.seeds)
        ]


_STUDY_KEYS = {f.name for f in dataclasses.fields(Study)}


def _method_spec(entry: Any, index: int) -> MethodSpec:
    where = f"methods[{index}]"
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a method name or a table with a name, got {entry!r}")
    params = dict(entry)
    name = params.pop("name", None)
    if not isinstance(name, str):
        raise ConfigError(f"{where}: a method table needs a 'name' string")
    METHODS.get(name)  # unknown names fail here, listing the registered methods
    label = params.pop("label", name)
    if not isinstance(label, str) or not label.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"{where}.label: expected letters, digits, '-' or '_', got {label!r}")
    method_config(name, params)  # unknown or ill-typed hyperparameters fail before anything runs
    return MethodSpec(name=name, label=label, params=params)


def import_plugins(modules: tuple[str, ...]) -> None:
    """Import the study's plugin modules, which register methods or data sets of the user's own."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"study.plugins: cannot import {name!r} ({exc})") from None


def parse_study(data: dict[str, Any], default_name: str = "study") -> Study:
    """Validate a study's raw TOML table; every problem is one :class:`ConfigError` line."""
    if not isinstance(data, dict):
        raise ConfigError("a study must be a table of settings")
    plugins = data.get("plugins", [])
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise ConfigError(f"study.plugins: expected a list of module names, got {plugins!r}")
    import_plugins(tuple(plugins))  # plugins register names that the rest of the study may use
    unknown = sorted(set(data) - _STUDY_KEYS)
    if unknown:
        raise ConfigError(f"study: unknown key {unknown[0]!r}; valid keys are {', '.join(sorted(_STUDY_KEYS))}")
    raw = dict(data)
    raw.setdefault("name", default_name)
    for key in ("methods", "datasets", "latent_dims"):
        if key not in raw:
            raise ConfigError(f"study: missing required key {key!r}")
    methods = raw.pop("methods")
    if not isinstance(methods, list) or not methods:
        raise ConfigError("study.methods: expected a non-empty list of methods")
    specs = tuple(_method_spec(entry, i) for i, entry in enumerate(methods))
    labels = [s.label for s in specs]
    require(len(set(labels)) == len(labels), f"study.methods: labels must be unique, got {labels}")
    study = from_dict(Study, {**raw, "methods": ()}, where="study")
    unknown_labels = sorted(set(study.published.values) - set(labels))
    if unknown_labels:
        raise ConfigError(f"study.published.values: {unknown_labels[0]!r} is not a method label of the study")
    require(bool(study.datasets), "study.datasets: expected a non-empty list")
    for name in study.datasets:
        DATASETS.get(name)
    require(bool(study.latent_dims) and all(d > 0 for d in study.latent_dims),
            f"study.latent_dims: expected positive sizes, got {list(study.latent_dims)}")
    require(bool(study.seeds) and all(s >= 0 for s in study.seeds),
            f"study.seeds: expected non-negative integers, got {list(study.seeds)}")
    require(study.name.replace("-", "").replace("_", "").isalnum(),
            f"study.name: expected letters, digits, '-' or '_', got {study.name!r}")
    return dataclasses.replace(study, methods=specs)


def preset_names() -> list[str]:
    return sorted(p.name.removesuffix(".toml") for p in resources.files("vaebench.presets").iterdir()
                  if p.name.endswith(".toml"))


def load_study(source: str | Path) -> Study:
    """A study from a TOML file path or a preset name (``quick``, ``toy``, …)."""
    path = Path(source)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ConfigError(f"study file {path} does not exist")
        text, default = path.read_text(), path.stem
    elif str(source) in preset_names():
        text = resources.files("vaebench.presets").joinpath(f"{source}.toml").read_text()
        default = str(source)
    else:
        raise ConfigError(f"{source!r} is neither a study file nor a preset; presets: {', '.join(preset_names())}")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML ({exc})") from None
    return parse_study(data, default_name=default)
