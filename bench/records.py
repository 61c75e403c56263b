"""Run records: one JSON file per cell, written atomically, read back with corruption detected."""

from __future__ import annotations

import json
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from vaebench.datasets.storage import atomic_write_bytes

RECORDS = "records"
PACKAGES = ("vaebench", "torch", "numpy", "scipy", "pandas")


def environment() -> dict[str, Any]:
    """Versions of Python, the platform and the packages that shape the numbers."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"python": sys.version.split()[0], "platform": platform.platform(), "packages": versions}


def record_path(results_dir: Path, cell_id: str) -> Path:
    return Path(results_dir) / RECORDS / f"{cell_id}.json"


def write_record(results_dir: Path, record: dict[str, Any]) -> Path:
    """Write a record as ``records/<cell_id>.json``; a reader never sees half a file."""
    path = record_path(results_dir, record["cell_id"])
    atomic_write_bytes(path, (json.dumps(record, indent=2, sort_keys=True, allow_nan=True) + "\n").encode())
    return path


def read_record(path: Path) -> dict[str, Any] | None:
    """A record, or None if the file is missing, truncated or not a record."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict) or not {"cell_id", "status", "config"} <= set(record):
        return None
    return record


def load_records(results_dir: Path) -> list[dict[str, Any]]:
    """Every valid record under ``results_dir/records``, sorted by cell id."""
    paths = sorted((Path(results_dir) / RECORDS).glob("*.json"))
    return [r for r in map(read_record, paths) if r is not None]
