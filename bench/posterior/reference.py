"""The references an approximation is judged against.

:func:`grid_reference`: a 2-D target on a midpoint grid, exact up to the grid's resolution: its
normaliser, its marginal quantiles (the marginal CDF inverted linearly within a cell) and draws
(a cell by its mass, then uniform within it). :func:`nuts_reference`: NUTS (pyro-ppl) on the
target's log density, several chains, with arviz's rank-normalised split R-hat and bulk and tail
effective sample sizes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .metrics import QUANTILE_LEVELS
from .targets import Target


@dataclass
class GridReference:
    """``axis``: the cell centres of one axis (the grid is their square); ``log_mass``: each cell's
    normalised log mass, (points, points), first index x1; ``log_normaliser``: log Z by the
    midpoint rule; ``width``: a cell's side."""

    axis: torch.Tensor
    log_mass: torch.Tensor
    log_normaliser: float
    width: float

    def quantiles(self, levels: tuple[float, ...] = QUANTILE_LEVELS) -> torch.Tensor:
        """Exact marginal quantiles (up to the grid): (len(levels), 2)."""
        mass = self.log_mass.double().exp()
        out = []
        for marginal in (mass.sum(1), mass.sum(0)):
            cdf = torch.cat([torch.zeros(1, dtype=torch.float64), marginal.cumsum(0)])
            edges = torch.cat([self.axis.double() - self.width / 2, self.axis[-1:].double() + self.width / 2])
            out.append(torch.from_numpy(np.interp(np.asarray(levels), cdf.numpy(), edges.numpy())))
        return torch.stack(out, dim=1)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` draws: a cell by its mass, then a uniform point in it."""
        cells = torch.multinomial(self.log_mass.flatten().exp(), n, replacement=True, generator=generator)
        points = self.axis.numel()
        centres = torch.stack([self.axis[cells // points], self.axis[cells % points]], dim=1)
        return centres + self.width * (torch.rand(n, 2, generator=generator) - 0.5)


def grid_reference(target: Target, points: int = 1024) -> GridReference:
    """``target`` (2-D, with a ``box``) on a ``points`` × ``points`` midpoint grid over [−box, box]²."""
    if target.dim != 2 or target.box is None:
        raise ValueError(f"{target.name}: a grid reference needs a 2-D target with a box")
    width = 2 * target.box / points
    axis = -target.box + width * (torch.arange(points, dtype=torch.float64) + 0.5)
    zz = torch.cartesian_prod(axis, axis)
    log_cell = target.log_density(zz).reshape(points, points) + 2 * math.log(width)
    log_z = torch.logsumexp(log_cell.flatten(), 0)
    return GridReference(axis=axis, log_mass=log_cell - log_z, log_normaliser=log_z.item(), width=width)


@dataclass
class NutsReference:
    """``draws``: (chains, draws, d); ``diagnostics``: worst R-hat, smallest bulk and tail ESS over
    the parameters, divergent transitions, step sizes; ``seconds``: the sampler's wall time."""

    draws: torch.Tensor
    diagnostics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def flat(self) -> torch.Tensor:
        return self.draws.reshape(-1, self.draws.shape[-1])


def convergence(draws: np.ndarray) -> dict[str, float]:
    """arviz's diagnostics of (chains, draws, d) samples: the largest rank-normalised split R-hat
    and the smallest bulk and tail effective sample sizes over the parameters."""
    import arviz

    dataset = arviz.convert_to_dataset({"z": draws})
    rhat = arviz.rhat(dataset)["z"].values
    ess_bulk = arviz.ess(dataset, method="bulk")["z"].values
    ess_tail = arviz.ess(dataset, method="tail")["z"].values
    return {"max_rhat": float(rhat.max()), "min_ess_bulk": float(ess_bulk.min()),
            "min_ess_tail": float(ess_tail.min())}


def nuts_reference(target: Target, *, chains: int, warmup: int, draws: int, seed: int) -> NutsReference:
    """NUTS (pyro-ppl, its defaults: target acceptance 0.8, tree depth ≤ 10, diagonal mass matrix
    adapted in warm-up) on ``target.log_density``, ``chains`` chains one after another, each from
    its own draw of N(0, I)."""
    import pyro
    from pyro.infer import MCMC, NUTS

    pyro.set_rng_seed(seed)

    def potential(params: dict[str, torch.Tensor]) -> torch.Tensor:
        return -target.log_density(params["z"].unsqueeze(0)).squeeze(0)

    start = time.perf_counter()
    initial = torch.randn(chains, target.dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    samples, divergences = [], 0
    for chain in range(chains):
        kernel = NUTS(potential_fn=potential)
        mcmc = MCMC(kernel, num_samples=draws, warmup_steps=warmup, initial_params={"z": initial[chain]},
                    disable_progbar=True)
        mcmc.run()
        samples.append(mcmc.get_samples()["z"])
        divergences += int(mcmc.diagnostics()["divergences"]["chain 0"].__len__())
    stacked = torch.stack(samples).double()
    diagnostics = convergence(stacked.numpy())
    diagnostics["divergences"] = divergences
    return NutsReference(draws=stacked, diagnostics=diagnostics, seconds=time.perf_counter() - start)
