"""Shared fixtures: seeded, single-threaded, small; ``--device`` picks where device-aware tests run."""

from __future__ import annotations

import pytest
import torch

from vaebench.datasets import DataConfig, load_dataset
from vaebench.device import resolve_device
from vaebench.errors import ConfigError

# Tests share two cores; one thread each keeps timings stable and results deterministic.
torch.set_num_threads(1)

_DEVICE = pytest.StashKey[torch.device]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", default="cpu", choices=("auto", "cpu", "cuda"),
                     help="where the device-aware tests run: cpu (default), cuda, or auto (CUDA when present)")


def pytest_configure(config: pytest.Config) -> None:
    # resolved once, so that --device cuda without a GPU stops the session with one line
    # (a usage error, exit status 4) instead of failing every test that uses the fixture
    try:
        config.stash[_DEVICE] = resolve_device(config.getoption("--device"))
    except ConfigError as exc:
        raise pytest.UsageError(f"--device {config.getoption('--device')}: {exc}") from None


def pytest_report_header(config: pytest.Config) -> str:
    device = config.stash[_DEVICE]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    return f"vaebench test device: {device} ({name})"


@pytest.fixture(scope="session")
def device(pytestconfig: pytest.Config) -> torch.device:
    """The device of ``--device``: models and data of the device-aware tests go there."""
    return pytestconfig.stash[_DEVICE]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def mnist_small():
    """The first 1,000 / 500 / 500 MNIST examples, training set fixed-binarized."""
    return load_dataset("mnist", DataConfig(train_binarization="fixed", train_subset=1000,
                                            valid_subset=500, test_subset=500))


@pytest.fixture(scope="session")
def mnist_500():
    """The first 500 MNIST training examples (and 100 validation), for one-epoch smoke tests."""
    return load_dataset("mnist", DataConfig(train_subset=500, valid_subset=100, test_subset=100))


@pytest.fixture
def tiny_batch() -> torch.Tensor:
    """32 binary 8×8 'images' with structure a model can learn (two prototypes plus noise)."""
    g = torch.Generator().manual_seed(0)
    prototypes = (torch.rand(2, 64, generator=g) < 0.5).float()
    which = torch.arange(32) % 2
    flips = (torch.rand(32, 64, generator=g) < 0.05).float()
    return (prototypes[which] + flips) % 2
