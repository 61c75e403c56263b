"""Adversarial Variational Bayes (Mescheder, Nowozin & Geiger, ICML 2017).

The encoder is an implicit distribution, z = f(x, ε) with ε ~ N(0, I): it can represent
any posterior shape but has no density. An adversary T(x, z) is trained with the
logistic loss to tell pairs (x, z ~ q(z|x)) from pairs (x, z ~ p(z)); its optimum is
T*(x, z) = log q(z|x) − log p(z), so the ELBO E_q[log p(x|z) + log p(z) − log q(z|x)]
becomes E_q[log p(x|z) − T*(x, z)], which the encoder and decoder maximise.

:class:`AdversarialMethod` holds everything AVB and its adaptive-contrast variant
(``avb-ac``, :mod:`.avb_ac`) share; they differ only in what the adversary sees and
which auxiliary density r(z|x) the objective subtracts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn

from vaebench.backbones import ConcatMLP
from vaebench.config import require

from .base import Method, MethodConfig, StandardNormal
from .registry import register


@dataclass(frozen=True)
class AVBConfig(MethodConfig):
    """Hyperparameters of AVB. Defaults: the paper's where it states one, else the authors'
    MNIST run script (LMescheder/AdversarialVariationalBayes, experiments/avb_mnist_8).

    ``lr``: Adam learning rate of encoder and decoder (paper and authors' script: 1e-4).
    ``adversary_lr``: Adam learning rate of the adversary (authors' script: 2e-4; their toy
    notebook uses 2e-5 for encoder/decoder and 1e-4 for the adversary).
    ``betas``: Adam's (β1, β2); the paper uses β1 = 0.5 for both optimizers.
    ``noise_dim``: dimension of the encoder's noise ε (authors' script: 16; toy notebook: 64).
    ``adversary_steps``: adversary updates per encoder/decoder update; the last one is
    simultaneous with the encoder/decoder update, the others come first (authors' script:
    1, toy notebook: 2).
    ``adversary_hidden``: hidden widths of the adversary's MLP; empty means the study's
    ``architecture.hidden``.
    ``prior_in_adversary``: add −log p(z) analytically to the adversary's output, as the
    authors' code does, so the network only has to learn log q(z|x) (up to a constant).
    """

    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.999)
    adversary_lr: float = 2e-4
    noise_dim: int = 16
    adversary_steps: int = 1
    adversary_hidden: tuple[int, ...] = ()
    prior_in_adversary: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.adversary_lr > 0, f"adversary_lr must be positive, got {self.adversary_lr}")
        require(self.noise_dim > 0, f"noise_dim must be positive, got {self.noise_dim}")
        require(self.adversary_steps >= 1, f"adversary_steps must be at least 1, got {self.adversary_steps}")
        require(all(h > 0 for h in self.adversary_hidden),
                f"adversary_hidden widths must be positive, got {list(self.adversary_hidden)}")


class Adversary(nn.Module):
    """T(x, u): a logit telling (x, u ~ posterior side) from (x, u ~ N(0, I)).

    With ``prior_term`` the output is net(x, u) − log N(u; 0, I): the optimum
    log q(u|x) − log N(u; 0, I) then only asks the network for log q(u|x).
    """

    def __init__(self, net: nn.Module, reference: StandardNormal, prior_term: bool) -> None:
        super().__init__()
        self.net = net
        self.reference = reference
        self.prior_term = prior_term

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        t = self.net(x, u).squeeze(-1)
        return t - self.reference.log_prob(u) if self.prior_term else t


class AdversarialTerms(NamedTuple):
    """What one pass of an adversarial method computes, per draw and example (shape (n, B)).

    ``z``: posterior draws. ``u``: what the adversary sees of them (z itself, or z
    normalised). ``log_p_over_r``: log p(z) − log r(z|x), the analytic part of the
    KL term (zero for plain AVB, where r = p).
    """

    z: torch.Tensor
    u: torch.Tensor
    log_p_over_r: torch.Tensor


class AdversarialMethod(Method):
    """Shared machinery of AVB and AVB-AC: noise encoder, adversary, two optimizers, ELBO."""

    config_class = AVBConfig
    config: AVBConfig
    has_density = False

    def __init__(self, config: AVBConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.encoder = self.backbone.encoder(self.architecture, self.data_shape, self.latent_dim,
                                             extra_dim=config.noise_dim)
        hidden = config.adversary_hidden or self.architecture.hidden
        self.adversary = Adversary(
            ConcatMLP([self.data_dim, self.latent_dim], hidden, 1, self.architecture.activation),
            self.prior, config.prior_in_adversary,
        )

    # --- the part subclasses change ---------------------------------------------------------
    def terms(self, x: torch.Tensor, n: int) -> AdversarialTerms:
        """n posterior draws per example and what the adversary and the objective need of them."""
        raise NotImplementedError

    # --- shared ---------------------------------------------------------------------------------
    def sample_posterior(self, x: torch.Tensor, n: int = 1) -> torch.Tensor:
        eps = torch.randn(n, x.shape[0], self.config.noise_dim, device=x.device, dtype=x.dtype)
        return self.encoder(x, eps)

    def objective(self, x: torch.Tensor, t: AdversarialTerms, t_q: torch.Tensor) -> torch.Tensor:
        """Per draw and example: log p(x|z) + log p(z) − log r(z|x) − T(x, u), the ELBO at T = T*."""
        return self.decoder.log_prob(x, t.z) + t.log_p_over_r - t_q

    def adversary_loss(self, x: torch.Tensor, t_q: torch.Tensor) -> torch.Tensor:
        """Logistic loss: posterior-side pairs are labelled 1, pairs with u ~ N(0, I) labelled 0."""
        t_p = self.adversary(x, self.prior.sample(*t_q.shape))
        return nn.functional.softplus(-t_q).mean() + nn.functional.softplus(t_p).mean()

    def draws_per_step(self) -> int:
        return 1

    def training_step(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        t = self.terms(batch, self.draws_per_step())
        # One evaluation of T on the posterior side serves both losses: apply_losses sends
        # each loss's gradient to its own group only, so the updates are simultaneous.
        t_q = self.adversary(batch, t.u)
        elbo = self.objective(batch, t, t_q)
        return {"model": -elbo.mean(), "adversary": self.adversary_loss(batch, t_q),
                "T_posterior": t_q.mean()}

    def update(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        for _ in range(self.config.adversary_steps - 1):
            with torch.no_grad():  # the encoder is fixed during the extra adversary steps
                u = self.terms(batch, self.draws_per_step()).u
            self.apply_losses({"adversary": self.adversary_loss(batch, self.adversary(batch, u))},
                              names=["adversary"])
        return super().update(batch)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"model": [*self.encoder.parameters(), *self.decoder.parameters()],
                "adversary": list(self.adversary.parameters())}

    def optimizer_settings(self) -> dict[str, dict[str, Any]]:
        betas = tuple(self.config.betas)
        return {"model": {"lr": self.config.lr, "betas": betas},
                "adversary": {"lr": self.config.adversary_lr, "betas": betas}}

    def elbo(self, x: torch.Tensor, n_samples: int = 1) -> torch.Tensor:
        """E_q[log p(x|z) + log p(z) − log r(z|x) − T(x, u)]: the ELBO where T is optimal."""
        t = self.terms(x, max(n_samples, self.draws_per_step()))
        return self.objective(x, t, self.adversary(x, t.u)).mean(0)


@register("avb")
class AVB(AdversarialMethod):
    """Adversarial Variational Bayes: implicit q(z|x) = f(x, ε), adversary T(x, z) vs p(z)."""

    def terms(self, x: torch.Tensor, n: int) -> AdversarialTerms:
        z = self.sample_posterior(x, n)
        return AdversarialTerms(z=z, u=z, log_p_over_r=z.new_zeros(z.shape[:-1]))
