"""The VAE with a planar-flow posterior (Rezende & Mohamed, "Variational Inference with
Normalizing Flows", ICML 2015): the normalising-flow row of the AVB paper's Table 2.

Each step is z' = z + û tanh(wᵀz + b) (the paper's eq. 10 with h = tanh), whose Jacobian
I + û ψᵀ, ψ = tanh'(wᵀz + b) w, has determinant 1 + ψᵀû (eq. 11–12). The step is invertible
when wᵀû ≥ −1 (the paper's appendix A.1): û = u + (m(wᵀu) − wᵀu) w / ‖w‖² with
m(a) = −1 + softplus(a) gives wᵀû = m(wᵀu) > −1 whatever u and w are. u, w and b of every
step are amortised: computed from x by the encoder, as in the VAE experiments.

Follows van den Berg, Hasenclever, Tomczak & Welling's code for "Sylvester Normalizing Flows
for Variational Inference" (UAI 2018), github.com/riannevdberg/sylvester-flows at commit
32dde9b (2019-07-05): ``models/flows.py`` (class ``Planar``: the û reparameterisation, the
step and its log-determinant) and ``models/VAE.py`` (class ``PlanarVAE``: u, w, b for all K
steps from linear maps of the encoder's last hidden layer, z_0 from the diagonal Gaussian,
log q(z_K) = log q_0(z_0) − Σ_k log|det J_k|). Where we differ, and why:

- u, w, b come out of the backbone encoder's output layer together with μ and σ; theirs
  come from separate linear heads on the same last hidden layer: the same function class,
  in one matrix product.
- The log-determinant. Since wᵀû = m(wᵀu) exactly, 1 + ψᵀû = 1 + tanh'(a)(softplus(wᵀu) − 1)
  = tanh²(a) + (1 − tanh²(a)) softplus(wᵀu), a = wᵀz + b: we compute the last form, a sum of
  non-negative terms. Theirs, log|1 + ψᵀû| from the products, is the same number in exact
  arithmetic but cancels to 0 (log 0 = −inf) in float32 when wᵀu ≪ 0 and a ≈ 0.
- Their networks are gated convolutional nets, σ² comes from a softplus, and they train with
  KL warm-up; we use the study's backbone, σ = softplus + a floor (the VAE's encoder), and
  the plain one-sample ELBO, as every method of the suite is trained.

The paper's MNIST experiments use K = 10, 20, 40 and 80 steps (its Table 2; the AVB paper
quotes the K = 80 value); ``flows`` defaults to the smallest, 10.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .flow_vae import FlowVAE, FlowVAEConfig
from .registry import register


@dataclass(frozen=True)
class PlanarConfig(FlowVAEConfig):
    """Planar-flow posterior settings.

    ``flows``: number K of planar steps; the paper's MNIST experiments use K = 10, 20, 40 and
    80 (the AVB paper's Table 2 quotes K = 80). Each step adds 2·latent_dim + 1 outputs to the
    encoder.
    """

    flows: int = 10


def planar_step(z: torch.Tensor, u: torch.Tensor, w: torch.Tensor, b: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """One planar step z' = z + û tanh(wᵀz + b) and log|det ∂z'/∂z|.

    ``z``: (…, batch, D); ``u``, ``w``: (batch, D), ``u`` before the reparameterisation to û;
    ``b``: (batch, 1). The log-determinant has shape z.shape[:-1].
    """
    wu = (w * u).sum(-1, keepdim=True)
    softplus_wu = nn.functional.softplus(wu)
    u_hat = u + (softplus_wu - 1 - wu) * w / w.square().sum(-1, keepdim=True)  # wᵀû = softplus(wᵀu) − 1
    tanh_a = torch.tanh((z * w).sum(-1, keepdim=True) + b)
    tanh_sq = tanh_a.square()
    # 1 + tanh'(a) wᵀû as tanh²(a) + sech²(a) softplus(wᵀu): no cancellation, positive
    log_det = torch.log(tanh_sq + (1 - tanh_sq) * softplus_wu).squeeze(-1)
    return z + u_hat * tanh_a, log_det


@register("planar")
class PlanarFlowVAE(FlowVAE):
    """VAE whose q(z|x) is a diagonal Gaussian followed by K planar flow steps with amortised parameters.

    :meth:`posterior` returns the exact log q(z|x) computed while sampling (one pass per step).
    """

    config_class = PlanarConfig
    config: PlanarConfig

    def flow_parameter_dim(self) -> int:
        return self.config.flows * (2 * self.latent_dim + 1)  # u, w, b of each step

    def flow(self, z: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.latent_dim
        steps = params.unflatten(-1, (self.config.flows, 2 * d + 1))  # (batch, K, 2D + 1)
        log_det = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
        for k in range(self.config.flows):
            u, w, b = steps[..., k, :].split([d, d, 1], -1)
            z, step_log_det = planar_step(z, u, w, b)
            log_det = log_det + step_log_det
        return z, log_det
