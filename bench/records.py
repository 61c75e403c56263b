"""Run records: one strict-JSON file per cell, its per-example values beside it, and provenance.

A record is written atomically, so a reader never sees half a file; a corrupt or partial
record is recognised as such (:func:`read_record` returns None, :func:`scan_records` names it).
Non-finite numbers are stored explicitly (``{"__float__": "nan"}``), so the files are strict
JSON that any reader parses, and NaN round-trips as NaN, never as "missing".
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from vaebench.datasets.storage import atomic_write_bytes

RECORDS = "records"
#: what a record's "dirty" flag looks at: the code, its build and its pins
CODE_PATHS = ("bench", "methods", "datasets", "pyproject.toml", "constraints.txt", "tox.ini")
PACKAGES = ("vaebench", "torch", "numpy", "scipy", "pandas", "zuko", "pyro-ppl", "arviz")
#: keys every record has; a JSON file without them is not a record
REQUIRED = frozenset({"cell_id", "status", "config"})
#: keys every record's config has (the table's rows are made of them)
REQUIRED_CONFIG = frozenset({"dataset", "latent_dim", "label", "seed"})
_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def encode_json(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``{"__float__": "nan" | "inf" | "-inf"}``."""
    if isinstance(value, float) and not math.isfinite(value):
        return {"__float__": "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}
    if isinstance(value, dict):
        return {k: encode_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode_json(v) for v in value]
    if isinstance(value, np.generic):
        return encode_json(value.item())
    return value


def _decode_float(obj: dict[str, Any]) -> Any:
    if len(obj) == 1 and "__float__" in obj and obj["__float__"] in _NON_FINITE:
        return _NON_FINITE[obj["__float__"]]
    return obj


def dumps(value: Any) -> str:
    """Strict JSON (no bare NaN or Infinity), sorted and indented for readable diffs."""
    return json.dumps(encode_json(value), indent=2, sort_keys=True, allow_nan=False) + "\n"


def loads(text: str) -> Any:
    """The inverse of :func:`dumps`; bare NaN/Infinity are refused as not strict JSON."""

    def refuse(constant: str) -> float:
        raise ValueError(f"not strict JSON: bare {constant}")

    return json.loads(text, object_hook=_decode_float, parse_constant=refuse)


# --- provenance -------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=1)
def code_version() -> dict[str, Any]:
    """The git commit of the code that is running and whether its code (:data:`CODE_PATHS`) had local changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        # only the code counts: results being written by a run are no change to what produced them
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--",
                                 *CODE_PATHS], capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(status.strip())}


@functools.lru_cache(maxsize=1)
def environment() -> dict[str, Any]:
    """Versions of Python, the platform and the packages that shape the numbers, and the code's commit."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"python": sys.version.split()[0], "platform": platform.platform(), "packages": versions,
            "cpu": _cpu_model(), "cores": os.cpu_count(), **code_version()}


def device_description(device: Any) -> str:
    """The device in words: the GPU's name for CUDA, else the CPU model."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return _cpu_model()


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# --- files ------------------------------------------------------------------------------------
def record_path(results_dir: Path, cell_id: str) -> Path:
    return Path(results_dir) / RECORDS / f"{cell_id}.json"


def values_path(results_dir: Path, cell_id: str) -> Path:
    """Where a record's per-example values live: ``records/<cell_id>.npz``."""
    return Path(results_dir) / RECORDS / f"{cell_id}.npz"


def write_values(results_dir: Path, cell_id: str, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Store per-example arrays (float32 values, int64 indices) beside the record; returns a
    reference (file name, sha256, array names) to keep in the record."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    data = buffer.getvalue()
    path = values_path(results_dir, cell_id)
    atomic_write_bytes(path, data)
    return {"file": path.name, "sha256": hashlib.sha256(data).hexdigest(), "arrays": sorted(arrays)}


def read_values(results_dir: Path, record: dict[str, Any]) -> dict[str, np.ndarray] | None:
    """A record's per-example arrays, or None when absent or not matching the record's checksum."""
    ref = record.get("per_example")
    if not ref:
        return None
    path = Path(results_dir) / RECORDS / ref["file"]
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if hashlib.sha256(data).hexdigest() != ref.get("sha256"):
        return None
    with np.load(io.BytesIO(data)) as npz:
        return {name: npz[name] for name in npz.files}


class PerExampleValues:
    """Records' per-example arrays (:func:`read_values`), each file read and checked once: one
    reader serves every table of a report. Callers share the arrays and must not change them."""

    def __init__(self, results_dir: Path) -> None:
        self.results_dir = Path(results_dir)
        self._read: dict[tuple[str, Any], dict[str, np.ndarray] | None] = {}

    def __call__(self, record: dict[str, Any]) -> dict[str, np.ndarray] | None:
        """``record``'s per-example arrays, or None when it has none or its file is missing or altered."""
        ref = record.get("per_example")
        if not ref:
            return None
        key = (str(ref.get("file")), ref.get("sha256"))
        if key not in self._read:
            self._read[key] = read_values(self.results_dir, record)
        return self._read[key]


def write_record(results_dir: Path, record: dict[str, Any]) -> Path:
    """Write a record as ``records/<cell_id>.json``; a reader never sees half a file."""
    path = record_path(results_dir, record["cell_id"])
    atomic_write_bytes(path, dumps(record).encode())
    return path


def read_record(path: Path) -> dict[str, Any] | None:
    """A record, or None if the file is missing, truncated, not strict JSON or not a record."""
    try:
        record = loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(record, dict) or not REQUIRED <= set(record) or not isinstance(record["config"], dict):
        return None
    if not REQUIRED_CONFIG <= set(record["config"]):
        return None
    return record


def scan_records(results_dir: Path) -> tuple[list[dict[str, Any]], list[Path]]:
    """(valid records sorted by cell id, paths of JSON files under ``records/`` that are not valid records)."""
    records, broken = [], []
    for path in sorted((Path(results_dir) / RECORDS).glob("*.json")):
        record = read_record(path)
        if record is None:
            broken.append(path)
        else:
            records.append(record)
    return records, broken


def load_records(results_dir: Path) -> list[dict[str, Any]]:
    """Every valid record under ``results_dir/records``, sorted by cell id."""
    return scan_records(results_dir)[0]
