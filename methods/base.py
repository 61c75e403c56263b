"""The interface every method implements, and the prior and decoder they all share.

A method is a :class:`torch.nn.Module` with a typed config dataclass. It owns the
shared :class:`BernoulliDecoder` and :class:`StandardNormal` prior (built here, from the
study's :class:`~vaebench.backbones.Architecture`, so every method has the identical
generative model), declares its optimizers through :meth:`Method.param_groups` and
:meth:`Method.optimizer_settings`, and returns named losses from
:meth:`Method.training_step`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NamedTuple

import torch
from torch import nn

from vaebench.backbones import Architecture, get_backbone, set_output_bias_to_mean_logit
from vaebench.config import require
from vaebench.optim import make_optimizer

LOG_2PI = math.log(2 * math.pi)


@dataclass(frozen=True)
class MethodConfig:
    """Hyperparameters every method has. Subclasses add their own fields.

    ``lr``: Adam's learning rate for the encoder and decoder. ``betas``: Adam's β1, β2.
    ``optimizer``: ``adam`` (torch's) or ``burda-adam`` (the IWAE authors' variant, see
    :class:`vaebench.optim.BurdaAdam`), for every parameter group. ``eps``: the optimizer's ε
    (unset: its own default, 1e-8 for adam, 1e-4 for burda-adam).
    """

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    optimizer: Literal["adam", "burda-adam"] = "adam"
    eps: float | None = None

    def __post_init__(self) -> None:
        require(self.lr > 0, f"lr must be positive, got {self.lr}")
        require(self.eps is None or self.eps > 0, f"eps must be positive, got {self.eps}")
        require(all(0 <= b < 1 for b in self.betas), f"betas must lie in [0, 1), got {list(self.betas)}")


class StandardNormal(nn.Module):
    """The prior p(z) = N(0, I) over ``dim`` dimensions."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        # A buffer, so that the prior follows the model to its device.
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z), summed over the last dimension."""
        return -0.5 * (z.square().sum(-1) + self.dim * LOG_2PI)

    def sample(self, *shape: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(*shape, self.dim, device=self._anchor.device, generator=generator)


class BernoulliDecoder(nn.Module):
    """p(x|z): independent Bernoulli pixels whose logits a network computes from z."""

    def __init__(self, net: nn.Module, data_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.net = net
        self.data_shape = tuple(data_shape)

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)

    def log_prob(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x|z) per example; z may carry leading sample dimensions, x broadcasts over them."""
        return bernoulli_log_prob(x, self.logits(z))

    def mean(self, z: torch.Tensor) -> torch.Tensor:
        """E[x|z], the pixel probabilities."""
        return torch.sigmoid(self.logits(z))


def bernoulli_log_prob(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Σ_d log Bernoulli(x_d; sigmoid(logits_d)), stable for large |logits|."""
    return (x * logits - nn.functional.softplus(logits)).sum(-1)


class PosteriorDraws(NamedTuple):
    """Draws z ~ q(z|x), shape (n, batch, latent_dim), with log q(z|x) of shape (n, batch)
    where the posterior has a density (None for implicit posteriors such as AVB's)."""

    z: torch.Tensor
    log_q: torch.Tensor | None


class Method(nn.Module):
    """Base class of all registered methods.

    Subclasses set ``config_class``, build their inference networks in ``__init__`` (after
    calling ``super().__init__``), and implement :meth:`sample_posterior`,
    :meth:`training_step` and, where q(z|x) has a density, :meth:`log_q`.
    """

    name: ClassVar[str] = "method"
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    #: whether :meth:`log_q` is available (False for implicit posteriors such as AVB's)
    has_density: ClassVar[bool] = True

    def __init__(self, config: MethodConfig, *, data_shape: tuple[int, ...], latent_dim: int,
                 architecture: Architecture | None = None) -> None:
        super().__init__()
        require(latent_dim > 0, f"latent_dim must be positive, got {latent_dim}")
        self.config = config
        self.data_shape = tuple(data_shape)
        self.data_dim = int(math.prod(self.data_shape))
        self.latent_dim = latent_dim
        self.architecture = architecture or Architecture()
        self.backbone = get_backbone(self.architecture.backbone)
        self.prior = StandardNormal(latent_dim)
        self.decoder = BernoulliDecoder(
            self.backbone.decoder(self.architecture, latent_dim, self.data_shape), self.data_shape
        )
        self.optimizers: dict[str, torch.optim.Optimizer] = {}

    # --- what subclasses implement -------------------------------------------------------
    def sample_posterior(self, x: torch.Tensor, n: int = 1) -> torch.Tensor:
        """n reparameterised draws z ~ q(z|x): shape (n, batch, latent_dim)."""
        raise NotImplementedError

    def log_q(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log q(z|x) for z of shape (n, batch, latent_dim): shape (n, batch)."""
        raise NotImplementedError(f"{self.name} has an implicit posterior with no density")

    def training_step(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """Scalar losses to minimise, one per name in :meth:`param_groups`; other keys are logged only."""
        raise NotImplementedError

    def posterior(self, x: torch.Tensor, n: int = 1) -> PosteriorDraws:
        """The one posterior protocol every estimator uses: n draws with their log q(z|x).

        Methods that get log q for free while sampling (IAF) override this; the default
        samples, then evaluates :meth:`log_q` where a density exists.
        """
        z = self.sample_posterior(x, n)
        return PosteriorDraws(z, self.log_q(z, x) if self.has_density else None)

    def diagnostics(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Method-specific per-example numbers for the record (shape (batch,) each), e.g. an
        adversary's KL estimate; evaluation stores them beside the metrics. Default: none."""
        return {}

    def init_from_data(self, train: torch.Tensor) -> None:
        """Data-dependent initialisation, run once before the first training step: the decoder's
        output bias when ``architecture.output_bias`` is ``mean-logit``."""
        if self.architecture.output_bias == "mean-logit":
            set_output_bias_to_mean_logit(self.decoder.net, train)

    # --- optimisation ----------------------------------------------------------------------
    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Which parameters each optimizer updates; each group minimises the loss of its name."""
        return {"model": list(self.parameters())}

    def optimizer_settings(self) -> dict[str, dict[str, Any]]:
        """Adam settings per parameter group."""
        return {"model": {"lr": self.config.lr, "betas": tuple(self.config.betas)}}

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Build one optimizer (``config.optimizer``) per parameter group on the model's current device."""
        settings = self.optimizer_settings()
        groups = self.param_groups()
        self.optimizers = {
            name: make_optimizer(self.config.optimizer, params, **settings[name], eps=self.config.eps)
            for name, params in groups.items()
        }
        self._groups = groups
        return self.optimizers

    def apply_losses(self, losses: dict[str, torch.Tensor], names: list[str] | None = None) -> None:
        """Backpropagate each named loss into its own parameter group only, then step those optimizers.

        Losses may share one graph (simultaneous updates): each ``backward`` is restricted
        to its group's parameters, so one loss's gradient never reaches another's group.
        """
        if not self.optimizers:
            self.configure_optimizers()
        names = list(self.optimizers) if names is None else names
        for name in names:
            self.optimizers[name].zero_grad(set_to_none=True)
        if len(self.optimizers) == 1:  # one group holds every parameter: a plain backward is cheaper
            losses[names[0]].backward()
        else:
            for i, name in enumerate(names):
                torch.autograd.backward(losses[name], inputs=self._groups[name],
                                        retain_graph=i < len(names) - 1)
        for name in names:
            self.optimizers[name].step()

    def update(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """One training step: compute the losses, apply them, return them detached for logging."""
        losses = self.training_step(batch)
        self.apply_losses(losses)
        return {k: v.detach() for k, v in losses.items()}

    # --- the shared generative side and evaluation hooks -------------------------------------
    def log_joint(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x, z) = log p(x|z) + log p(z), per sample and example."""
        return self.decoder.log_prob(x, z) + self.prior.log_prob(z)

    def elbo(self, x: torch.Tensor, n_samples: int = 1) -> torch.Tensor:
        """Monte Carlo ELBO per example, E_q[log p(x, z) − log q(z|x)], averaged over n_samples."""
        z = self.sample_posterior(x, n_samples)
        return (self.log_joint(z, x) - self.log_q(z, x)).mean(0)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Pixel probabilities of p(x|z) at one posterior draw z ~ q(z|x)."""
        return self.decoder.mean(self.sample_posterior(x, 1)[0])

    def sample(self, n: int) -> torch.Tensor:
        """Pixel probabilities of n draws from the model: z ~ p(z), then E[x|z]."""
        return self.decoder.mean(self.prior.sample(n))


class GaussianEncoder(nn.Module):
    """q(z|x) = N(μ(x), diag σ(x)²), the encoder of the VAE and of several baselines."""

    def __init__(self, body: nn.Module, min_scale: float = 1e-4) -> None:
        super().__init__()
        self.body = body  # x → 2·latent_dim
        self.min_scale = min_scale

    def forward(self, x: torch.Tensor) -> torch.distributions.Independent:
        loc, raw_scale = self.body(x).chunk(2, dim=-1)
        scale = nn.functional.softplus(raw_scale) + self.min_scale
        # No argument validation: it costs a host sync per call, and NaNs must reach the loss,
        # where the training loop reports them as divergence.
        normal = torch.distributions.Normal(loc, scale, validate_args=False)
        return torch.distributions.Independent(normal, 1, validate_args=False)
