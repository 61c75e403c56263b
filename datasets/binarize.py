"""Binarization of grey-level images into Bernoulli observations."""

from __future__ import annotations

import torch


def fixed_binarization(x: torch.Tensor, seed: int) -> torch.Tensor:
    """One seeded Bernoulli draw of ``x``: the same seed gives the same bits on any device."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return torch.bernoulli(x.cpu(), generator=generator).to(x.device)


def dynamic_binarization(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A fresh Bernoulli draw of the whole batch or set, in one call."""
    return torch.bernoulli(x, generator=generator)


def threshold_binarization(x: torch.Tensor) -> torch.Tensor:
    return (x > 0.5).to(x.dtype)


def binarize_eval(x: torch.Tensor, mode: str, seed: int) -> torch.Tensor:
    """Binarize a validation or test set once, reproducibly."""
    if mode == "fixed":
        return fixed_binarization(x, seed)
    if mode == "threshold":
        return threshold_binarization(x)
    return x
