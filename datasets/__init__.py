"""Data sets: a registry of loaders, binarization, and training batches.

``load_dataset("mnist", DataConfig(...))`` gives a :class:`DataSplits`; new data sets
register a loader with ``@register_dataset("name")``.
"""

from . import fashion_mnist, mnist, toy4  # noqa: F401  (registers the built-in data sets)
from .base import Binarization, DataConfig, DataSplits
from .loading import TrainBatches, load_dataset, raw_splits
from .registry import DATASETS, list_datasets, register_dataset
from .storage import data_dir

__all__ = [
    "Binarization", "DATASETS", "DataConfig", "DataSplits", "TrainBatches", "data_dir", "raw_splits",
    "list_datasets", "load_dataset", "register_dataset",
]
