"""The standard variational autoencoder (Kingma & Welling 2014; Rezende et al. 2014)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch

from vaebench.config import NEW_OPTION, require
from vaebench.errors import ConfigError

from .base import GaussianEncoder, Method, PosteriorDraws, StandardNormal
from .kl_weight import KLWeightConfig, KLWeighting
from .registry import register


@dataclass(frozen=True)
class VAEConfig(KLWeightConfig):
    """``analytic_kl``: train with the closed-form KL(q(z|x) ‖ p(z)) instead of its one-sample
    Monte Carlo estimate (lower-variance gradients; the evaluated ELBO is the same quantity).

    ``gradient``: the encoder's gradient estimator, "standard" (the reparameterisation
    gradient of the one-sample ELBO) or "stl", sticking the landing (Roeder, Wu & Duvenaud,
    NeurIPS 2017), which drops the score term E_q[∇_φ log q(z|x)] (zero in expectation) by
    evaluating log q with the encoder's outputs held fixed, so that the encoder learns only
    through z; its variance vanishes where q is the exact posterior. It needs the Monte Carlo
    KL (analytic_kl = false). The decoder's gradient and the logged ELBO are the standard ones.

    ``scale``: how the encoder's output becomes σ: ``softplus`` (+ 1e-4) or ``logvar-hardtanh``
    (a log-variance clipped to [−6, 2], the VampPrior authors'; see :class:`GaussianEncoder`).
    """

    analytic_kl: bool = True
    gradient: Literal["standard", "stl"] = field(default="standard", metadata=NEW_OPTION)
    scale: Literal["softplus", "logvar-hardtanh"] = field(default="softplus", metadata=NEW_OPTION)
    #: the values ``gradient`` may take (a subclass with other estimators names its own)
    GRADIENTS: ClassVar[tuple[str, ...]] = ("standard", "stl")

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.gradient in self.GRADIENTS,
                f"gradient must be one of {', '.join(map(repr, self.GRADIENTS))}, got {self.gradient!r}")
        require(not (self.gradient == "stl" and self.analytic_kl),
                "gradient = 'stl' needs the Monte Carlo KL: set analytic_kl = false")


def fixed_parameters(q: torch.distributions.Independent) -> torch.distributions.Independent:
    """The Gaussian ``q`` with its location and scale detached: log q(z) then carries a gradient
    through z only, none through the encoder's parameters (sticking the landing, DReG)."""
    base = q.base_dist
    normal = torch.distributions.Normal(base.loc.detach(), base.scale.detach(), validate_args=False)
    return torch.distributions.Independent(normal, 1, validate_args=False)


def refuse_unless_inherited(method: Method, owner: type[Method], option: str, names: tuple[str, ...]) -> None:
    """Refuse ``option`` (one line) on a subclass of ``owner`` that overrides any of ``names``:
    the option is implemented in ``owner``'s versions of them and would otherwise be ignored."""
    overridden = [n for n in names if getattr(type(method), n) is not getattr(owner, n)]
    require(not overridden, f"{method.name}: {option} is implemented in {owner.name}'s "
                            f"{', '.join(names)}, which {type(method).__name__} overrides ({', '.join(overridden)})")


@register("vae")
class VAE(KLWeighting, Method):
    """Gaussian q(z|x) with diagonal covariance, N(0, I) prior, Bernoulli decoder.

    Options beyond the ELBO: ``gradient = "stl"`` and a weighted KL term, ``kl_weight`` (β)
    and ``kl_warmup_steps`` (see :mod:`vaebench.methods.kl_weight`); with either of the latter,
    validation logs the weighted objective as ``valid_beta_elbo``.

    Sticking the landing (Roeder, Wu & Duvenaud, "Sticking the Landing: Simple, Lower-Variance
    Gradient Estimators for Variational Inference", NeurIPS 2017) follows the authors' code,
    geoffroeder/iwae ``iwae.py``: ``GaussianSampler.log_likelihood_samplesIx`` evaluates log q
    at the draw with ``block_grad`` on the mean and σ, so the encoder's gradient is the path
    derivative ∂[log p(x, z) − log q(z|x)]/∂z · ∂z/∂φ alone. Their code uses that log q in the
    IWAE's k-sample weights too, which Tucker et al. (2019) show biased for k > 1; our IWAE
    offers DReG instead. The logged loss keeps its value: the same log q, detached parameters.
    """

    config_class = VAEConfig
    config: VAEConfig

    def __init__(self, config: VAEConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.encoder = GaussianEncoder(
            self.backbone.encoder(self.architecture, self.data_shape, 2 * self.latent_dim), scale=config.scale
        )
        self.init_kl_weight()
        self.check_options()

    def check_options(self) -> None:
        """Refuse ``gradient`` and a weighted KL on a subclass that replaces the code which
        implements them (it would train without them, silently). A subclass that implements
        them itself overrides this check."""
        if self.config.gradient != "standard":
            refuse_unless_inherited(self, VAE, f"gradient = {self.config.gradient!r}", ("encode", "training_step"))
        if self.config.weighted_kl:
            refuse_unless_inherited(self, VAE, "a weighted KL (kl_weight, kl_warmup_steps)",
                                    ("training_step", "objective"))

    def encode(self, x: torch.Tensor) -> torch.distributions.Independent:
        """q(z|x) as a distribution."""
        return self.encoder(x)

    def posterior_mean(self, x: torch.Tensor) -> torch.Tensor:
        """E_q[z|x], exact: the Gaussian encoder's mean (a subclass whose posterior is not
        :meth:`encode`'s Gaussian must override or delete this)."""
        return self.encode(x).mean

    def posterior(self, x: torch.Tensor, n: int = 1) -> PosteriorDraws:
        q = self.encode(x)  # one encoder pass for the draws and their log q
        z = q.rsample((n,))
        return PosteriorDraws(z, q.log_prob(z))

    def objective(self, x: torch.Tensor) -> torch.Tensor:
        """The one-sample ELBO per example; with a weighted KL, log p(x|z) − w · (log q(z|x) − log p(z))
        at the current weight w (logged as ``valid_beta_elbo``)."""
        if not self.weighted_kl:
            return super().objective(x)
        z, log_q = self.posterior(x, 1)
        weight = self.kl_weight_now(advance=False)
        return (self.likelihood.log_prob(x, z) - weight * (log_q - self.prior.log_prob(z))).mean(0)

    def training_step(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """The negative one-sample ELBO (KL weighted by the step's weight when configured); with
        ``gradient = "stl"`` its gradient is the sticking-the-landing one, its value unchanged."""
        q = self.encode(batch)
        z = q.rsample()
        if self.config.analytic_kl:
            # the closed form is KL(q ‖ N(0, I)): a method that replaced the prior must not use it
            if not isinstance(self.prior, StandardNormal):
                raise ConfigError(f"{self.name}: analytic_kl is the KL to N(0, I), but this method's prior is "
                                  f"{type(self.prior).__name__}: set analytic_kl = false")
            loc, scale = q.base_dist.loc, q.base_dist.scale
            kl = 0.5 * (loc.square() + scale.square() - 1).sum(-1) - scale.log().sum(-1)
        else:
            # sticking the landing: the same value of log q(z|x), with no gradient into the
            # encoder except through z
            q_of_z = fixed_parameters(q) if self.config.gradient == "stl" else q
            kl = q_of_z.log_prob(z) - self.prior.log_prob(z)
        if self.weighted_kl:
            kl = self.kl_weight_now(advance=True) * kl
        elbo = self.decoder.log_prob(batch, z) - kl
        return {"model": -elbo.mean()}
