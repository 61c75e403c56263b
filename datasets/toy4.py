"""The AVB paper's synthetic data set: the four one-hot vectors of R^4, drawn uniformly.

Its maximum log-likelihood is −log 4, reached by a model that puts mass 1/4 on each
point, which makes it a test of how well a method can fit a multimodal posterior.
"""

from __future__ import annotations

import torch

from .base import DataSplits
from .registry import register_dataset

N_TRAIN = 4_000
SEED = 0


def toy4_points() -> torch.Tensor:
    """The four data points, one per row."""
    return torch.eye(4)


@register_dataset("toy4")
def load_toy4() -> DataSplits:
    """Training draws (seeded, uniform over the four points); validation and test hold each point once,
    so that a mean over them is the exact expectation under the data distribution."""
    generator = torch.Generator().manual_seed(SEED)
    labels = torch.randint(0, 4, (N_TRAIN,), generator=generator)
    points = toy4_points()
    return DataSplits("toy4", points[labels], points.clone(), points.clone(), image_shape=(4,), binary=True)
