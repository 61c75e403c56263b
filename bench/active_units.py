"""Active units (Burda, Grosse & Salakhutdinov 2016, Section 5.2): how many latent units a model uses.

Unit u is active when A_u = Cov_x(E_{q(z|x)}[z_u]) > 0.01: the variance, over the evaluated
images x, of the posterior mean of z_u. A unit whose posterior mean does not move with x
carries no information about x, whatever its posterior variance.

The posterior mean comes through the model protocol (:mod:`vaebench.model`), in one of two ways:

- exactly, where the posterior offers ``posterior_mean(x)`` (a Gaussian encoder's mean);
- as the mean of n draws of ``posterior(x, n)``, which works for every posterior, implicit
  (AVB) and deterministic (AAE, WAE) ones included. The Monte Carlo error of that mean adds
  Var_q(z_u|x)/n, averaged over x, to A_u in expectation: :class:`ActiveUnits` records this
  inflation per unit, estimated from the same draws, and counts the active units that it
  could have pushed over the threshold (``uncertain``).

A model with several latent layers in one flat z says where they split in its optional
``latent_layers`` (the sizes of the layers, in the order of z); the count is then also given per
layer, as Burda et al. report it. The variance over x is the population variance (divisor N),
as the authors' code computes it (``np.var`` in yburda/iwae's ``get_units_variances``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .model import LatentVariableModel

#: Burda et al.'s threshold on A_u
THRESHOLD = 0.01
#: rows (draws × images) of one posterior call when the mean is taken over draws: bounds memory
_MAX_ROWS = 1 << 16


@dataclass(frozen=True)
class ActiveUnits:
    """A_u for every latent unit and what it was computed from.

    ``variances``: A_u per unit (D,). ``inflation``: the expected part of A_u that is Monte Carlo
    error of the posterior means, mean over x of Var_q(z_u|x)/n, per unit (zeros where the means
    are exact). ``layers``: sizes of the latent layers in the order of z (one layer: (D,)).
    ``draws``: posterior draws per image behind each mean (0: exact means). ``images``: N.
    """

    variances: np.ndarray
    inflation: np.ndarray
    layers: tuple[int, ...]
    draws: int
    images: int
    threshold: float = THRESHOLD

    @property
    def active(self) -> np.ndarray:
        """Whether each unit is active, A_u > threshold, (D,) booleans."""
        return self.variances > self.threshold

    @property
    def count(self) -> int:
        """Active units in all layers together."""
        return int(self.active.sum())

    @property
    def per_layer(self) -> list[int]:
        """Active units per latent layer, in the order of ``layers``."""
        bounds = np.cumsum((0, *self.layers))
        return [int(self.active[a:b].sum()) for a, b in zip(bounds[:-1], bounds[1:])]

    @property
    def uncertain(self) -> int:
        """Active units whose A_u less their Monte Carlo inflation is not above the threshold."""
        return int((self.active & (self.variances - self.inflation <= self.threshold)).sum())

    def summary(self) -> dict[str, float]:
        """The record's scalar metrics: ``active_units``, ``active_units_uncertain`` and, for a
        model of several layers, ``active_units_layer<i>`` (1 = the first layer of z)."""
        out = {"active_units": float(self.count), "active_units_uncertain": float(self.uncertain)}
        if len(self.layers) > 1:
            out.update({f"active_units_layer{i}": float(c) for i, c in enumerate(self.per_layer, 1)})
        return out

    def to_dict(self) -> dict[str, Any]:
        """Everything, per unit included, as plain JSON values for a record."""
        return {"threshold": self.threshold, "count": self.count, "per_layer": self.per_layer,
                "layers": list(self.layers), "uncertain": self.uncertain, "images": self.images,
                "posterior_mean": "exact" if self.draws == 0 else f"mean of {self.draws} draws",
                "draws": self.draws, "variances": [float(v) for v in self.variances],
                "inflation": [float(v) for v in self.inflation]}


def latent_layers(model: LatentVariableModel) -> tuple[int, ...]:
    """The sizes of the model's latent layers (its optional ``latent_layers``), or one layer of all of z."""
    layers = tuple(int(d) for d in getattr(model, "latent_layers", None) or (model.latent_dim,))
    if sum(layers) != model.latent_dim or min(layers) < 1:
        raise ValueError(f"latent_layers {list(layers)} do not split the {model.latent_dim} latent units")
    return layers


def exact_posterior_mean(model: LatentVariableModel, x: torch.Tensor) -> torch.Tensor | None:
    """E_q[z|x] (B, D) where the posterior offers it (``posterior_mean``), else None."""
    mean = getattr(model, "posterior_mean", None)
    return None if mean is None else mean(x)


def posterior_mean_of_draws(model: LatentVariableModel, x: torch.Tensor, n: int
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean (B, D) of n posterior draws per image and their unbiased variance (B, D), in float64."""
    if n < 2:
        raise ValueError(f"the mean of posterior draws needs at least 2 draws, got {n}")
    chunk = max(1, min(n, _MAX_ROWS // max(1, x.shape[0])))
    total = torch.zeros(x.shape[0], model.latent_dim, dtype=torch.float64, device=x.device)
    squares = torch.zeros_like(total)
    for start in range(0, n, chunk):
        z = model.posterior(x, min(chunk, n - start)).z.double()
        total += z.sum(0)
        squares += z.square().sum(0)
    mean = total / n
    return mean, ((squares - n * mean.square()) / (n - 1)).clamp_min(0)


def from_means(means: torch.Tensor, draw_variances: torch.Tensor | None, draws: int,
               layers: tuple[int, ...], threshold: float = THRESHOLD) -> ActiveUnits:
    """A_u from posterior means (N, D) of N images; ``draw_variances`` (N, D): the variance of the
    draws behind each mean, for its Monte Carlo inflation (None with ``draws`` = 0: exact means)."""
    means = means.double()
    variances = means.var(0, unbiased=False)
    inflation = torch.zeros_like(variances) if draw_variances is None else draw_variances.double().mean(0) / draws
    return ActiveUnits(variances.cpu().numpy(), inflation.cpu().numpy(), layers, draws, means.shape[0], threshold)


def active_units(model: LatentVariableModel, x: torch.Tensor, *, draws: int = 1000, batch_size: int = 100,
                 exact: bool = True, threshold: float = THRESHOLD) -> ActiveUnits:
    """A_u of the model's latent units over the images ``x``, batched, without gradients.

    ``exact``: take E_q[z|x] from the posterior's ``posterior_mean`` where it has one; otherwise
    (or with ``exact`` False) the mean of ``draws`` posterior draws per image.
    """
    layers = latent_layers(model)
    use_exact = exact and getattr(model, "posterior_mean", None) is not None
    means, spreads = [], []
    with torch.no_grad():
        for chunk in x.split(batch_size):
            if use_exact:
                means.append(exact_posterior_mean(model, chunk).double())
            else:
                mean, variance = posterior_mean_of_draws(model, chunk, draws)
                means.append(mean)
                spreads.append(variance)
    return from_means(torch.cat(means), None if use_exact else torch.cat(spreads), 0 if use_exact else draws,
                      layers, threshold)


__all__ = ["THRESHOLD", "ActiveUnits", "active_units", "exact_posterior_mean", "from_means", "latent_layers",
           "posterior_mean_of_draws"]
