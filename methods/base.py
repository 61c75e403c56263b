"""The interface every method implements: a latent-variable model plus its training losses.

A method is a :class:`torch.nn.Module` with a typed config dataclass that implements the
model protocol of :mod:`vaebench.model`: ``prior`` (by default the shared
:class:`~vaebench.distributions.StandardNormal`), ``likelihood`` (the shared
:class:`~vaebench.distributions.BernoulliDecoder`, built from the study's
:class:`~vaebench.backbones.Architecture`, so that every method has the same decoder) and
:meth:`Method.posterior`. Estimators see nothing else. Training goes through
:meth:`Method.training_step` (named losses, one per optimizer of :meth:`Method.param_groups`),
validation through :meth:`Method.objective` (logged under :attr:`Method.objective_name`), and
a method's own per-example numbers through :meth:`Method.diagnostics`, declared in
:attr:`Method.columns`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from vaebench.backbones import Architecture, get_backbone, set_output_bias_to_mean_logit
from vaebench.columns import Column
from vaebench.config import require
from vaebench.distributions import LOG_2PI, BernoulliDecoder, StandardNormal, bernoulli_log_prob
from vaebench.model import Likelihood, PosteriorDraws, log_joint
from vaebench.optim import make_optimizer


@dataclass(frozen=True)
class MethodConfig:
    """Hyperparameters every method has. Subclasses add their own fields.

    ``lr``: Adam's learning rate for the encoder and decoder. ``betas``: Adam's β1, β2.
    ``optimizer``: ``adam`` (torch's), ``burda-adam`` (the IWAE authors' variant, see
    :class:`vaebench.optim.BurdaAdam`) or ``adam-normgrad`` (the VampPrior authors' Adam on
    gradients normalised per tensor, :class:`vaebench.optim.AdamNormGrad`), for every parameter
    group. ``eps``: the optimizer's ε (unset: its own default, 1e-8 for adam and adam-normgrad,
    1e-4 for burda-adam).
    """

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    optimizer: Literal["adam", "burda-adam", "adam-normgrad"] = "adam"
    eps: float | None = None

    def __post_init__(self) -> None:
        require(self.lr > 0, f"lr must be positive, got {self.lr}")
        require(self.eps is None or self.eps > 0, f"eps must be positive, got {self.eps}")
        require(all(0 <= b < 1 for b in self.betas), f"betas must lie in [0, 1), got {list(self.betas)}")


class Method(nn.Module):
    """Base class of all registered methods: a :class:`~vaebench.model.LatentVariableModel`
    with training losses.

    Subclasses set ``config_class``, build their inference networks in ``__init__`` (after
    calling ``super().__init__``, which builds ``self.prior`` and ``self.decoder``; a method
    with another prior replaces ``self.prior``), and implement :meth:`posterior` and
    :meth:`training_step`. A posterior with no density (AVB's) returns draws alone and says
    so in :attr:`has_density`.
    """

    name: ClassVar[str] = "method"
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    #: the per-example numbers :meth:`diagnostics` returns, declared for records and reports
    columns: ClassVar[tuple[Column, ...]] = ()
    #: the name under which :meth:`objective` is logged (``valid_<name>``); say what it is
    objective_name: ClassVar[str] = "elbo"
    #: names (as in ``state_dict``) of the buffers :meth:`training_step` updates in place, such as
    #: a KL warm-up's step count; the compiled steps (``compile = true``, ``"step"``) carry them
    mutable_buffers: tuple[str, ...] = ()

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
        self.prior: nn.Module = StandardNormal(latent_dim)
        self.decoder = BernoulliDecoder(
            self.backbone.decoder(self.architecture, latent_dim, self.data_shape), self.data_shape
        )
        self.optimizers: dict[str, torch.optim.Optimizer] = {}

    # --- the model protocol ----------------------------------------------------------------
    @property
    def likelihood(self) -> Likelihood:
        """p(x|z): the shared decoder."""
        return self.decoder

    @property
    def has_density(self) -> bool:
        """Whether :meth:`posterior` returns log q(z|x) (False for implicit posteriors)."""
        return True

    def posterior(self, x: torch.Tensor, n: int = 1) -> PosteriorDraws:
        """n reparameterised draws z ~ q(z|x), shape (n, batch, latent_dim), with log q(z|x)
        of shape (n, batch) where :attr:`has_density` (else None)."""
        raise NotImplementedError

    # --- training and validation -------------------------------------------------------------
    def training_step(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """Scalar losses to minimise, one per name in :meth:`param_groups`; other keys are logged only."""
        raise NotImplementedError

    def objective(self, x: torch.Tensor) -> torch.Tensor:
        """The training objective per example, for validation curves, logged as
        ``valid_<objective_name>``. Default: the one-sample ELBO (methods with a density)."""
        z, log_q = self.posterior(x, 1)
        if log_q is None:
            raise NotImplementedError(f"{self.name} has no density q(z|x): define its own objective")
        return (log_joint(self, z, x) - log_q).mean(0)

    @property
    def stopping_objective_name(self) -> str:
        """The name of :meth:`stopping_objective` (its validation value is ``valid_<name>``)."""
        return self.objective_name

    def stopping_objective(self, x: torch.Tensor) -> torch.Tensor:
        """What early stopping (``[train] early_stopping_patience``) watches on the validation set,
        per example, higher being better. Default: :meth:`objective`; a method whose objective is
        weighted during training (a KL warm-up) returns its unweighted bound."""
        return self.objective(x)

    def diagnostics(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The method's own per-example numbers (shape (batch,) each), one per entry of
        :attr:`columns`; evaluation stores them beside the estimators' columns. Default: none."""
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

    # --- pictures -------------------------------------------------------------------------------
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """E[x|z] at one posterior draw z ~ q(z|x)."""
        return self.likelihood.mean(self.posterior(x, 1).z[0])

    def sample(self, n: int) -> torch.Tensor:
        """E[x|z] of n draws from the model: z ~ p(z)."""
        return self.likelihood.mean(self.prior.sample(n))


#: the range to which ``scale = "logvar-hardtanh"`` clips the log-variance (the VampPrior authors')
LOGVAR_RANGE = (-6.0, 2.0)


class GaussianEncoder(nn.Module):
    """q(z|x) = N(μ(x), diag σ(x)²), the encoder of the VAE and of several baselines.

    ``scale``: how the body's second half becomes σ: ``softplus`` (softplus + ``min_scale``) or
    ``logvar-hardtanh`` (a log-variance clipped to [−6, 2] by hardtanh, σ = exp(½ · that), as the
    VampPrior authors' ``q_z_logvar``; σ then lies in [0.050, 2.72] and the clip passes no
    gradient outside it).
    """

    def __init__(self, body: nn.Module, min_scale: float = 1e-4,
                 scale: Literal["softplus", "logvar-hardtanh"] = "softplus") -> None:
        super().__init__()
        self.body = body  # x → 2·latent_dim
        self.min_scale = min_scale
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.distributions.Independent:
        loc, raw_scale = self.body(x).chunk(2, dim=-1)
        if self.scale == "logvar-hardtanh":
            scale = (0.5 * nn.functional.hardtanh(raw_scale, *LOGVAR_RANGE)).exp()
        else:
            scale = nn.functional.softplus(raw_scale) + self.min_scale
        # No argument validation: it costs a host sync per call, and NaNs must reach the loss,
        # where the training loop reports them as divergence.
        normal = torch.distributions.Normal(loc, scale, validate_args=False)
        return torch.distributions.Independent(normal, 1, validate_args=False)


__all__ = ["LOG_2PI", "BernoulliDecoder", "GaussianEncoder", "Method", "MethodConfig", "PosteriorDraws",
           "StandardNormal", "bernoulli_log_prob"]
