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
import math
import sys
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any

from vaebench.datasets import DATASETS, DataConfig
from vaebench.methods import METHODS, MethodConfig, method_config

from .backbones import Architecture
from .config import DERIVED, from_dict, identity_dict, require, to_dict
from .errors import ConfigError
from .evaluation import EvalConfig
from .training import TrainConfig


@dataclass(frozen=True)
class MethodSpec:
    """One method entry of a study: registered ``name``, a ``label`` for tables, hyperparameters.

    ``config``: the method's typed config, resolved from ``params`` once, here (an unknown or
    ill-typed hyperparameter fails here); every cell of the study and the preflight's models use it.
    ``latent_dims``: the latent sizes of this method's cells, where they are not the study's
    (empty: the study's ``latent_dims``). ``architecture``: keys of the study's ``[architecture]``
    that this method sets otherwise (e.g. a paper's per-method networks); empty for the rest.
    """

    name: str
    label: str
    params: dict[str, Any] = field(default_factory=dict)
    config: MethodConfig | None = field(default=None, compare=False, repr=False, metadata=DERIVED)
    latent_dims: tuple[int, ...] = ()
    architecture: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.config is None:
            object.__setattr__(self, "config", method_config(self.name, self.params))


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
    #: ``method_config`` as the study resolved it (None in a config read back from a record)
    resolved_config: MethodConfig | None = field(default=None, compare=False, repr=False, metadata=DERIVED)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def training_dict(self) -> dict[str, Any]:
        """What determines the trained model: everything but the evaluation settings (and options
        added since, at the default that reproduces what came before: :data:`~vaebench.config.NEW_OPTION`)."""
        data = self.to_dict()
        del data["eval"]
        data["architecture"] = identity_dict(Architecture, data["architecture"])
        if self.method in METHODS:
            data["method_config"] = identity_dict(METHODS.get(self.method).config_class, data["method_config"])
        for section, cls in (("architecture", Architecture), ("data", DataConfig), ("train", TrainConfig)):
            data[section] = identity_dict(cls, data[section])
        data["data"].pop("test_subset", None)  # the test images never reach training
        return data

    def evaluation_dict(self) -> dict[str, Any]:
        """What determines how a trained model is evaluated (less evaluation options added since, at
        the default that reproduces what came before: :data:`~vaebench.config.NEW_OPTION`)."""
        return {"eval": identity_dict(EvalConfig, to_dict(self.eval)), "test_subset": self.data.test_subset}

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

    def method_latent_dims(self, spec: MethodSpec) -> tuple[int, ...]:
        """The latent sizes of ``spec``'s cells: its own, or else the study's."""
        return spec.latent_dims or self.latent_dims

    def method_architecture(self, spec: MethodSpec) -> Architecture:
        """The study's architecture with ``spec``'s own settings in place of the study's."""
        if not spec.architecture:
            return self.architecture
        return from_dict(Architecture, {**to_dict(self.architecture), **spec.architecture},
                         where=f"study.methods ({spec.label}).architecture")

    def all_latent_dims(self) -> tuple[int, ...]:
        """Every latent size of the study's cells: the study's, then the methods' own, in order."""
        sizes = [*self.latent_dims, *(d for spec in self.methods for d in spec.latent_dims)]
        return tuple(dict.fromkeys(sizes))

    def cells(self) -> list[RunConfig]:
        """The study's matrix, in a stable order: dataset, latent size, method, seed. A method
        with latent sizes of its own has cells at those sizes only."""
        return [
            RunConfig(method=spec.name, label=spec.label, method_config=to_dict(spec.config),
                      resolved_config=spec.config, dataset=dataset, latent_dim=latent_dim, seed=seed,
                      architecture=self.method_architecture(spec), data=self.data, train=self.train,
                      eval=self.eval)
            for dataset, latent_dim, spec, seed in itertools.product(
                self.datasets, self.all_latent_dims(), self.methods, self.seeds)
            if latent_dim in self.method_latent_dims(spec)
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
    require(len(label) <= MAX_NAME, f"{where}.label: at most {MAX_NAME} characters (it names files), "
                                    f"got {len(label)}")
    latent_dims = params.pop("latent_dims", None)
    if latent_dims is not None:
        require(isinstance(latent_dims, list) and bool(latent_dims)
                and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in latent_dims),
                f"{where}.latent_dims: expected a non-empty list of positive sizes, got {latent_dims!r}")
        _unique(latent_dims, f"{where}.latent_dims")
    architecture = params.pop("architecture", {})
    if not isinstance(architecture, dict):
        raise ConfigError(f"{where}.architecture: expected a table of architecture settings, got {architecture!r}")
    # resolves the config, once
    return MethodSpec(name=name, label=label, params=params, latent_dims=tuple(latent_dims or ()),
                      architecture=architecture)


#: the plugin modules this process has imported, by name: each is imported once per process
_PLUGINS: dict[str, ModuleType] = {}


def import_plugins(modules: tuple[str, ...], folder: Path | None = None, where: str = "study.plugins") -> None:
    """Import the study's plugin modules, which register methods or data sets of the user's own.

    Each module is imported once per process: a later call for it does nothing. ``folder``
    (the study file's own folder) comes first on ``sys.path`` while they are imported, so
    that a plugin beside the study imports without PYTHONPATH, as a script's folder does for
    Python. It then moves to the end of ``sys.path``: loky workers start with their parent's
    ``sys.path`` and import the plugins again, while later imports of other modules are not
    shadowed by files that happen to sit beside the study. Anything a plugin raises on
    import, ``sys.exit`` included, is one :class:`ConfigError`, prefixed with ``where``.
    """
    todo = [name for name in modules if name not in _PLUGINS or sys.modules.get(name) is not _PLUGINS[name]]
    entry = str(Path(folder).resolve()) if folder is not None and todo else None
    if entry is not None:
        sys.path.insert(0, entry)
    try:
        for name in todo:
            _PLUGINS[name] = _import_plugin(name, where)
    finally:
        if entry is not None:
            sys.path.remove(entry)
            if entry not in sys.path:
                sys.path.append(entry)


def _import_plugin(name: str, where: str) -> ModuleType:
    if not isinstance(name, str) or not all(part.isidentifier() for part in name.split(".")):
        raise ConfigError(f"{where}: {name!r} is not a module name")
    try:
        return importlib.import_module(name)
    except ConfigError as exc:
        raise ConfigError(f"{where}: plugin {name!r}: {exc}") from None
    except ImportError as exc:
        raise ConfigError(f"{where}: cannot import {name!r} ({exc})") from None
    except SystemExit as exc:
        code = "" if exc.code is None else repr(exc.code)
        raise ConfigError(f"{where}: plugin {name!r} called sys.exit({code}) on import") from None
    except Exception as exc:  # noqa: BLE001 - a plugin's own bug, reported as one line naming it
        raise ConfigError(f"{where}: plugin {name!r} failed on import: "
                          f"{type(exc).__name__}: {exc}") from None


#: the longest study name or method label: they name folders and files, whose names have a length limit
MAX_NAME = 64
#: the largest value an integer setting may take: beyond it a budget or a size is a typo, not a plan
MAX_INT = 10**9
#: seeds go to torch.manual_seed, which takes at most 64 bits
MAX_SEED = 2**63 - 1


def _check_magnitudes(value: Any, where: str) -> None:
    """Refuse integers so large that they can only be mistakes (``epochs = 1000000000000000``),
    and the non-finite numbers TOML allows (``lr = inf``)."""
    if isinstance(value, dict):
        for key, item in value.items():
            _check_magnitudes(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_magnitudes(item, f"{where}[{i}]")
    elif isinstance(value, int) and not isinstance(value, bool):
        limit = MAX_SEED if where.endswith("binarization_seed") else MAX_INT
        require(abs(value) <= limit, f"{where}: {value} is beyond the limit of {limit:,}")
    elif isinstance(value, float):
        require(math.isfinite(value), f"{where}: expected a finite number, got {value}")


def _unique(values: list[Any], where: str) -> None:
    seen: set[Any] = set()
    for value in values:
        require(value not in seen, f"{where}: {value!r} is listed twice")
        seen.add(value)


def _import_study_plugins(data: Any, folder: Path | None) -> None:
    """Import the plugins that a study's raw table names (``folder``: the study file's)."""
    if not isinstance(data, dict):
        raise ConfigError("a study must be a table of settings")
    plugins = data.get("plugins", [])
    if not isinstance(plugins, list) or not all(isinstance(p, str) and p for p in plugins):
        raise ConfigError(f"study.plugins: expected a list of module names, got {plugins!r}")
    _unique(plugins, "study.plugins")
    import_plugins(tuple(plugins), folder)


def parse_study(data: dict[str, Any], default_name: str = "study", folder: Path | None = None) -> Study:
    """Validate a study's raw TOML table; every problem is one :class:`ConfigError` line.

    ``folder``: where the study file lives; its plugin modules may sit there.
    Checks that need the data (subset and batch sizes) are in :mod:`vaebench.preflight`.
    """
    _import_study_plugins(data, folder)  # plugins register names that the rest of the study may use
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
    study = from_dict(Study, {**raw, "methods": ()}, where="study")
    # a label names one row of the tables per latent size: entries at different sizes may share it
    labelled: dict[tuple[str, int], int] = {}
    for i, spec in enumerate(specs):
        for size in study.method_latent_dims(spec):
            require((spec.label, size) not in labelled,
                    f"study.methods[{i}]: label {spec.label!r} is methods[{labelled.get((spec.label, size))}]'s at "
                    f"latent size {size}; labels must be unique at each latent size")
            labelled[spec.label, size] = i
    resolved: dict[str, int] = {}
    for i, spec in enumerate(specs):  # same method and same settings: the same cells, run twice
        architecture = to_dict(study.method_architecture(spec))  # a bad key or value fails here
        key = json.dumps([spec.name, to_dict(spec.config), architecture, sorted(study.method_latent_dims(spec))],
                         sort_keys=True)
        require(key not in resolved, f"study.methods[{i}]: {spec.label!r} is methods[{resolved.get(key)}] again "
                                     f"({spec.name} with the same settings)")
        resolved[key] = i
    unknown_labels = sorted(set(study.published.values) - set(labels))
    if unknown_labels:
        raise ConfigError(f"study.published.values: {unknown_labels[0]!r} is not a method label of the study")
    require(bool(study.datasets), "study.datasets: expected a non-empty list")
    for name in study.datasets:
        DATASETS.get(name)
    _unique(list(study.datasets), "study.datasets")
    require(bool(study.latent_dims) and all(d > 0 for d in study.latent_dims),
            f"study.latent_dims: expected positive sizes, got {list(study.latent_dims)}")
    _unique(list(study.latent_dims), "study.latent_dims")
    require(bool(study.seeds) and all(0 <= s <= MAX_SEED for s in study.seeds),
            f"study.seeds: expected integers from 0 to {MAX_SEED}, got {list(study.seeds)}")
    _unique(list(study.seeds), "study.seeds")
    require(study.name.replace("-", "").replace("_", "").isalnum(),
            f"study.name: expected letters, digits, '-' or '_', got {study.name!r}")
    require(len(study.name) <= MAX_NAME, f"study.name: at most {MAX_NAME} characters (it names the results "
                                         f"folder), got {len(study.name)}")
    for section in ("architecture", "data", "train", "eval"):
        _check_magnitudes(to_dict(getattr(study, section)), section)
    _check_magnitudes(list(study.latent_dims), "study.latent_dims")
    for i, spec in enumerate(specs):
        _check_magnitudes(spec.params, f"study.methods[{i}]")
        _check_magnitudes(spec.architecture, f"study.methods[{i}].architecture")
        _check_magnitudes(list(spec.latent_dims), f"study.methods[{i}].latent_dims")
    if study.eval.quadrature:
        other = [d for d in (*study.latent_dims, *(d for s in specs for d in s.latent_dims)) if d != 2]
        require(not other, f"eval.quadrature: the exact log-likelihood needs a 2-D latent space, but "
                           f"study.latent_dims or a method's latent_dims has {', '.join(map(str, other))}")
    return dataclasses.replace(study, methods=specs)


def preset_names() -> list[str]:
    return sorted(p.name.removesuffix(".toml") for p in resources.files("vaebench.presets").iterdir()
                  if p.name.endswith(".toml"))


def _read_text(path: Path) -> str:
    """A study file's text, or one :class:`ConfigError` line saying why it cannot be read."""
    if path.is_dir():
        raise ConfigError(f"study file {path} is a directory, not a TOML file")
    if not path.exists():
        raise ConfigError(f"study file {path} does not exist")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"study file {path} cannot be read ({exc.strerror or exc})") from None
    try:
        return raw.decode("utf-8-sig")  # a byte-order mark, as some Windows editors write, is no error
    except UnicodeDecodeError as exc:
        raise ConfigError(f"study file {path} is not UTF-8 text (byte {exc.start}: {raw[exc.start:exc.start + 1]!r})"
                          ) from None


def _study_table(source: str | Path) -> tuple[dict[str, Any], str, Path | None]:
    """(the raw TOML table, the default study name, the file's folder or None for a preset)."""
    path = Path(source)
    folder = None
    is_preset = str(source) in preset_names()
    # a folder named like a preset (a run's results, say, when run from runs/) is not a study file
    if path.suffix == ".toml" or (path.exists() and not (path.is_dir() and is_preset)):
        text, default, folder = _read_text(path), path.stem, path.parent
    elif is_preset:
        text = resources.files("vaebench.presets").joinpath(f"{source}.toml").read_text()
        default = str(source)
    else:
        raise ConfigError(f"{source!r} is neither a study file nor a preset; presets: {', '.join(preset_names())}")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML ({exc})") from None
    except RecursionError:
        raise ConfigError(f"{source}: not valid TOML (nested too deeply)") from None
    return data, default, folder


def load_study(source: str | Path) -> Study:
    """A study from a TOML file path or a preset name (``quick``, ``toy``, …)."""
    data, default, folder = _study_table(source)
    try:
        return parse_study(data, default_name=default, folder=folder)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_study_plugins(source: str | Path) -> tuple[str, ...]:
    """Import only the plugins of a study file or preset (what ``vaebench methods --study`` lists);
    the rest of the study is not checked. Returns their names."""
    data, _, folder = _study_table(source)
    try:
        _import_study_plugins(data, folder)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return tuple(data.get("plugins", ()))
