"""AVB with adaptive contrast (Mescheder et al. 2017, Section 4).

The adversary of plain AVB must tell q(z|x) from p(z), which is hard when the two are far
apart (the log density ratio is large). Adaptive contrast compares q(z|x) with a
Gaussian r(z|x) that has q's mean and variance instead: the objective is

    E_q[log p(x, z) − log r(z|x) − (log q(z|x) − log r(z|x))],

where log r is analytic and the adversary estimates log q − log r. Normalising
z̄ = (z − μ(x)) / σ(x) turns r into N(0, I), so T(x, z̄) is trained against η ~ N(0, I).
μ and σ are estimated from ``moment_samples`` draws per example and held constant in
the gradient, as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vaebench.config import require

from .avb import AdversarialMethod, AdversarialTerms, AVBConfig
from .base import LOG_2PI
from .registry import register


@dataclass(frozen=True)
class AVBACConfig(AVBConfig):
    """AVB's hyperparameters plus ``moment_samples``: posterior draws per example from which μ(x)
    and σ(x) are estimated (all of them also enter the objective, so none is wasted).
    ``min_std``: floor on σ(x), so that z̄ stays finite for a collapsed posterior (the authors'
    code uses sqrt(var + 1e-4), a floor of 1e-2, for the same reason).
    The paper's encoder z = z0(x) + Σ_i a_i(x) ⊙ v_i(ε_i) gives μ and σ in closed form; here the
    encoder is AVB's f(x, ε) and the moments are estimated from samples instead."""

    moment_samples: int = 16
    min_std: float = 1e-2

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.moment_samples >= 2, f"moment_samples must be at least 2, got {self.moment_samples}")
        require(self.min_std > 0, f"min_std must be positive, got {self.min_std}")


@register("avb-ac")
class AVBAC(AdversarialMethod):
    """AVB with adaptive contrast: the adversary compares normalised z̄ with N(0, I)."""

    config_class = AVBACConfig
    config: AVBACConfig

    def draws_per_step(self) -> int:
        return self.config.moment_samples

    def terms(self, x: torch.Tensor, n: int) -> AdversarialTerms:
        z = self.sample_posterior(x, n)
        # Detached: r(z|x) is a fixed reference for this step, not something to optimise.
        mean = z.mean(0).detach()
        std = z.std(0).detach().clamp_min(self.config.min_std)
        u = (z - mean) / std
        log_r = -0.5 * (u.square() + LOG_2PI).sum(-1) - std.log().sum(-1)
        return AdversarialTerms(z=z, u=u, log_p_over_r=self.prior.log_prob(z) - log_r)
