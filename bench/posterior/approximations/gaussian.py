"""Mean-field Gaussian VI: q(z) = N(m, diag(s²)), fitted by maximising a reparameterised ELBO."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..targets import Target
from .base import Fit, read_settings


@dataclass(frozen=True)
class MeanFieldSettings:
    """``iterations``, ``batch_size`` (draws per ELBO estimate), ``lr`` (Adam), ``log_every``."""

    iterations: int = 5_000
    batch_size: int = 256
    lr: float = 1e-2
    log_every: int = 50


class MeanFieldGaussian(nn.Module):
    """N(m, diag(exp(2 ρ))), started at N(0, I)."""

    has_density = True

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mean = nn.Parameter(torch.zeros(dim))
        self.log_sd = nn.Parameter(torch.zeros(dim))

    def sample_and_log_prob(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        eps = torch.randn(n, self.mean.numel(), device=self.mean.device)
        z = self.mean + self.log_sd.exp() * eps
        log_q = (-0.5 * eps**2 - self.log_sd - 0.5 * math.log(2 * math.pi)).sum(-1)
        return z, log_q

    def sample(self, n: int) -> torch.Tensor:
        return self.sample_and_log_prob(n)[0]


def train_by_elbo(q: nn.Module, target: Target, iterations: int, batch_size: int, lr: float,
                  log_every: int) -> tuple[dict[str, list[float]], float]:
    """Adam on the negative reparameterised ELBO, E_q[log q(z) − log p(z)]; the logged curve and the seconds it took."""
    opt = torch.optim.Adam(q.parameters(), lr=lr)
    history: dict[str, list[float]] = {"step": [], "loss": []}
    start = time.perf_counter()
    for step in range(1, iterations + 1):
        z, log_q = q.sample_and_log_prob(batch_size)
        loss = (log_q - target.log_density(z)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % log_every == 0 or step == iterations:
            history["step"].append(step)
            history["loss"].append(loss.item())
    return history, time.perf_counter() - start


def fit_meanfield(target: Target, options: Mapping[str, Any]) -> Fit:
    """Mean-field Gaussian VI on ``target``."""
    s = read_settings(MeanFieldSettings, options, "meanfield")
    q = MeanFieldGaussian(target.dim)
    history, seconds = train_by_elbo(q, target, s.iterations, s.batch_size, s.lr, s.log_every)
    return Fit(approximation=q, history=history, seconds=seconds)
