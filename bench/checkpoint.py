"""Checkpoints: a method's state_dict, its optimizers and training progress, beside a config JSON.

Checkpoints hold only tensors and plain containers, so they load with
``torch.load(weights_only=True)``: loading one never runs code.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch

from vaebench.datasets.storage import atomic_write_bytes

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"


def save_checkpoint(directory: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically to ``directory/checkpoint.pt``; a crash mid-write leaves the old one."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path = Path(directory) / CHECKPOINT
    atomic_write_bytes(path, buffer.getvalue())
    return path


CORRUPT = f"{CHECKPOINT}.corrupt"


def load_checkpoint(directory: Path, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    """The checkpoint in ``directory``, or None when there is none.

    A checkpoint that cannot be loaded is set aside as ``checkpoint.pt.corrupt`` (replacing
    an older one) and None is returned, so that a damaged file never blocks its run.
    """
    path = Path(directory) / CHECKPOINT
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception:  # noqa: BLE001 - whatever makes the file unreadable, it is not trusted
        path.replace(path.with_name(CORRUPT))
        return None


def save_config(directory: Path, config: dict[str, Any]) -> Path:
    path = Path(directory) / CONFIG
    atomic_write_bytes(path, (json.dumps(config, indent=2, sort_keys=True) + "\n").encode())
    return path
