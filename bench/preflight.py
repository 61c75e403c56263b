"""Checks of a study that need its data or its models, run by ``--dry-run`` and before any training.

:func:`vaebench.study.parse_study` checks what the study file alone can tell. What is
left needs the data (how many examples each split has, the image shape) or a model
(does the method build for this data and latent size, does one training step and one
evaluation go through): :func:`preflight` does that on a few examples in seconds, so a
mistake is one line now rather than a failed cell after minutes of training.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import torch

from vaebench.datasets import raw_splits
from vaebench.methods import Method, create_method

from .compiled_step import check_compiled_step
from .device import resolve_device
from .errors import ConfigError, VaebenchError
from .evaluation import EvalConfig, evaluate
from .study import MAX_INT, Study

#: the most parameters a model may have: 4 GB of float32 weights
MAX_PARAMETERS = 10**9
#: the most optimizer steps a cell may take
MAX_STEPS = MAX_INT
#: examples of each split used by the trial step and evaluation
TRIAL_EXAMPLES = 2


@dataclass(frozen=True)
class DataShape:
    """What a study needs to know of a data set without keeping its tensors."""

    sizes: dict[str, int]
    image_shape: tuple[int, ...]
    trial: dict[str, torch.Tensor]  # the first TRIAL_EXAMPLES examples of each split


@functools.lru_cache(maxsize=8)
def data_shape(name: str) -> DataShape:
    """Split sizes and example shape of data set ``name`` (loaded once per process)."""
    splits = raw_splits(name)
    return DataShape(splits.sizes(), tuple(splits.image_shape),
                     {k: getattr(splits, k)[:TRIAL_EXAMPLES].clone() for k in ("train", "valid", "test")})


def check_data(study: Study) -> dict[str, DataShape]:
    """Load each data set (a missing one fails here) and check subsets and batch sizes against it."""
    shapes = {}
    for name in study.datasets:
        try:
            shape = shapes[name] = data_shape(name)
        except VaebenchError:
            raise
        except Exception as exc:  # noqa: BLE001 - a plugin loader's bug is one line naming the data set
            raise ConfigError(f"datasets: loading {name!r} failed: {type(exc).__name__}: {exc}") from None
        for split in ("train", "valid", "test"):
            subset = getattr(study.data, f"{split}_subset")
            if subset is not None and subset > shape.sizes[split]:
                raise ConfigError(f"data.{split}_subset: {subset:,} examples asked for, but {name} has "
                                  f"{shape.sizes[split]:,} in its {split} split")
        n_test = min(shape.sizes["test"], study.data.test_subset or shape.sizes["test"])
        if study.eval.examples is not None and study.eval.examples > n_test:
            raise ConfigError(f"eval.examples: {study.eval.examples:,} asked for, but {name} has "
                              f"{n_test:,} test examples here (lower examples, or raise data.test_subset)")
        n_train = min(shape.sizes["train"], study.data.train_subset or shape.sizes["train"])
        if study.train.batch_size > n_train:
            raise ConfigError(f"train.batch_size: {study.train.batch_size:,} is larger than the {n_train:,} "
                              f"training examples of {name}")
        if study.train.epochs is not None:
            steps = study.train.epochs * (n_train // study.train.batch_size)
            if steps > MAX_STEPS:
                raise ConfigError(f"train.epochs: {study.train.epochs:,} epochs of {name} are {steps:,} optimizer "
                                  f"steps, beyond the limit of {MAX_STEPS:,}")
    return shapes


def _trial_eval(config: EvalConfig, has_density: bool) -> EvalConfig:
    """The study's evaluation settings at the smallest sizes that still take every code path,
    except importance sampling for implicit posteriors, whose proposal alone costs 256 draws
    per example (seconds per model with conv nets). A gap-targeted search tries at most two
    schedules of 2 and 4 temperatures."""
    trial = dataclasses.replace(
        config, is_samples=min(config.is_samples, 2) if has_density else 0, elbo_samples=1, batch_size=TRIAL_EXAMPLES,
        quadrature=False,  # its grid is costly, and parse_study already checks the latent size
        ais_steps=min(config.ais_steps, 2), ais_chains=1, ais_leapfrog=1, examples=TRIAL_EXAMPLES,
        bdmc_examples=min(config.bdmc_examples, 1))
    if config.bdmc_gap_target is None:
        return trial
    return dataclasses.replace(trial, ais_prior_steps=None if config.ais_prior_steps is None else min(config.ais_prior_steps, 2),
                               ais_max_steps=min(config.ais_max_steps, 4))


def _build(study: Study, index: int, shape: DataShape, latent_dim: int) -> Method:
    """Method ``index`` of the study from the config the study resolved, its size checked first."""
    spec = study.methods[index]
    kwargs = dict(data_shape=shape.image_shape, latent_dim=latent_dim, architecture=study.method_architecture(spec))
    try:  # count the parameters on the meta device first, where no memory is allocated
        with torch.device("meta"):
            size = sum(p.numel() for p in create_method(spec.name, spec.config, **kwargs).parameters())
    except ConfigError:
        raise
    except Exception:  # noqa: BLE001 - some operators have no meta kernel; the real build below decides
        size = 0
    if size > MAX_PARAMETERS:
        raise ConfigError(f"{size:,} parameters, beyond the limit of {MAX_PARAMETERS:,}; check "
                          "architecture.hidden and the latent sizes")
    return create_method(spec.name, spec.config, **kwargs)


def check_models(study: Study, shapes: dict[str, DataShape]) -> None:
    """Build every method for every data set and latent size, then take one training step and
    evaluate on :data:`TRIAL_EXAMPLES` examples, on the CPU: what would fail in a cell fails here."""
    state = torch.get_rng_state()
    try:
        for name, shape in shapes.items():
            for latent_dim in study.all_latent_dims():
                for i, spec in enumerate(study.methods):
                    if latent_dim not in study.method_latent_dims(spec):
                        continue
                    where = f"study.methods[{i}] ({spec.label}) on {name} with latent size {latent_dim}"
                    try:
                        method = _build(study, i, shape, latent_dim)
                        method.configure_optimizers()
                        method.train()
                        method.update(shape.trial["train"])
                        if study.train.compile == "step":  # what the compiled step needs; it compiles in the cell
                            check_compiled_step(method)
                        evaluate(method, shape.trial["test"], _trial_eval(study.eval, method.has_density),
                                 progress=False)
                    except ConfigError as exc:
                        raise ConfigError(f"{where}: {exc}") from None
                    except Exception as exc:  # noqa: BLE001 - any failure here would fail the cell later
                        message = str(exc).strip().splitlines()
                        raise ConfigError(f"{where} fails before training: {type(exc).__name__}: "
                                          f"{message[0] if message else ''}") from None
    finally:
        torch.set_rng_state(state)  # the trial must not shift anything a cell draws


def preflight(study: Study, device: str | None = "auto", source: str | None = None) -> None:
    """Every check of ``study`` that can run before training; raises :class:`ConfigError` (one line),
    prefixed with ``source`` (the study file) where the study is at fault."""
    resolve_device(device)  # e.g. CUDA asked for but absent; the plugins were imported with the study
    try:
        check_models(study, check_data(study))
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}" if source else str(exc)) from None
