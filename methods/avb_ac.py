"""AVB with adaptive contrast (Mescheder et al. 2017, Section 4), as its authors built it
(LMescheder/AdversarialVariationalBayes, ``avb/avb/models/full0_ac.py``).

The adversary of plain AVB must tell q(z|x) from p(z), which is hard when the two are far
apart (the log density ratio is large). Adaptive contrast compares q(z|x) with a Gaussian
r(z|x) = N(μ(x), diag σ(x)²) that has q's mean and variance instead: the objective is

    E_q[log p(x, z) − log r(z|x) − (log q(z|x) − log r(z|x))],

where log r is analytic and the adversary estimates log q − log r. Normalising
u = (z − μ(x)) / σ(x) turns r into N(0, I), so T(x, u) is trained against η ~ N(0, I).

The encoder is z = z₀(x) + Σ_i a_i(x) ⊙ v_i(ε_i): a deterministic network gives z₀ and
positive weights a_i, and noise basis networks v_i turn independent noise ε_i into
vectors. Then μ(x) = z₀ + Σ_i a_i ⊙ E[v_i] and σ(x)² = Σ_i a_i² ⊙ Var[v_i] in closed form:
only the moments of the v_i, which do not depend on x, need estimating.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vaebench.config import require

from .adversarial_nets import NoiseBasis
from .avb import AdversarialMethod, AdversarialTerms, AVBConfig
from .base import LOG_2PI, PosteriorDraws
from .registry import register


@dataclass(frozen=True)
class AVBACConfig(AVBConfig):
    """AVB's hyperparameters plus the noise basis (defaults: the authors' last commit,
    ``experiments/avb_mnist_8_ac/run.py`` and ``avb/avb/models/full0_ac.py``).

    ``noise_dim``: dimension of each ε_i (authors: 32). ``noise_basis``: number of basis
    vectors v_i (authors: 16). ``basis_hidden``: hidden widths of each v_i network
    (authors: three of 128 ELU units).
    ``moment_samples``: noise draws per basis network from which E[v_i] and Var[v_i] are
    computed. They are drawn once, when the model is built, and shifted and scaled to have
    exactly zero mean and unit variance in every coordinate (so the moments are exact for a
    linear v_i); they are kept with the model. r(z|x) is thereby a fixed function of x and the
    parameters, independent of the draws in the loss, and log q − log r a fixed function that
    the adversary can learn (the authors take the moments over the same batch of 128 draws
    that enters the loss; 128 is the default here too).
    ``min_var``: added to σ(x)² before normalising, so u stays finite for a collapsed
    posterior (authors: 1e-4).
    """

    noise_basis: int = 16
    basis_hidden: tuple[int, ...] = (128, 128, 128)
    moment_samples: int = 128
    min_var: float = 1e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.noise_basis >= 1, f"noise_basis must be at least 1, got {self.noise_basis}")
        require(all(h > 0 for h in self.basis_hidden),
                f"basis_hidden widths must be positive, got {list(self.basis_hidden)}")
        require(self.moment_samples >= 2, f"moment_samples must be at least 2, got {self.moment_samples}")
        require(self.min_var > 0, f"min_var must be positive, got {self.min_var}")


class BasisEncoder(nn.Module):
    """z = z₀(x) + Σ_i a_i(x) ⊙ v_i(ε_i) with a_i = ELU(·− 5) + 1 > 0 (``full0_ac.py``)."""

    def __init__(self, body: nn.Module, basis: NoiseBasis, latent_dim: int, moment_samples: int,
                 centre: bool = True) -> None:
        super().__init__()
        self.centre = centre  # x ↦ 2x − 1 first, unless the body does it itself (the conv backbone)
        noise = torch.randn(basis.count, moment_samples, basis.noise_dim)
        noise = (noise - noise.mean(1, keepdim=True)) / noise.std(1, keepdim=True)
        self.register_buffer("moment_noise", noise)  # kept in the checkpoint: r must not change on resume
        self._fixed: tuple[torch.Tensor, torch.Tensor] | None = None
        self.body = body  # x → (1 + count) · latent_dim: z₀ and the a_i before their nonlinearity
        self.basis = basis
        self.latent_dim = latent_dim

    def coefficients(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z₀ (B, latent) and the weights a (count, B, latent)."""
        out = self.body(2 * x - 1 if self.centre else x).unflatten(-1, (1 + self.basis.count, self.latent_dim))
        z0, a = out[..., 0, :], nn.functional.elu(out[..., 1:, :] - 5) + 1
        return z0, a.movedim(-2, 0)

    def moments(self, z0: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """μ(x) and σ(x)², (B, latent), in closed form from z₀, the a_i and the basis moments on
        the fixed ``moment_noise``; held constant in the gradient (the authors' ``tf.stop_gradient``)."""
        with torch.no_grad():
            v_mean, v_var = self.basis_moments()
            z0, a = z0.detach(), a.detach()
            return z0 + torch.einsum("kbd,kd->bd", a, v_mean), torch.einsum("kbd,kd->bd", a.square(), v_var)

    def basis_moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """E[v_i] and Var[v_i] on ``moment_noise``, (count, latent) each; inside
        :meth:`fixed_basis` the values computed on entering it."""
        if self._fixed is not None:
            return self._fixed
        with torch.no_grad():
            v = self.basis(self.moment_noise)  # (count, samples, latent)
            return v.mean(1), v.var(1)

    @contextlib.contextmanager
    def fixed_basis(self) -> Iterator[None]:
        """Compute the basis moments once for a block in which the basis does not change (one
        training update: its extra adversary steps and the main step share them)."""
        self._fixed = self.basis_moments()
        try:
            yield
        finally:
            self._fixed = None

    def forward(self, x: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """n draws z (n, B, latent), with z₀ (B, latent) and a (count, B, latent)."""
        z0, a = self.coefficients(x)
        v = self.basis.sample(n, x.shape[0], device=x.device)  # (count, n, B, latent)
        return z0 + torch.einsum("kbd,knbd->nbd", a, v), z0, a


@register("avb-ac")
class AVBAC(AdversarialMethod):
    """AVB with adaptive contrast: the adversary compares u = (z − μ(x)) / σ(x) with N(0, I).

    Design, after the authors' code (LMescheder/AdversarialVariationalBayes):

    - encoder: z = z₀(x) + Σ_i a_i(x) ⊙ v_i(ε_i), a_i = ELU(· − 5) + 1, each v_i its own
      ELU network of its own noise, x centred to 2x − 1 (``avb/avb/models/full0_ac.py``;
      the body computing z₀ and the a_i is the study's shared backbone). Deviation: z₀'s
      head keeps the default initialisation; the authors' (weights of sd 1e-5) starts every x
      at z ≈ 0 with a_i ≈ e⁻⁵, and on the toy the KL term then pulls q(z|x) onto the prior
      before the decoder learns to use z (exact log-likelihood −2.249 = no information,
      against −1.475 with the default, seed 0 after 1,550 steps);
    - r(z|x): mean and variance of z in closed form from the a_i and the moments of the v_i,
      held constant in the gradient, σ² + 1e-4 in the normalisation (``full0_ac.py`` and
      ``avb/avb/__init__.py``). Deviations: the moments of the v_i come from a fixed set of
      noise draws kept with the model, not from the batch that enters the loss, so that r is
      independent of the draws it normalises (no bias) and log q − log r is one fixed function
      for the adversary to learn; and log r uses the same σ as the normalisation (the
      authors' log r omits the 1e-4), so that the Jacobians cancel exactly;
    - adversary, losses and updates: as :class:`~.avb.AVB` (``avb/avb/models/conv0.py``,
      ``avb/avb/__init__.py``, ``avb/avb/train.py``), with u in place of z.
    """

    config_class = AVBACConfig
    config: AVBACConfig

    def __init__(self, config: AVBACConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        body = self.backbone.encoder(self.architecture, self.data_shape,
                                     (1 + config.noise_basis) * self.latent_dim)
        basis = NoiseBasis(config.noise_basis, config.noise_dim, config.basis_hidden, self.latent_dim)
        self.encoder = BasisEncoder(body, basis, self.latent_dim, config.moment_samples,
                                    centre=self.architecture.backbone == "mlp")

    def posterior(self, x: torch.Tensor, n: int = 1) -> PosteriorDraws:
        """n draws z ~ q(z|x) per example, with no density (the moments r needs are not computed)."""
        return PosteriorDraws(self.encoder(x, n)[0], None)

    def update(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        # the basis changes only in the final optimizer step, after every use of its moments
        with self.encoder.fixed_basis():
            return super().update(batch)

    def terms(self, x: torch.Tensor, n: int) -> AdversarialTerms:
        z, z0, a = self.encoder(x, n)
        mean, var = self.encoder.moments(z0, a)
        std = (var + self.config.min_var).sqrt()
        u = (z - mean) / std
        log_r = -0.5 * (u.square() + LOG_2PI).sum(-1) - std.log().sum(-1)
        return AdversarialTerms(z=z, u=u, log_p_over_r=self.prior.log_prob(z) - log_r)
