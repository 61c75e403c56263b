"""From a data set's name and a DataConfig to tensors ready for training and evaluation."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import torch

from vaebench.config import require

from .base import DataConfig, DataSplits
from .binarize import binarize_eval, dynamic_binarization, fixed_binarization, threshold_binarization
from .registry import DATASETS


@functools.lru_cache(maxsize=4)
def raw_splits(name: str) -> DataSplits:
    """Data set ``name`` as its loader gives it, loaded once per process (preflight and every
    cell share it). Its tensors are shared: slice or copy them, never change them in place."""
    return DATASETS.get(name)()


def load_dataset(name: str, config: DataConfig | None = None) -> DataSplits:
    """Load data set ``name``, cut it to the configured subsets, and binarize validation and test.

    The training set is returned as loaded (grey levels); :class:`TrainBatches` binarizes it.
    Subsets are the first N examples, so a subset means the same examples everywhere.
    """
    config = config or DataConfig()
    splits = raw_splits(name)
    train, valid, test = splits.train, splits.valid, splits.test
    if config.grey_levels == "max-to-one" and not splits.binary:
        top = train.max()
        require(bool(top > 0), f"data.grey_levels = 'max-to-one': {name}'s training images are all 0")
        train, valid, test = train / top, valid / top, test / top
    if config.valid_from_train is not None:
        pool = torch.cat([train, valid])
        n = config.valid_from_train
        require(n < len(pool), f"data.valid_from_train = {n} leaves no training images of {name}'s {len(pool)}")
        train, valid = pool[:-n], pool[-n:]
    train = train[: config.train_subset]
    valid = valid[: config.valid_subset]
    test = test[: config.test_subset]
    if not splits.binary:
        # Different seeds per split: the validation and test draws must be independent.
        valid = binarize_eval(valid, config.eval_binarization, config.binarization_seed + 1)
        test = binarize_eval(test, config.eval_binarization, config.binarization_seed + 2)
        if config.train_binarization == "fixed":
            train = fixed_binarization(train, config.binarization_seed)
        elif config.train_binarization == "threshold":
            train = threshold_binarization(train)
    return DataSplits(splits.name, train, valid, test, splits.image_shape, splits.binary)


class TrainBatches:
    """Mini-batches of a training set that lives on the training device, shuffled or in order.

    Each epoch draws one permutation (with ``shuffle``) and, for dynamic binarization, one
    Bernoulli draw of the whole epoch; batches are then views, so no Python loop touches
    examples. Every example gets fresh bits each time a minibatch shows it, exactly as when
    each minibatch is binarised on its own (Burda et al.), but with one kernel per epoch.
    The generator's state is part of a checkpoint, so a resumed run sees the same batches.
    """

    def __init__(self, train: torch.Tensor, batch_size: int, *, dynamic: bool, seed: int,
                 drop_last: bool = True, shuffle: bool = True) -> None:
        if batch_size > len(train) and drop_last:
            raise ValueError(f"batch size {batch_size} exceeds the {len(train)} training examples")
        self.train = train
        self.batch_size = batch_size
        self.dynamic = dynamic
        self.drop_last = drop_last
        self.shuffle = shuffle
        self.generator = torch.Generator(device=train.device).manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.train)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[torch.Tensor]:
        n = len(self) * self.batch_size if self.drop_last else len(self.train)
        if self.shuffle:
            perm = torch.randperm(len(self.train), generator=self.generator, device=self.train.device)[:n]
            epoch = self.train[perm]
        else:
            epoch = self.train[:n]
        if self.dynamic:
            epoch = dynamic_binarization(epoch, self.generator)
        return iter(epoch.split(self.batch_size))
