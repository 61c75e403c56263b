"""Adversarial Variational Bayes (Mescheder, Nowozin & Geiger, ICML 2017), as its authors
built it (LMescheder/AdversarialVariationalBayes, last commit).

The encoder is an implicit distribution, z = f(x, ε) with ε ~ N(0, I): it can represent
any posterior shape but has no density. An adversary T(x, z) is trained with the
logistic loss to tell pairs (x, z ~ q(z|x)) from pairs (x, z ~ p(z)); its optimum is
T*(x, z) = log q(z|x) − log p(z), so the ELBO E_q[log p(x|z) + log p(z) − log q(z|x)]
becomes E_q[log p(x|z) − T*(x, z)], which the encoder and decoder maximise. With any
other T that quantity is only the adversary's estimate of the ELBO, not a bound.

:class:`AdversarialMethod` holds everything AVB and its adaptive-contrast variant
(``avb-ac``, :mod:`.avb_ac`) share; they differ only in the encoder and in which
reference r(z|x) the adversary contrasts q(z|x) with (p(z) here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn

from vaebench.columns import Column
from vaebench.config import NEW_OPTION, require

from .adversarial_nets import InnerProductAdversary, NoiseEveryLayerMLP
from .base import Method, MethodConfig, PosteriorDraws
from .registry import register


@dataclass(frozen=True)
class AVBConfig(MethodConfig):
    """Hyperparameters of AVB. Defaults are the authors' at their last commit
    (``experiments/avb_mnist_8/run.py`` with ``run_avae.py`` and ``avb/avb/train.py``);
    their batch size, 128, is the study's ``train.batch_size``.

    ``lr``: Adam learning rate of encoder and decoder (authors: 5e-5).
    ``adversary_lr``: Adam learning rate of the adversary (authors: 1e-4).
    ``betas``: Adam's (β1, β2) for both optimizers (authors: β1 = 0.5).
    ``noise_dim``: dimension of the encoder's noise ε (authors: 32 for MNIST).
    ``adversary_steps``: adversary updates per encoder/decoder update. The last is simultaneous
    with the encoder/decoder update, as in the authors' ``get_train_op``; the others come
    first, on fresh draws (authors: 1; their toy notebook: 2).
    ``adversary_hidden``: widths of the hidden layers of each of the adversary's four branches
    θ(x), s(z), T_x(x), T_z(z) (authors: three of 1024).
    ``adversary_features``: dimension of the inner product ⟨θ(x), s(z)⟩ (authors: 8192).
    ``prior_in_adversary``: add ½‖z‖² = −log p(z) + const to T analytically, as the authors
    always do, so the network only has to learn log q(z|x).
    ``adversary_warmup_steps``: adversary-only updates against the initial encoder before the
    first training step (0: none, as the authors). A lever against an adversary that lags its
    encoder, not in the paper: each draws 100 training images (``WARMUP_BATCH``) with replacement,
    binarised afresh, and the updates come on top of the training budget.
    """

    lr: float = 5e-5
    betas: tuple[float, float] = (0.5, 0.999)
    adversary_lr: float = 1e-4
    noise_dim: int = 32
    adversary_steps: int = 1
    adversary_hidden: tuple[int, ...] = (1024, 1024, 1024)
    adversary_features: int = 8192
    prior_in_adversary: bool = True
    adversary_warmup_steps: int = field(default=0, metadata=NEW_OPTION)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.adversary_lr > 0, f"adversary_lr must be positive, got {self.adversary_lr}")
        require(self.noise_dim > 0, f"noise_dim must be positive, got {self.noise_dim}")
        require(self.adversary_steps >= 1, f"adversary_steps must be at least 1, got {self.adversary_steps}")
        require(all(h > 0 for h in self.adversary_hidden),
                f"adversary_hidden widths must be positive, got {list(self.adversary_hidden)}")
        require(self.adversary_features > 0,
                f"adversary_features must be positive, got {self.adversary_features}")
        require(self.adversary_warmup_steps >= 0,
                f"adversary_warmup_steps must be 0 (off) or positive, got {self.adversary_warmup_steps}")


class AdversarialTerms(NamedTuple):
    """What one pass of an adversarial method computes, per draw and example.

    ``z``: posterior draws, (n, B, latent). ``u``: what the adversary sees of them (z itself,
    or z normalised by r's moments). ``log_p_over_r``: log p(z) − log r(z|x), (n, B), the
    analytic part of the KL term (zero for plain AVB, where r = p).
    """

    z: torch.Tensor
    u: torch.Tensor
    log_p_over_r: torch.Tensor


#: posterior and reference draws per example for :meth:`AdversarialMethod.diagnostics`
DIAGNOSTIC_DRAWS = 64
#: training images per adversary update of the warm-up (``adversary_warmup_steps``)
WARMUP_BATCH = 100


class AdversarialMethod(Method):
    """Shared machinery of AVB and AVB-AC: the inner-product adversary, two optimizers,
    the adversary's ELBO estimate and its diagnostics. Subclasses build ``self.encoder``
    and implement :meth:`terms`."""

    config_class = AVBConfig
    config: AVBConfig
    objective_name = "adversary_elbo_estimate"
    columns = (
        Column("adversary_kl", "E_q[T(x,z) − log p(z) + log r(z|x)]: the adversary's estimate of KL(q(z|x) ‖ p(z)), "
               "not a bound; ⚠ where it falls more than 3 nats short of the Gaussian lower bound on that KL",
               higher_is_better=None, heading="adversary KL est.",
               should_not_fall_below=("kl_gaussian_lower_bound", 3.0)),
        Column("elbo_adversary_est", "E_q[log p(x|z)] − the adversary's KL estimate: the adversary's estimate of "
               "the ELBO, not a bound (the ELBO itself only where T is the optimal adversary)",
               higher_is_better=True, heading="ELBO (adversary est.)"),
        Column("adversary_accuracy", "fraction of posterior and prior draws the adversary tells apart "
               "(0.5: it cannot tell them apart)", higher_is_better=None, heading="adversary accuracy"),
    )

    @property
    def has_density(self) -> bool:
        """An implicit posterior: draws, no density."""
        return False

    def __init__(self, config: AVBConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.adversary = InnerProductAdversary(self.data_dim, self.latent_dim, config.adversary_hidden,
                                               config.adversary_features, config.prior_in_adversary)

    # --- the part subclasses change ---------------------------------------------------------
    def terms(self, x: torch.Tensor, n: int) -> AdversarialTerms:
        """n posterior draws per example and what the adversary and the objective need of them."""
        raise NotImplementedError

    # --- shared ---------------------------------------------------------------------------------
    def draw_objective(self, x: torch.Tensor, t: AdversarialTerms, t_q: torch.Tensor) -> torch.Tensor:
        """Per draw and example: log p(x|z) + log p(z) − log r(z|x) − T(x, u), the ELBO at T = T*."""
        return self.decoder.log_prob(x, t.z) + t.log_p_over_r - t_q

    def adversary_loss(self, features: tuple[torch.Tensor, torch.Tensor], t_q: torch.Tensor) -> torch.Tensor:
        """Logistic loss: posterior-side pairs are labelled 1, pairs with u ~ N(0, I) labelled 0."""
        t_p = self.adversary.score(features, self.prior.sample(*t_q.shape))
        return nn.functional.softplus(-t_q).mean() + nn.functional.softplus(t_p).mean()

    def training_step(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        # One draw per example, as the authors do.
        t = self.terms(batch, 1)
        # One evaluation of T on the posterior side serves both losses: apply_losses sends
        # each loss's gradient to its own group only, so the updates are simultaneous. The
        # x-branches of T are shared by the posterior and the prior side.
        features = self.adversary.x_features(batch)
        t_q = self.adversary.score(features, t.u)
        elbo = self.draw_objective(batch, t, t_q)
        return {"model": -elbo.mean(), "adversary": self.adversary_loss(features, t_q),
                "T_posterior": t_q.mean()}

    def adversary_update(self, batch: torch.Tensor) -> torch.Tensor:
        """One update of the adversary alone, on fresh posterior draws, the encoder fixed; returns its loss."""
        with torch.no_grad():
            u = self.terms(batch, 1).u
        features = self.adversary.x_features(batch)
        loss = self.adversary_loss(features, self.adversary.score(features, u))
        self.apply_losses({"adversary": loss}, names=["adversary"])
        return loss.detach()

    def update(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        for _ in range(self.config.adversary_steps - 1):
            self.adversary_update(batch)
        return super().update(batch)

    def init_from_data(self, train: torch.Tensor) -> None:
        """The shared initialisation, then ``adversary_warmup_steps`` adversary-only updates against
        the initial encoder. Training calls this once, before its first step (never on resume), so
        the adversary's optimizer state from the warm-up carries into training."""
        super().init_from_data(train)
        for _ in range(self.config.adversary_warmup_steps):
            # with replacement, so that any data set (the 4-point toy too) fills a batch; bernoulli
            # binarises grey levels afresh and leaves binary images as they are
            index = torch.randint(len(train), (WARMUP_BATCH,), device=train.device)
            self.adversary_update(torch.bernoulli(train[index]))

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"model": [*self.encoder.parameters(), *self.decoder.parameters()],
                "adversary": list(self.adversary.parameters())}

    def optimizer_settings(self) -> dict[str, dict[str, Any]]:
        betas = tuple(self.config.betas)
        return {"model": {"lr": self.config.lr, "betas": betas},
                "adversary": {"lr": self.config.adversary_lr, "betas": betas}}

    def adversary_kl_terms(self, x: torch.Tensor, n: int) -> tuple[AdversarialTerms, torch.Tensor]:
        """n draws per example and the adversary's KL estimate at each, T(x, u) − log p(z) + log r(z|x):
        shape (n, B). At T = T* it is log q(z|x) − log p(z), whose mean is KL(q(z|x) ‖ p(z))."""
        t = self.terms(x, n)
        return t, self.adversary(x, t.u) - t.log_p_over_r

    def posterior(self, x: torch.Tensor, n: int = 1) -> PosteriorDraws:
        """n draws z ~ q(z|x) per example, with no density."""
        return PosteriorDraws(self.terms(x, n).z, None)

    def objective(self, x: torch.Tensor) -> torch.Tensor:
        """Not a bound: the adversary's ELBO estimate E_q[log p(x|z)] − E_q[T(x, u) − log p(z) + log r(z|x)]
        per example from one draw, which equals the ELBO only where T is the optimal adversary."""
        t, kl = self.adversary_kl_terms(x, 1)
        return (self.decoder.log_prob(x, t.z) - kl).mean(0)

    @torch.no_grad()
    def diagnostics(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per example, from ``DIAGNOSTIC_DRAWS`` posterior and as many reference draws:

        ``adversary_kl``: the adversary's KL estimate E_q[T(x, u) − log p(z) + log r(z|x)];
        ``elbo_adversary_est``: E_q[log p(x|z)] − ``adversary_kl``, the adversary's ELBO estimate;
        ``adversary_accuracy``: the mean of the fractions of posterior draws with T > 0 and of
        reference draws u ~ N(0, I) with T < 0 (0.5 when T cannot tell them apart).

        The posterior's spread and the Gaussian-moment lower bound on the KL are computed by
        the evaluation for every implicit posterior (:func:`vaebench.metrics.posterior_pass`).
        """
        # in chunks of examples, so that the largest activation (draws × examples × width)
        # stays near 2^24 elements whatever the adversary's width
        width = max(self.data_dim, self.config.adversary_features, *self.config.adversary_hidden)
        size = max(1, (1 << 24) // (DIAGNOSTIC_DRAWS * width))
        parts = [self._diagnostics(chunk) for chunk in x.split(size)]
        return {name: torch.cat([part[name] for part in parts]) for name in parts[0]}

    def _diagnostics(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        n = DIAGNOSTIC_DRAWS
        t = self.terms(x, n)
        features = self.adversary.x_features(x)
        t_q = self.adversary.score(features, t.u)
        t_p = self.adversary.score(features, self.prior.sample(n, x.shape[0]))
        kl = (t_q - t.log_p_over_r).mean(0)
        return {
            "adversary_kl": kl,
            "elbo_adversary_est": self.decoder.log_prob(x, t.z).mean(0) - kl,
            "adversary_accuracy": 0.5 * ((t_q > 0).float().mean(0) + (t_p < 0).float().mean(0)),
        }


@register("avb")
class AVB(AdversarialMethod):
    """Adversarial Variational Bayes: implicit q(z|x) = f(x, ε), adversary T(x, z) against p(z).

    Design, after the authors' code (LMescheder/AdversarialVariationalBayes):

    - encoder: ε enters through a learned linear map before every layer, x centred to
      2x − 1 (``avb/avb/models/full0.py``; :class:`~.adversarial_nets.NoiseEveryLayerMLP`),
      output head initialised at ~0; with ``backbone = "conv"`` the shared conv encoder,
      which adds ε after every convolution (``avb/avb/models/conv0.py``, ``add_linear``);
    - adversary: T(x, z) = ⟨θ(x), s(z)⟩ + T_x(x) + T_z(z) + ½‖z‖²
      (``avb/avb/models/conv0.py``, ``adversary``; :class:`~.adversarial_nets.InnerProductAdversary`);
    - losses: the encoder/decoder minimise E_q[−log p(x|z) + T(x, z)], the adversary the
      logistic loss, one posterior draw per example, both updated simultaneously from one
      graph with Adam, β1 = 0.5 (``avb/avb/__init__.py``, ``avb/avb/train.py``).
    """

    def __init__(self, config: AVBConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        if self.architecture.backbone == "mlp":
            self.encoder = NoiseEveryLayerMLP(self.data_dim, self.architecture.hidden, self.latent_dim,
                                              config.noise_dim, self.architecture.activation)
        else:
            self.encoder = self.backbone.encoder(self.architecture, self.data_shape, self.latent_dim,
                                                 extra_dim=config.noise_dim)

    def terms(self, x: torch.Tensor, n: int) -> AdversarialTerms:
        eps = torch.randn(n, x.shape[0], self.config.noise_dim, device=x.device, dtype=x.dtype)
        z = self.encoder(x, eps)
        return AdversarialTerms(z=z, u=z, log_p_over_r=z.new_zeros(z.shape[:-1]))
