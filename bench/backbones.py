"""The networks every method shares, so that methods differ only in how they train.

A backbone builds an encoder body (x, plus optional extra inputs such as noise, to a
vector) and the decoder (z to Bernoulli logits). All methods in a study get the same
backbone and the identical decoder architecture, which is what makes a comparison fair.
Backbones register by name; add one with ``@BACKBONES.register("name")``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from torch import nn

from .config import require
from .registry import Registry

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "elu": nn.ELU, "softplus": nn.Softplus, "tanh": nn.Tanh, "leaky_relu": nn.LeakyReLU,
}


@dataclass(frozen=True)
class Architecture:
    """The shared network architecture of a study.

    ``backbone``: a registered backbone name (``mlp``). ``hidden``: widths of the hidden
    layers of encoder, decoder and adversary bodies. ``activation``: their nonlinearity.
    """

    backbone: str = "mlp"
    hidden: tuple[int, ...] = (300, 300)
    activation: Literal["relu", "elu", "softplus", "tanh", "leaky_relu"] = "relu"

    def __post_init__(self) -> None:
        require(len(self.hidden) > 0 and all(h > 0 for h in self.hidden),
                f"hidden layer widths must be positive, got {list(self.hidden)}")
        require(self.backbone in BACKBONES,
                f"unknown backbone {self.backbone!r}; registered backbones: {', '.join(BACKBONES.names())}")


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, activation: str = "relu") -> nn.Sequential:
    """A fully connected network; works on any number of leading batch dimensions."""
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
        width = h
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


class Backbone(Protocol):
    def encoder(self, arch: Architecture, data_shape: tuple[int, ...], out_dim: int,
                extra_dim: int = 0) -> nn.Module:
        """A network mapping (x flattened, extra) → out_dim; ``extra`` is e.g. AVB's noise."""

    def decoder(self, arch: Architecture, latent_dim: int, data_shape: tuple[int, ...]) -> nn.Module:
        """A network mapping z (…, latent_dim) → Bernoulli logits (…, prod(data_shape))."""


class ConcatMLP(nn.Module):
    """An MLP on the concatenation of its inputs (broadcast over leading dimensions)."""

    def __init__(self, in_dims: Sequence[int], hidden: Sequence[int], out_dim: int, activation: str) -> None:
        super().__init__()
        self.net = mlp(sum(in_dims), hidden, out_dim, activation)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if len(inputs) > 1:
            shape = torch.broadcast_shapes(*(t.shape[:-1] for t in inputs))
            inputs = tuple(t.expand(*shape, t.shape[-1]) for t in inputs)
        return self.net(torch.cat(inputs, dim=-1))


BACKBONES: Registry[Backbone] = Registry("backbone")


@BACKBONES.register("mlp")
class MLPBackbone:
    """Fully connected encoder and decoder with ``arch.hidden`` layers (decoder mirrored)."""

    def encoder(self, arch: Architecture, data_shape: tuple[int, ...], out_dim: int,
                extra_dim: int = 0) -> nn.Module:
        dim = int(torch.Size(data_shape).numel())
        return ConcatMLP([dim, extra_dim] if extra_dim else [dim], arch.hidden, out_dim, arch.activation)

    def decoder(self, arch: Architecture, latent_dim: int, data_shape: tuple[int, ...]) -> nn.Module:
        dim = int(torch.Size(data_shape).numel())
        return mlp(latent_dim, tuple(reversed(arch.hidden)), dim, arch.activation)


def get_backbone(name: str) -> Backbone:
    cls = BACKBONES.get(name)
    return cls()
