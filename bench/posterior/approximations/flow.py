"""A normalising flow (zuko's neural spline flow, in the inverse-autoregressive direction), fitted by maximising a reparameterised ELBO."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import zuko
from torch import nn

from ..targets import Target
from .base import Fit, read_settings
from .gaussian import train_by_elbo


@dataclass(frozen=True)
class FlowSettings:
    """``transforms``: spline transforms; ``hidden``: units of each transform's two hidden layers;
    ``bins``: spline bins; ``iterations``, ``batch_size``, ``lr`` (Adam), ``log_every``."""

    transforms: int = 3
    hidden: int = 64
    bins: int = 8
    iterations: int = 3_000
    batch_size: int = 256
    lr: float = 1e-3
    log_every: int = 50


class SplineFlow(nn.Module):
    """zuko's NSF (rational-quadratic splines, autoregressive) turned around, as zuko suggests for
    an inverse autoregressive flow: drawing runs the transforms forwards, one pass each, and the
    draws' own log q comes with them; only the density of outside points would need the slow
    inversion, which fitting by the ELBO never asks for. Standard-normal base."""

    has_density = True

    def __init__(self, dim: int, transforms: int, hidden: int, bins: int) -> None:
        super().__init__()
        self.flow = zuko.flows.NSF(features=dim, context=0, transforms=transforms, bins=bins,
                                   hidden_features=(hidden, hidden))
        self.flow.transform = self.flow.transform.inv

    def sample_and_log_prob(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.flow().rsample_and_log_prob((n,))

    def sample(self, n: int) -> torch.Tensor:
        return self.flow().rsample((n,))


def fit_flow(target: Target, options: Mapping[str, Any]) -> Fit:
    """A neural spline flow on ``target``."""
    s = read_settings(FlowSettings, options, "flow")
    q = SplineFlow(target.dim, s.transforms, s.hidden, s.bins)
    history, seconds = train_by_elbo(q, target, s.iterations, s.batch_size, s.lr, s.log_every)
    return Fit(approximation=q, history=history, seconds=seconds)
