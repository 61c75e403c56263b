"""What every approximation gives back, and how its settings are read from a preset."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import torch

from vaebench.config import from_dict
from vaebench.errors import ConfigError

from ..targets import Target


class Approximation(Protocol):
    """A fitted q: draws, and where q has a density, draws with their log q."""

    has_density: bool

    def sample(self, n: int) -> torch.Tensor:
        """(n, d) draws from q."""
        ...

    def sample_and_log_prob(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, d) draws and their (n,) log q; only when ``has_density``."""
        ...


@dataclass
class Fit:
    """A fitted approximation, its training curve and what the method says of itself.

    ``history``: ``step`` and the loss (and any other logged quantity) every ``log_every`` steps;
    ``own``: the method's own end-of-training numbers, named for what they are (AVB's adversary
    estimates are no bounds, and their names say so); ``seconds``: training wall time."""

    approximation: Approximation
    history: dict[str, list[float]]
    seconds: float
    own: dict[str, float] = field(default_factory=dict)


#: a fitter: (target, the method's options from the study) → Fit, seeded by the caller
Fitter = Callable[[Target, Mapping[str, Any]], Fit]
#: the fitters by the name a study gives them (filled in by the package's ``__init__``)
FITTERS: dict[str, Fitter] = {}

C = TypeVar("C")


def read_settings(cls: type[C], options: Mapping[str, Any], method: str) -> C:
    """``cls`` from a study's options for ``method`` (the suite's config parser: unknown keys and wrong
    types refused in one line), every number of it positive."""
    settings = from_dict(cls, options, where=method)
    for f in dataclasses.fields(settings):  # type: ignore[arg-type]
        value = getattr(settings, f.name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
            raise ConfigError(f"{method}: {f.name} must be positive, got {value}")
    return settings
