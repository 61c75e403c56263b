"""PIWAE: the inference network on MIWAE(M, K), the generative network on IWAE_{M·K}
(Rainforth et al., ICML 2018)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .importance_bounds import ImportanceWeightedVariant, iwae_bound, miwae_bound
from .miwae import MIWAEConfig
from .registry import register


@dataclass(frozen=True)
class PIWAEConfig(MIWAEConfig):
    """``m``: M in PIWAE(M, K): the inference network (encoder) is trained on MIWAE(M, K), the mean
    of M independent K-sample IWAE bounds, and the generative network (decoder, and the prior
    where it has parameters) on the IWAE bound of all M·K draws, the same draws. ``m = 1`` is IWAE
    with k samples. The default (8, 8) is the paper's MNIST setting, M·K = 64 draws per example.
    The encoder and the generative network have an optimizer each, both with lr, betas, optimizer
    and eps (the options above).

    ``k``: importance samples inside each of the encoder's m bounds, K in PIWAE(M, K).

    ``analytic_kl``: must stay False (inherited from the VAE): no bound here has a closed-form part.
    """


@register("piwae")
class PIWAE(ImportanceWeightedVariant):
    """IWAE's networks, the encoder trained on MIWAE(M, K) and the decoder on IWAE with M·K samples.

    Rainforth, Kosiorek, Le, Maddison, Igl, Wood & Teh, "Tighter Variational Bounds are Not
    Necessarily Better", ICML 2018, section 5: a tighter bound helps the generative network but
    lowers the signal-to-noise ratio of the inference network's gradient, so PIWAE gives each its
    own target: the M·K-sample IWAE bound for the generative network, MIWAE(M, K) for the
    inference network. Both come from one set of M·K draws, shape (M·K, batch, latent), split
    into M groups of K for MIWAE (pythae shares the draws the same way): one decoder pass.
    Two parameter groups, ``inference`` (the encoder) and ``generative`` (every other parameter),
    each with its own optimizer and loss, as AVB's model and adversary
    (:meth:`Method.apply_losses` backpropagates each loss into its own group only).

    The authors published no code that we could find; this follows the paper's definition and sets
    itself beside pythae's ``src/pythae/models/piwae/piwae_model.py`` and its
    ``CoupledOptimizerTrainer`` (clementchadebec/benchmark_VAE). Where we differ: pythae's trainer
    backpropagates the decoder's loss through the encoder too, without zeroing the encoder's
    gradient in between, so its encoder steps on MIWAE + IWAE; ours steps on MIWAE alone, as the
    paper defines. pythae's MIWAE term has M and K in swapped roles (see ``miwae``), the same at
    its M = K = 8. Validation logs the generative network's bound, IWAE with m·k samples, as
    ``valid_piwae_generative_bound``; the losses train ``train_inference`` (−MIWAE) and
    ``train_generative`` (−IWAE_{m·k}).
    """

    config_class = PIWAEConfig
    config: PIWAEConfig
    objective_name = "piwae_generative_bound"

    def bounds(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(MIWAE(m, k), IWAE_{m·k}) per example, both from the same m·k fresh draws."""
        m, k = self.config.m, self.config.k
        log_w = self.log_weights(x, m * k)
        return miwae_bound(log_w, m), iwae_bound(log_w)

    def objective(self, x: torch.Tensor) -> torch.Tensor:
        """The generative network's training bound, IWAE with m·k samples, per example."""
        return iwae_bound(self.log_weights(x, self.config.m * self.config.k))

    def training_step(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        inference, generative = self.bounds(batch)
        return {"inference": -inference.mean(), "generative": -generative.mean()}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        encoder = {id(p) for p in self.encoder.parameters()}
        return {"inference": list(self.encoder.parameters()),
                "generative": [p for p in self.parameters() if id(p) not in encoder]}

    def optimizer_settings(self) -> dict[str, dict[str, Any]]:
        settings = {"lr": self.config.lr, "betas": tuple(self.config.betas)}
        return {"inference": settings, "generative": dict(settings)}
