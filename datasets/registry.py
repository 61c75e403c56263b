"""The data set registry: ``@register_dataset("name")`` on a loader returning DataSplits."""

from __future__ import annotations

from collections.abc import Callable

from vaebench.registry import Registry

from .base import DataSplits

Loader = Callable[[], DataSplits]

DATASETS: Registry[Loader] = Registry("dataset")
register_dataset = DATASETS.register


def list_datasets() -> list[str]:
    """Names of the registered data sets."""
    return DATASETS.names()
