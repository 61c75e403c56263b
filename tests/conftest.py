"""Shared fixtures: seeded, single-threaded, small."""

from __future__ import annotations

import pytest
import torch

from vaebench.datasets import DataConfig, load_dataset

# Tests share two cores; one thread each keeps timings stable and results deterministic.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def mnist_small():
    """The first 1,000 / 500 / 500 MNIST examples, training set fixed-binarized."""
    return load_dataset("mnist", DataConfig(train_binarization="fixed", train_subset=1000,
                                            valid_subset=500, test_subset=500))
