"""The adversarial autoencoder (Makhzani, Shlens, Jaitly, Goodfellow & Frey, ICLR 2016 workshop).

An autoencoder whose aggregate posterior q(z) = E_x q(z|x) is matched to the prior p(z)
by a GAN in latent space: a discriminator D(z) tells prior draws from codes, and the
encoder, as the GAN's generator, learns to fool it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from vaebench.backbones import mlp
from vaebench.config import require

from .base import MethodConfig
from .codes import CodeMethod
from .registry import register


@dataclass(frozen=True)
class AAEConfig(MethodConfig):
    """Adversarial autoencoder settings.

    ``lr`` (inherited): Adam's learning rate of the reconstruction phase (encoder and decoder).
    ``discriminator_lr``, ``generator_lr``: Adam's learning rates of the regularisation
    phase (discriminator; encoder as generator). The paper uses SGD with momentum 0.9
    (learning rates 0.01 and 0.1); the suite trains every method with Adam, so these are
    our defaults, not the paper's.
    ``encoder``: ``deterministic`` z = f(x) (the paper's choice for its experiments) or
    ``gaussian`` z ~ N(μ(x), σ(x)²), reparameterised.
    ``discriminator_hidden``: hidden widths of the MLP discriminator D(z); the paper's MNIST
    discriminator has two layers of 1000 ReLU units.
    ``posterior_noise_std``: deterministic encoder only; s > 0 evaluates the model with the
    posterior q_s(z|x) = N(f(x), s²I) (samples, log-density and ELBO), so that the ELBO and
    importance sampling are defined. 0 (default) keeps the paper's point-mass posterior,
    whose ELBO is undefined (see :meth:`AAE.posterior`). Training never uses it.
    """

    discriminator_lr: float = 1e-3
    generator_lr: float = 1e-3
    encoder: Literal["deterministic", "gaussian"] = "deterministic"
    discriminator_hidden: tuple[int, ...] = (1000, 1000)
    posterior_noise_std: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.discriminator_lr > 0, f"discriminator_lr must be positive, got {self.discriminator_lr}")
        require(self.generator_lr > 0, f"generator_lr must be positive, got {self.generator_lr}")
        require(len(self.discriminator_hidden) > 0 and all(h > 0 for h in self.discriminator_hidden),
                f"discriminator_hidden widths must be positive, got {list(self.discriminator_hidden)}")
        require(self.posterior_noise_std >= 0,
                f"posterior_noise_std must be non-negative, got {self.posterior_noise_std}")
        require(self.posterior_noise_std == 0 or self.encoder == "deterministic",
                "posterior_noise_std applies to the deterministic encoder only")


@register("aae")
class AAE(CodeMethod):
    """Adversarial autoencoder with a Bernoulli decoder and an MLP discriminator on z.

    Each minibatch runs the paper's two phases in order (Section 2): the reconstruction
    phase updates encoder and decoder on the cross-entropy −log p(x|z); the regularisation
    phase then updates the discriminator (prior draws are "real", codes "fake"), and then
    the encoder to make codes look real (the non-saturating generator loss). Every phase
    sees the parameters the previous one left.
    """

    config_class = AAEConfig
    config: AAEConfig
    objective_name = "recon_log_likelihood"

    def __init__(self, config: AAEConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)  # the encoder (vaebench.methods.codes)
        self.discriminator = mlp(self.latent_dim, config.discriminator_hidden, 1, "relu")

    def objective(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction phase's objective per example: log p(x|z) at one training code."""
        return self.decoder.log_prob(x, self.code(x))

    # --- training --------------------------------------------------------------------------
    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {
            "reconstruction": [*self.encoder.parameters(), *self.decoder.parameters()],
            "discriminator": list(self.discriminator.parameters()),
            "generator": list(self.encoder.parameters()),
        }

    def optimizer_settings(self) -> dict[str, dict[str, Any]]:
        betas = tuple(self.config.betas)
        return {
            "reconstruction": {"lr": self.config.lr, "betas": betas},
            "discriminator": {"lr": self.config.discriminator_lr, "betas": betas},
            "generator": {"lr": self.config.generator_lr, "betas": betas},
        }

    def reconstruction_loss(self, x: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy −log p(x|z) at the codes of x."""
        return -self.decoder.log_prob(x, self.code(x)).mean()

    def discriminator_loss(self, x: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy of D: prior draws labelled 1, (detached) codes labelled 0."""
        real = self.discriminator(self.prior.sample(x.shape[0])).squeeze(-1)
        fake = self.discriminator(self.code(x).detach()).squeeze(-1)
        bce = nn.functional.binary_cross_entropy_with_logits
        return bce(real, torch.ones_like(real)) + bce(fake, torch.zeros_like(fake))

    def generator_loss(self, x: torch.Tensor) -> torch.Tensor:
        """Non-saturating generator loss −log D(f(x)) for the encoder."""
        fake = self.discriminator(self.code(x)).squeeze(-1)
        return nn.functional.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))

    def training_step(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """All three losses at the current parameters (the schedule itself is in :meth:`update`)."""
        return {
            "reconstruction": self.reconstruction_loss(batch),
            "discriminator": self.discriminator_loss(batch),
            "generator": self.generator_loss(batch),
        }

    def update(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """The paper's schedule: reconstruction, then discriminator, then generator step."""
        losses = {}
        for name, loss_fn in (("reconstruction", self.reconstruction_loss),
                              ("discriminator", self.discriminator_loss),
                              ("generator", self.generator_loss)):
            losses[name] = loss_fn(batch)
            # each loss reaches only its own group, so the generator step leaves D unchanged
            self.apply_losses(losses, [name])
        return {k: v.detach() for k, v in losses.items()}
