"""Device selection and seeding."""

from __future__ import annotations

import random

import numpy as np
import torch

from .errors import ConfigError


def resolve_device(name: str | None = "auto") -> torch.device:
    """``auto`` (or None) picks CUDA when available, else CPU; ``cpu``/``cuda[:n]`` force one."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for, but torch sees no CUDA device here")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
