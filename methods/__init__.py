"""Training methods behind one interface, found by name in a registry.

Every module in this package is imported on first use, so a new method is one new
file with an ``@register("name")`` class: nothing else needs editing.
"""

import importlib
import pkgutil

from .base import BernoulliDecoder, GaussianEncoder, Method, MethodConfig, PosteriorDraws, StandardNormal
from .registry import METHODS, create_method, list_methods, method_config, register

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in {"base", "registry"}:
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "BernoulliDecoder", "GaussianEncoder", "METHODS", "Method", "MethodConfig", "PosteriorDraws", "StandardNormal",
    "create_method", "list_methods", "method_config", "register",
]
