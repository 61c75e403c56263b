"""The method registry: ``@register("name")`` on a :class:`~vaebench.methods.base.Method` subclass."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from vaebench.backbones import Architecture
from vaebench.columns import Column
from vaebench.config import from_dict
from vaebench.registry import Registry

from .base import Method, MethodConfig

METHODS: Registry[type[Method]] = Registry("method")


def register(name: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator adding a method to the registry under ``name``."""

    def decorate(cls: type[Method]) -> type[Method]:
        # a declaration that cannot reach a table is refused when the class is defined, not at evaluation
        if not all(isinstance(c, Column) for c in cls.columns):
            raise TypeError(f"{name}: columns must be vaebench.columns.Column declarations")
        if not cls.objective_name.isidentifier():
            raise TypeError(f"{name}: objective_name must be an identifier, got {cls.objective_name!r}")
        cls.name = name
        return METHODS.register(name)(cls)

    return decorate


def list_methods() -> list[str]:
    """Names of the registered methods."""
    return METHODS.names()


def method_config(name: str, params: Mapping[str, Any] | None = None) -> MethodConfig:
    """The typed config of method ``name`` from a dict of hyperparameters (strictly checked)."""
    return from_dict(METHODS.get(name).config_class, params or {}, where=f"methods.{name}")


def create_method(name: str, params: Mapping[str, Any] | MethodConfig | None = None, *,
                  data_shape: tuple[int, ...], latent_dim: int,
                  architecture: Architecture | None = None) -> Method:
    """Instantiate a registered method from its name and hyperparameters."""
    config = params if isinstance(params, MethodConfig) else method_config(name, params)
    return METHODS.get(name)(config, data_shape=data_shape, latent_dim=latent_dim, architecture=architecture)
