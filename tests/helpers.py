"""Helpers shared by the method tests."""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch

from vaebench.errors import ConfigError
from vaebench.methods import Method, method_config
from vaebench.datasets import DataSplits
from vaebench.training import TrainConfig, train


def losses_over_steps(method: Method, batch: torch.Tensor, steps: int, name: str) -> list[float]:
    """The logged loss ``name`` of each of ``steps`` updates on the same batch."""
    return [method.update(batch)[name].item() for _ in range(steps)]


def assert_loss_falls(losses: list[float]) -> None:
    """The loss of the last few steps, on average, is below the first step's."""
    tail = losses[-5:]
    assert sum(tail) / len(tail) < losses[0], losses


def train_one_epoch(method: Method, data: DataSplits, seed: int = 0) -> list[dict[str, float]]:
    """One epoch through the suite's training loop, with a validation ELBO; returns the history."""
    config = TrainConfig(epochs=1, batch_size=100, valid_batch_size=100)
    return train(method, data, config, seed=seed, dynamic_binarization=True, progress=False).history


def assert_refused_in_one_line(method: str, params: dict[str, Any], message: str) -> None:
    """``method_config(method, params)`` raises a one-line ConfigError that starts with
    ``methods.<method>`` and contains ``message``."""
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        method_config(method, params)
    assert str(caught.value).startswith(f"methods.{method}") and "\n" not in str(caught.value)
