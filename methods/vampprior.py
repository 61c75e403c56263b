"""The VAE with a VampPrior (Tomczak & Welling, "VAE with a VampPrior", AISTATS 2018).

The prior is the variational mixture of posteriors: the encoder's own q(z|u) at K learned
pseudo-inputs u_1, …, u_K,

    p(z) = (1/K) Σ_k q(z | u_k),

trained jointly with the encoder and decoder on the one-sample ELBO, whose KL term has no
closed form and is estimated at the draw, log q(z|x) − log p(z).

Follows the authors' code, jmtomczak/vae_vampprior at its last commit (bb6ff3e):

- ``models/Model.py`` (``add_pseudoinputs``): the pseudo-inputs are free parameters passed
  through hardtanh(·, 0, 1), so that they stay in the data's range [0, 1]; they are
  initialised N(mean, std²) per pixel, or from training images plus N(0, std²) noise
  (``use_training_data_init``). Their layer is a bias-free linear map applied to the K × K
  identity, i.e. a K × D matrix; we hold that matrix as a parameter directly (the same
  function and, under Adam, the same updates).
- ``utils/load_data.py``: the init mean and std their binary data sets use (static and
  dynamic MNIST, OMNIGLOT: 0.05 and 0.01; the argparse default of −0.05 in
  ``experiment.py`` is always overwritten there), and the data init's noise (0.01) from
  the first K training images.
- ``experiment.py``: K = 500 components (``number_components``).
- ``models/VAE.py`` (``log_p_z``, ``calculate_loss``): log p(z) as a log-sum-exp over the
  K components of log N(z; μ(u_k), σ(u_k)²) − log K, the components' parameters computed
  by one encoder pass over the pseudo-inputs per call; the loss −log p(x|z) + KL with the
  KL estimated at the posterior draw, as here.

Where we differ, and why:

- Encoder and decoder are the suite's shared backbone (the decoder is every method's), not
  their gated dense layers with He init; the encoder's σ is the VAE's softplus + 1e-4 floor,
  not their log-variance clipped by hardtanh to [−6, 2].
- KL warm-up: their training ramps the KL weight linearly over 100 epochs (``warmup``). Here
  it is the VAE's option ``kl_warmup_steps`` (per optimizer step, see
  :mod:`vaebench.methods.kl_weight`), off by default: the plain ELBO, as every method's.
- Sampling from the prior draws a component uniformly and then z from it (the mixture
  itself); their ``generate_x`` takes the first N pseudo-inputs' components, for pictures.
- log p(z) computes the squared distances Σ_d (z_d − μ_kd)²/σ_kd² for all draws and
  components as matrix products, in float64 (their code broadcasts an MB × K × D tensor):
  this needs no memory per draw × component × dimension, and float64 keeps the expansion's
  cancellation (and TF32, which the runner allows on GPUs) from costing accuracy.
- A closed-form z-gradient of log p(z) (``value_and_grad``) spares AIS autograd through
  the prior.

With a backbone that has batch normalisation (``backbone = "conv"``), the pseudo-inputs go
through the encoder in the model's current mode: in training, with their own batch's
statistics (and they update the running statistics too).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from vaebench.config import require

from .base import LOG_2PI, GaussianEncoder
from .registry import register
from .vae import VAE, VAEConfig

#: float64 entries of one (points × components) block of log N(z_n; μ_k, σ_k²), bounding memory
#: (32 MB); AIS and training batches fit in one block, quadrature's grids take several
_MAX_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class VampPriorConfig(VAEConfig):
    """VampPrior settings, beside the VAE's.

    ``components``: the number K of pseudo-inputs, i.e. of the prior's mixture components
    (the authors' default, 500).

    ``pseudo_input_init``: ``random`` draws every pseudo-input pixel from
    N(pseudo_input_mean, pseudo_input_std²) (the authors' default); ``data`` starts from the
    first K training images (repeated if there are fewer) plus N(0, pseudo_input_std²) noise
    (their ``use_training_data_init``).

    ``pseudo_input_mean``: mean of the random init; the authors use 0.05 for their binary
    data sets. It must lie inside (0, 1), where the hardtanh that keeps pseudo-inputs in
    [0, 1] passes gradients.

    ``pseudo_input_std``: standard deviation of the random init, and of the noise added to
    training images by the data init (the authors' 0.01 for both).

    ``analytic_kl`` (inherited from the VAE): must stay false; the KL between a Gaussian q(z|x)
    and the mixture prior has no closed form, so it is estimated at the draw.
    """

    analytic_kl: bool = False
    components: int = 500
    pseudo_input_init: Literal["random", "data"] = "random"
    pseudo_input_mean: float = 0.05
    pseudo_input_std: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        require(not self.analytic_kl, "vampprior has no closed-form KL to a mixture prior: analytic_kl must be false")
        require(self.components > 0, f"components must be positive, got {self.components}")
        require(0 < self.pseudo_input_mean < 1,
                f"pseudo_input_mean must lie in (0, 1), where the pseudo-inputs' hardtanh passes gradients, "
                f"got {self.pseudo_input_mean}")
        require(0 < self.pseudo_input_std < math.inf,
                f"pseudo_input_std must be positive and finite, got {self.pseudo_input_std}")


class VampPrior(nn.Module):
    """p(z) = (1/K) Σ_k q(z | u_k): the encoder's Gaussian posterior at K learned pseudo-inputs u_k.

    Holds the pseudo-inputs (a parameter, so they follow the model to its device) and a
    reference to the encoder, which the method owns (and saves) as its own submodule.
    """

    def __init__(self, encoder: GaussianEncoder, latent_dim: int, data_dim: int, components: int,
                 init_mean: float, init_std: float) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        # flattened images like the data, before hardtanh; the pseudo-inputs are pseudo_inputs()
        self.raw_pseudo_inputs = nn.Parameter(torch.empty(components, data_dim).normal_(init_mean, init_std))
        # a plain reference, not a submodule: the encoder's parameters are the method's, saved once
        self._encoder = (encoder,)

    @property
    def components(self) -> int:
        return self.raw_pseudo_inputs.shape[0]

    def pseudo_inputs(self) -> torch.Tensor:
        """The K pseudo-inputs, flattened images (K, pixels), each pixel in [0, 1]."""
        return nn.functional.hardtanh(self.raw_pseudo_inputs, 0.0, 1.0)

    def component_parameters(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Means and standard deviations (K, latent_dim) of the components: one encoder pass."""
        q = self._encoder[0](self.pseudo_inputs())
        return q.base_dist.loc, q.base_dist.scale

    @staticmethod
    def _log_components(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """log N(z_n; μ_k, σ_k²) for rows z (N, D): shape (N, K), float64; and [μ/σ², 1/σ²] (K, 2D)."""
        z, loc, scale = z.double(), loc.double(), scale.double()
        precision = scale.pow(-2)
        scaled_loc = loc * precision
        const = -scale.log().sum(-1) - 0.5 * z.shape[-1] * LOG_2PI - 0.5 * (loc * scaled_loc).sum(-1)
        # Σ_d (z_d − μ_kd)²/σ_kd² = Σ_d z_d²/σ_kd² − 2 z_d μ_kd/σ_kd² + μ_kd²/σ_kd², the first two
        # terms as one matrix product (float64: see the module docstring)
        weights = torch.cat([precision, -2 * scaled_loc], -1).T
        log_components = torch.addmm(const, torch.cat([z.square(), z], -1), weights, alpha=-0.5)
        return log_components, torch.cat([scaled_loc, precision], -1)

    def _row_chunks(self, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """z's rows (N, latent_dim) in chunks of at most _MAX_ELEMENTS // K rows: one chunk for
        training and AIS batches; many only for very many points (quadrature's grids)."""
        rows = z.reshape(-1, self.latent_dim)
        return rows.split(max(1, _MAX_ELEMENTS // self.components))

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) for z of any leading shape (…, latent_dim): shape z.shape[:-1]."""
        loc, scale = self.component_parameters()  # once per call, whatever the number of chunks
        log_p = torch.cat([torch.logsumexp(self._log_components(rows, loc, scale)[0], -1)
                           for rows in self._row_chunks(z)])
        return (log_p - math.log(self.components)).to(z.dtype).reshape(z.shape[:-1])

    def value_and_grad(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log p(z) and ∂/∂z log p(z) = Σ_k r_k(z) (μ_k − z)/σ_k², r_k the components'
        responsibilities, without autograd (for AIS)."""
        with torch.no_grad():
            loc, scale = self.component_parameters()
            values, grads = [], []
            for rows in self._row_chunks(z):
                log_components, moments = self._log_components(rows, loc, scale)
                top = log_components.amax(-1, keepdim=True)
                weights = (log_components - top).exp_()  # one exp for the value and the responsibilities
                total = weights.sum(-1, keepdim=True)
                # Σ_k r_k μ_k/σ_k² and Σ_k r_k/σ_k², from one matrix product
                mean_scaled_loc, mean_precision = (weights.div_(total) @ moments).chunk(2, -1)
                grads.append(mean_scaled_loc - rows.double() * mean_precision)
                values.append((top + total.log()).squeeze(-1))
            value = torch.cat(values) - math.log(self.components)
            return value.to(z.dtype).reshape(z.shape[:-1]), torch.cat(grads).to(z.dtype).reshape(z.shape)

    def sample(self, *shape: int) -> torch.Tensor:
        """Draws (*shape, latent_dim) from the mixture: a component uniformly, then z from it."""
        with torch.no_grad():
            loc, scale = self.component_parameters()
            k = torch.randint(self.components, shape, device=loc.device)
            return loc[k] + scale[k] * torch.randn(*shape, self.latent_dim, device=loc.device, dtype=loc.dtype)


@register("vampprior")
class VampPriorVAE(VAE):
    """VAE whose prior is the mixture of its posteriors at K learned pseudo-inputs (VampPrior).

    The VAE's Gaussian encoder, shared decoder, training step and objective; the prior is
    :class:`VampPrior`. It trains on the VAE's one-sample ELBO with the KL term estimated at the
    draw, log q(z|x) − log p(z) (``analytic_kl`` is off: there is no closed form), which is also
    its validation objective (``valid_elbo``): an ELBO of this model, VampPrior included.
    """

    config_class = VampPriorConfig
    config: VampPriorConfig

    def __init__(self, config: VampPriorConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)  # the VAE's encoder, the shared decoder
        self.prior = VampPrior(self.encoder, self.latent_dim, self.data_dim, config.components,
                               config.pseudo_input_mean, config.pseudo_input_std)

    def init_from_data(self, train: torch.Tensor) -> None:
        """The decoder's bias (``architecture.output_bias``) and, with ``pseudo_input_init = "data"``,
        the pseudo-inputs: the first K training images plus N(0, pseudo_input_std²) noise."""
        super().init_from_data(train)
        if self.config.pseudo_input_init == "data":
            raw = self.prior.raw_pseudo_inputs
            index = torch.arange(self.prior.components, device=train.device) % len(train)
            images = train[index].reshape(raw.shape).to(raw)
            with torch.no_grad():
                raw.copy_(images + self.config.pseudo_input_std * torch.randn_like(raw))
