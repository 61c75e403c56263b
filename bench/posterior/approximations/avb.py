"""Non-amortised AVB and AVB-AC: q(z) = f(ε) with no density, fitted against an adversary.

Follows the authors' ``notebooks/Stan-example.ipynb`` (LMescheder/AdversarialVariationalBayes,
last commit ee29153). The adversary T learns, by logistic regression, log q(z) − log r(z) for a
Gaussian reference r: the fixed p0 = N(Ez0, stdz0²) of the target (plain AVB), or N(m, s²) with
the moments of the current batch of q's draws, held constant (adaptive contrast, AVB-AC, where
T also sees the draws standardised by those moments). Written as the notebook does it, the
logit is ``adversary(u) − log r(z)`` (u = z, or (z − m)/s with AC), so ``adversary(u)`` itself
estimates log q(z), and q's loss is E_q[adversary(u) − log p(z)]: the negative of an ELBO
whose entropy term is the adversary's estimate, not a bound. Each iteration takes one step
of q and then two of the adversary, each on fresh draws (the notebook's ``run_training``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..targets import Target
from .base import Fit, read_settings


@dataclass(frozen=True)
class AVBSettings:
    """The notebook's settings, each as it sets it.

    ``iterations``: training iterations (``iter_max = 10000``); ``batch_size``: draws per step
    (512); ``hidden``, ``depth``: q's generator, ε ~ N(0, I_d) through ``depth`` ELU layers of
    ``hidden`` units and a linear output (2 × 128); ``adversary_width``, ``adversary_blocks``: T is
    a leaky-ReLU (0.2) layer of that width and that many residual blocks, the second layer of each
    block and the output zero-initialised (256, 5); ``lr``, ``adversary_lr``: Adam with β1 = 0.5
    (1e-4 and 2e-4); ``adversary_steps``: adversary steps per step of q (2); ``log_every``: steps
    between logged losses."""

    iterations: int = 10_000
    batch_size: int = 512
    hidden: int = 128
    depth: int = 2
    adversary_width: int = 256
    adversary_blocks: int = 5
    lr: float = 1e-4
    adversary_lr: float = 2e-4
    adversary_steps: int = 2
    log_every: int = 50


def _glorot(layer: nn.Linear, zero: bool = False) -> nn.Linear:
    """TF-slim's ``fully_connected`` initialisation: Glorot-uniform weights (or zeros where the
    notebook asks for them), zero biases."""
    if zero:
        nn.init.zeros_(layer.weight)
    else:
        nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class ImplicitSampler(nn.Module):
    """q(z) = f(ε), ε ~ N(0, I_d): the notebook's ``posterior``."""

    has_density = False

    def __init__(self, dim: int, hidden: int, depth: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = dim
        for _ in range(depth):
            layers += [_glorot(nn.Linear(width, hidden)), nn.ELU()]
            width = hidden
        layers.append(_glorot(nn.Linear(width, dim)))
        self.net = nn.Sequential(*layers)
        self.dim = dim

    def sample(self, n: int) -> torch.Tensor:
        return self.net(torch.randn(n, self.dim, device=self.net[0].weight.device))

    def sample_and_log_prob(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise TypeError("AVB's q(z) = f(ε) is implicit: it has no density")


class ResidualAdversary(nn.Module):
    """The notebook's ``adversary``: a leaky-ReLU layer, residual blocks and a linear output."""

    def __init__(self, dim: int, width: int, blocks: int) -> None:
        super().__init__()
        self.first = _glorot(nn.Linear(dim, width))
        self.blocks = nn.ModuleList(
            nn.Sequential(_glorot(nn.Linear(width, width)), nn.LeakyReLU(0.2),
                          _glorot(nn.Linear(width, width), zero=True)) for _ in range(blocks))
        self.out = _glorot(nn.Linear(width, 1), zero=True)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.first(u), 0.2)
        for block in self.blocks:
            h = F.leaky_relu(h + block(h), 0.2)
        return self.out(h).squeeze(-1)


def _normal_log_pdf(z: torch.Tensor, mean: torch.Tensor, sd: torch.Tensor) -> torch.Tensor:
    return (-0.5 * ((z - mean) / sd) ** 2 - sd.log() - 0.5 * math.log(2 * math.pi)).sum(-1)


class _Contrast:
    """The reference r and the adversary's input for a batch of q's draws ``z``."""

    def __init__(self, target: Target, adaptive: bool, device: torch.device) -> None:
        self.adaptive = adaptive
        self.mean0 = torch.tensor(target.contrast_mean, device=device).unsqueeze(0)
        self.sd0 = torch.tensor(target.contrast_sd, device=device).unsqueeze(0)

    def moments(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.adaptive:
            return self.mean0, self.sd0
        # the notebook: the batch's moments (population variance), +1e-6, no gradient through them
        z = z.detach()
        return z.mean(0, keepdim=True), z.var(0, unbiased=False, keepdim=True).sqrt() + 1e-6

    def inputs(self, z: torch.Tensor, mean: torch.Tensor, sd: torch.Tensor) -> torch.Tensor:
        return (z - mean) / sd if self.adaptive else z


def _fit(target: Target, options: Mapping[str, Any], adaptive: bool) -> Fit:
    name = "avb-ac" if adaptive else "avb"
    s = read_settings(AVBSettings, options, name)
    device = torch.device("cpu")
    q = ImplicitSampler(target.dim, s.hidden, s.depth).to(device)
    adversary = ResidualAdversary(target.dim, s.adversary_width, s.adversary_blocks).to(device)
    q_opt = torch.optim.Adam(q.parameters(), lr=s.lr, betas=(0.5, 0.999))
    t_opt = torch.optim.Adam(adversary.parameters(), lr=s.adversary_lr, betas=(0.5, 0.999))
    contrast = _Contrast(target, adaptive, device)
    history: dict[str, list[float]] = {"step": [], "loss": [], "adversary_loss": [], "log_density": []}
    start = time.perf_counter()

    def adversary_step() -> torch.Tensor:
        with torch.no_grad():
            z = q.sample(s.batch_size)
        mean, sd = contrast.moments(z)
        eps = torch.randn_like(z)
        z_r = mean + sd * eps
        u_q, u_r = contrast.inputs(z, mean, sd), contrast.inputs(z_r, mean, sd)
        logit_q = adversary(u_q) - _normal_log_pdf(z, mean, sd)
        logit_r = adversary(u_r) - _normal_log_pdf(z_r, mean, sd)
        loss = (F.binary_cross_entropy_with_logits(logit_q, torch.ones_like(logit_q))
                + F.binary_cross_entropy_with_logits(logit_r, torch.zeros_like(logit_r)))
        t_opt.zero_grad(set_to_none=True)
        loss.backward()
        t_opt.step()
        return loss.detach()

    for step in range(1, s.iterations + 1):
        z = q.sample(s.batch_size)
        mean, sd = contrast.moments(z)
        log_p = target.log_density(z)
        # adversary(u) estimates log q(z); log r cancels out of the notebook's loss_primal
        loss = (adversary(contrast.inputs(z, mean, sd)) - log_p).mean()
        q_opt.zero_grad(set_to_none=True)
        loss.backward()
        q_opt.step()
        for _ in range(s.adversary_steps):
            adversary_loss = adversary_step()
        if step % s.log_every == 0 or step == s.iterations:
            history["step"].append(step)
            history["loss"].append(loss.item())
            history["adversary_loss"].append(adversary_loss.item())
            history["log_density"].append(log_p.mean().item())
    seconds = time.perf_counter() - start
    q.eval()
    own = _adversary_estimates(q, adversary, contrast, target)
    return Fit(approximation=q, history=history, seconds=seconds, own=own)


@torch.no_grad()
def _adversary_estimates(q: ImplicitSampler, adversary: ResidualAdversary, contrast: _Contrast, target: Target,
                         n: int = 20_000) -> dict[str, float]:
    """What the trained adversary says at the end: its estimate of E_q[log q] (so of the entropy
    and of the ELBO, neither a bound) and its accuracy at telling q's draws from r's."""
    z = q.sample(n)
    mean, sd = contrast.moments(z)
    log_q_estimate = adversary(contrast.inputs(z, mean, sd))
    z_r = mean + sd * torch.randn_like(z)
    logit_q = log_q_estimate - _normal_log_pdf(z, mean, sd)
    logit_r = adversary(contrast.inputs(z_r, mean, sd)) - _normal_log_pdf(z_r, mean, sd)
    accuracy = 0.5 * ((logit_q > 0).float().mean() + (logit_r < 0).float().mean())
    return {"elbo_adversary_estimate_not_a_bound": (target.log_density(z) - log_q_estimate).mean().item(),
            "entropy_adversary_estimate_not_a_bound": -log_q_estimate.mean().item(),
            "adversary_accuracy": accuracy.item()}


def fit_avb(target: Target, options: Mapping[str, Any]) -> Fit:
    """Plain AVB: the adversary contrasts q with the target's fixed p0."""
    return _fit(target, options, adaptive=False)


def fit_avb_ac(target: Target, options: Mapping[str, Any]) -> Fit:
    """AVB with adaptive contrast: the adversary contrasts q with the Gaussian of its own moments."""
    return _fit(target, options, adaptive=True)
