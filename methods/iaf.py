"""The VAE with an inverse autoregressive flow posterior (Kingma, Salimans, Jozefowicz, Chen,
Sutskever & Welling, NeurIPS 2016).

q(z|x): z_0 = μ(x) + σ(x) ⊙ ε, ε ~ N(0, I), then K steps z_t = σ_t ⊙ z_{t−1} + (1 − σ_t) ⊙ m_t
with [m_t, s_t] = MADE_t(z_{t−1}, h(x)) autoregressive in z and σ_t = sigmoid(s_t + b):
the paper's numerically stable (LSTM-like) update. Each step's Jacobian is triangular with
diagonal σ_t, so log q(z_K|x) = log N(ε; 0, I) − Σ_i log σ_i(x) − Σ_t Σ_i log σ_t,i.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import zuko
from torch import nn

from vaebench.config import require

from .flow_vae import FlowVAE, FlowVAEConfig
from .registry import register


@dataclass(frozen=True)
class IAFConfig(FlowVAEConfig):
    """IAF posterior settings.

    ``flows``: number K of IAF steps (the paper's "depth"; its MNIST table uses 2, 4 and 8).
    ``made_hidden``: hidden widths of each step's autoregressive network (a zuko
    ``MaskedMLP``); the paper's smallest MNIST IAF has width 320.
    ``context_dim``: size of the context h(x) the encoder passes to every step (the paper
    does not state it for MNIST; our choice).
    ``gate_bias``: added to s_t so that σ_t = sigmoid(s_t + b) starts near 1, i.e. each
    step starts near the identity; the paper recommends "1 or 2".
    ``min_scale``: floor of the base Gaussian's σ(x), as in the VAE's encoder.
    """

    flows: int = 2
    made_hidden: tuple[int, ...] = (320, 320)
    context_dim: int = 32
    gate_bias: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        require(len(self.made_hidden) > 0 and all(h > 0 for h in self.made_hidden),
                f"made_hidden widths must be positive, got {list(self.made_hidden)}")
        require(self.context_dim > 0, f"context_dim must be positive, got {self.context_dim}")


class IAFStep(nn.Module):
    """One gated IAF step, autoregressive in the variable order ``order`` (a permutation)."""

    def __init__(self, dim: int, context_dim: int, hidden: tuple[int, ...], order: torch.Tensor,
                 gate_bias: float) -> None:
        super().__init__()
        # output i (m_i and s_i) sees z_j for the variables j before i in the order, and all of h
        earlier = order[None, :] < order[:, None]
        adjacency = torch.cat([earlier, torch.ones(dim, context_dim, dtype=torch.bool)], dim=1)
        self.made = zuko.nn.MaskedMLP(adjacency.repeat(2, 1), hidden, activation=nn.ELU)
        self.register_buffer("order", order)
        self.gate_bias = gate_bias

    def gates(self, z: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """m and log σ at z; both depend on z only through the variables earlier in the order."""
        m, s = self.made(torch.cat([z, h.expand(*z.shape[:-1], h.shape[-1])], dim=-1)).chunk(2, dim=-1)
        return m, nn.functional.logsigmoid(s + self.gate_bias)

    def forward(self, z: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z' = σ ⊙ z + (1 − σ) ⊙ m and log|det ∂z'/∂z| = Σ log σ, in one pass."""
        m, log_sigma = self.gates(z, h)
        sigma = log_sigma.exp()
        return sigma * z + (1 - sigma) * m, log_sigma.sum(-1)

    def inverse(self, z_out: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z with forward(z) = z_out, and the forward log-determinant there.

        Solved one variable at a time in the step's order (dim passes of the network):
        after pass k the first k variables in the order are exact, since m and σ of a
        variable depend only on variables before it.
        """
        z = torch.zeros_like(z_out)
        for _ in range(z.shape[-1]):
            m, log_sigma = self.gates(z, h)
            sigma = log_sigma.exp()
            z = (z_out - (1 - sigma) * m) / sigma
        return z, self.gates(z, h)[1].sum(-1)


@register("iaf")
class IAF(FlowVAE):
    """VAE whose q(z|x) is a diagonal Gaussian followed by K gated IAF steps.

    Every step is conditioned on an encoder context h(x); the variable order is reversed
    between steps.

    :meth:`posterior` returns the exact log q(z|x) computed while sampling (one pass per
    step); :meth:`log_q_by_inversion` computes it for any other z by inverting the flow
    (latent_dim passes per step).
    """

    config_class = IAFConfig
    config: IAFConfig

    def __init__(self, config: IAFConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)  # the encoder: μ, σ and the context h(x) (FlowVAE)
        d, c = self.latent_dim, config.context_dim
        forward_order = torch.arange(d)
        self.steps = nn.ModuleList([
            IAFStep(d, c, config.made_hidden, forward_order if t % 2 == 0 else forward_order.flip(0),
                    config.gate_bias)
            for t in range(config.flows)
        ])

    def flow_parameter_dim(self) -> int:
        """The context h(x) that every step reads."""
        return self.config.context_dim

    def flow(self, z: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z_0 ↦ z_K through the K steps, and log|det ∂z_K/∂z_0|."""
        log_det = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
        for step in self.steps:
            z, step_log_det = step(z, h)
            log_det = log_det + step_log_det
        return z, log_det

    def log_q_by_inversion(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log q(z|x) for any z (n, batch, latent_dim), by inverting the flow."""
        q0, h = self.base(x)
        log_det = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
        for step in reversed(self.steps):
            z, step_log_det = step.inverse(z, h)
            log_det = log_det + step_log_det
        return q0.log_prob(z) - log_det

