"""The importance-weighted autoencoder (Burda, Grosse & Salakhutdinov, ICLR 2016)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch

from vaebench.config import NEW_OPTION, require
from vaebench.model import log_joint

from .registry import register
from .vae import VAE, VAEConfig, fixed_parameters, refuse_unless_inherited


@dataclass(frozen=True)
class IWAEConfig(VAEConfig):
    """``k``: importance samples per example in the training bound
    L_k = E[log (1/k) Σ_i p(x, z_i) / q(z_i|x)]. The paper trains with k ∈ {1, 5, 50} and
    reports its best log-likelihoods at k = 50, our default; training costs k decoder passes
    per example, so smaller k is much cheaper on a CPU. k = 1 is the VAE with a Monte Carlo KL.

    ``analytic_kl`` (inherited from the VAE) does not apply: the k-sample bound has no
    closed-form part, so it must stay False.

    ``gradient``: the encoder's gradient estimator, "standard" (the reparameterisation
    gradient of L_k) or "dreg", the doubly reparameterised estimator (Tucker, Lawson, Gu &
    Maddison, ICLR 2019), Σ_i w̃_i² ∂log w_i/∂z_i · ∂z_i/∂φ with w̃ the normalised importance
    weights: unbiased for the same gradient, with lower variance, and unlike the standard one
    its signal does not vanish relative to its noise as k grows. The decoder's (and prior's)
    gradient and the logged bound are the standard ones, as in the authors' code.

    A weighted KL (kl_weight, kl_warmup_steps) weights each sample's log p(z_i) − log q(z_i|x)
    inside its importance weight (see the method's description).
    """

    k: int = 50
    analytic_kl: bool = False
    gradient: Literal["standard", "dreg"] = field(default="standard", metadata=NEW_OPTION)  # type: ignore[assignment]
    GRADIENTS: ClassVar[tuple[str, ...]] = ("standard", "dreg")

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.k > 0, f"k must be positive, got {self.k}")
        require(not self.analytic_kl, "iwae trains the k-sample bound, which has no analytic KL term")


@register("iwae")
class IWAE(VAE):
    """The VAE's encoder, prior and decoder, trained on the k-sample importance-weighted bound.

    Its training objective, the k-sample bound :meth:`iwae_bound`, is logged as
    ``valid_iwae_bound`` (at the training k); evaluation computes the same ELBO and
    importance-sampled log-likelihood as for every method, so tables compare like with like.

    ``gradient = "dreg"`` follows the authors' code, google-research/google-research
    ``dreg_estimators/model.py`` (``iwae``, estimator ``"dreg"``): the inference network's
    surrogate is Σ_i sg(w̃_i)² · log w_i, with log q in log w_i from a proposal whose
    parameters are stopped (``q_z(..., stop_gradient=True)``), and the model's is the bound
    itself. They take the two gradients with separate variable lists; we train one parameter
    group with one backward pass, so our surrogate is Σ_i sg(w̃_i) · log w_i (log q's
    parameters stopped), whose gradient is the standard one for the decoder and prior and
    Σ_i w̃_i · ∂log w_i/∂z_i · ∂z_i/∂φ for the encoder, and a hook on z multiplies the gradient
    reaching each z_i by w̃_i once more (as PyTorch ports do): w̃_i². The loss's value is
    the bound (the surrogate enters as s − sg(s)), so ``train_model`` logs −L_k.

    A weighted KL (``kl_weight`` β, ``kl_warmup_steps``; :mod:`vaebench.methods.kl_weight`)
    has no separable term in L_k, so it is applied where the VampPrior code applies it to its
    one-sample loss: to each sample's log p(z_i) − log q(z_i|x), log w_i = log p(x|z_i) +
    w · (log p(z_i) − log q(z_i|x)), the VAE's β-ELBO at k = 1 and L_k at w = 1 (pythae's IWAE
    puts its ``beta`` there too). It is then no bound on log p(x) for w < 1, and is logged as
    ``valid_beta_iwae_bound``. With DReG the encoder's weights become (1 − w) · w̃_i + w · w̃_i²
    (the score term that DReG rewrites carries the factor w).
    """

    config_class = IWAEConfig
    config: IWAEConfig
    objective_name = "iwae_bound"

    def check_options(self) -> None:
        if self.config.gradient != "standard":
            refuse_unless_inherited(self, IWAE, f"gradient = {self.config.gradient!r}", ("encode", "training_step"))
        if self.config.weighted_kl:
            refuse_unless_inherited(self, IWAE, "a weighted KL (kl_weight, kl_warmup_steps)",
                                    ("training_step", "objective"))

    def iwae_bound(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """The k-sample bound per example: logsumexp_i [log p(x, z_i) − log q(z_i|x)] − log k."""
        q = self.encode(x)
        z = q.rsample((k,))  # (k, batch, latent): one encoder pass, k reparameterised draws
        log_w = log_joint(self, z, x) - q.log_prob(z)
        return torch.logsumexp(log_w, 0) - math.log(k)

    def weighted_bound(self, x: torch.Tensor, k: int, weight: float | torch.Tensor, *,
                       dreg: bool = False) -> torch.Tensor:
        """The k-sample objective per example with the KL part of each log weight weighted by
        ``weight``: logsumexp_i [log p(x|z_i) + w · (log p(z_i) − log q(z_i|x))] − log k.

        ``dreg``: the same value, with the DReG gradient for the encoder (see the class)."""
        q = self.encode(x)
        z = q.rsample((k,))
        q_of_z = fixed_parameters(q) if dreg else q
        log_w = self.likelihood.log_prob(x, z) + weight * (self.prior.log_prob(z) - q_of_z.log_prob(z))
        return self._dreg(z, log_w, weight) if dreg else torch.logsumexp(log_w, 0) - math.log(k)

    def _dreg(self, z: torch.Tensor, log_w: torch.Tensor, weight: float | torch.Tensor) -> torch.Tensor:
        """The bound logsumexp(log_w) − log k in value; in gradient, that of Σ_i sg(w̃_i) · log w_i
        with the gradient into each z_i scaled by (1 − w) + w · w̃_i (w̃_i at w = 1)."""
        normalised = torch.softmax(log_w.detach(), 0)
        if z.requires_grad:
            scale = normalised if isinstance(weight, float) and weight == 1 else 1 - weight + weight * normalised
            z.register_hook(lambda grad: grad * scale.unsqueeze(-1))
        surrogate = (normalised * log_w).sum(0)
        bound = torch.logsumexp(log_w.detach(), 0) - math.log(log_w.shape[0])
        return bound + (surrogate - surrogate.detach())

    def objective(self, x: torch.Tensor) -> torch.Tensor:
        """The k-sample bound at the training k, per example; with a weighted KL, the weighted
        objective at the current weight (logged as ``valid_beta_iwae_bound``)."""
        if not self.weighted_kl:
            return self.iwae_bound(x, self.config.k)
        return self.weighted_bound(x, self.config.k, self.kl_weight_now(advance=False))

    def training_step(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """−L_k (weighted when configured), with the DReG encoder gradient for ``gradient = "dreg"``."""
        k, dreg = self.config.k, self.config.gradient == "dreg"
        if not self.weighted_kl and not dreg:
            return {"model": -self.iwae_bound(batch, k).mean()}
        weight = self.kl_weight_now(advance=True) if self.weighted_kl else 1.0
        return {"model": -self.weighted_bound(batch, k, weight, dreg=dreg).mean()}
