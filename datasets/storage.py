"""Where data sets are cached, and how files are checked and written safely."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

DATA_ENV = "VAEBENCH_DATA"


def data_dir() -> Path:
    """The data cache: ``$VAEBENCH_DATA``, else ``~/.cache/vaebench``."""
    return Path(os.environ.get(DATA_ENV) or Path.home() / ".cache" / "vaebench").expanduser()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the whole file or none of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
