"""What a data set loader returns, and the data options a study can set."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from vaebench.config import NEW_OPTION, require

Binarization = Literal["dynamic", "fixed", "threshold", "none"]


@dataclass(frozen=True)
class DataConfig:
    """Data options shared by every cell of a study.

    ``train_binarization``: ``dynamic`` draws fresh Bernoulli pixels every epoch,
    ``fixed`` draws once (seeded), ``threshold`` rounds at 0.5, ``none`` keeps grey levels.
    ``eval_binarization`` applies to validation and test sets and is never dynamic, so
    evaluation numbers are reproducible.

    ``valid_from_train``: take the validation set as the last N images of the loader's
    training and validation splits joined in order (for MNIST and Fashion-MNIST: the 60,000
    original training images in their published order) and train on the rest; unset keeps
    the loader's own split. Burda et al. (2016) hold out the last 400.
    The ``*_subset`` options then keep the first N of each split (unset: all of it).

    ``grey_levels``: ``stored`` keeps the grey levels as the data set's file has them;
    ``max-to-one`` divides every split by the training split's largest value, before any
    binarization. The suite's MNIST file (``mnist.pkl.gz``) stores pixel k as k/256, so its
    brightest pixels are 255/256; torchvision's MNIST, with which many authors binarise, has
    k/255. ``max-to-one`` turns the first into the second (the binarised data's entropy differs:
    about 1.3 nats per MNIST test image).
    """

    train_binarization: Binarization = "dynamic"
    eval_binarization: Literal["fixed", "threshold", "none"] = "fixed"
    binarization_seed: int = 1234
    valid_from_train: int | None = None
    train_subset: int | None = None
    valid_subset: int | None = None
    test_subset: int | None = None
    grey_levels: Literal["stored", "max-to-one"] = field(default="stored", metadata=NEW_OPTION)

    def __post_init__(self) -> None:
        for name in ("valid_from_train", "train_subset", "valid_subset", "test_subset"):
            value = getattr(self, name)
            require(value is None or value > 0, f"{name} must be positive, got {value}")


@dataclass
class DataSplits:
    """Train, validation and test sets as float32 tensors of shape (N, D) in [0, 1].

    ``image_shape`` is the shape of one example, e.g. (1, 28, 28); D is its product.
    ``binary`` says the values are already exactly 0 or 1 (no binarization needed).
    """

    name: str
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    image_shape: tuple[int, ...]
    binary: bool = False

    @property
    def dim(self) -> int:
        return self.train.shape[1]

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "valid": len(self.valid), "test": len(self.test)}
