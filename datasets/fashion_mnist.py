"""Fashion-MNIST, from Debian's ``dataset-fashion-mnist`` package or the data directory.

60,000 training images, of which the last 10,000 are held out for validation, and
10,000 test images.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from vaebench.errors import DataUnavailableError

from .base import DataSplits
from .registry import register_dataset
from .storage import data_dir

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
FILES = (TRAIN_IMAGES, "train-labels-idx1-ubyte.gz", TEST_IMAGES, "t10k-labels-idx1-ubyte.gz")
N_VALID = 10_000


def read_idx_images(path: Path) -> np.ndarray:
    """Read a gzipped IDX3 image file into a float32 array of shape (N, rows*cols) in [0, 1]."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic, n, rows, cols = struct.unpack(">IIII", raw[:16])
    if magic != 0x803:
        raise ValueError(f"{path} is not an IDX3 image file (magic {magic:#x})")
    pixels = np.frombuffer(raw, dtype=np.uint8, offset=16)
    if pixels.size != n * rows * cols:
        raise ValueError(f"{path} is truncated: {pixels.size} pixels for {n}×{rows}×{cols}")
    return pixels.reshape(n, rows * cols).astype(np.float32) / 255.0


def find_fashion_mnist(search: tuple[Path, ...] | None = None) -> Path:
    """The first folder holding all four Fashion-MNIST IDX files."""
    search = search or (data_dir() / "fashion-mnist", data_dir(), DEBIAN_DIR)
    for folder in search:
        if all((folder / name).is_file() for name in FILES):
            return folder
    raise DataUnavailableError(
        "Fashion-MNIST not found: install Debian's package (apt-get install dataset-fashion-mnist) "
        f"or put {', '.join(FILES)} in {search[0]}"
    )


@register_dataset("fashion-mnist")
def load_fashion_mnist() -> DataSplits:
    """Fashion-MNIST grey levels in [0, 1]: 50,000 train, 10,000 validation, 10,000 test."""
    folder = find_fashion_mnist()
    train = torch.from_numpy(read_idx_images(folder / TRAIN_IMAGES))
    test = torch.from_numpy(read_idx_images(folder / TEST_IMAGES))
    return DataSplits(
        "fashion-mnist", train[:-N_VALID], train[-N_VALID:], test, image_shape=(1, 28, 28)
    )
