"""A weighted KL term, β (``kl_weight``) and a linear warm-up (``kl_warmup_steps``), for methods
whose training objective has a KL term.

Training then minimises −[log p(x|z) − w_t · (log q(z|x) − log p(z))] at step t, with
w_t = β · min(1, t / kl_warmup_steps) (w_t = β without a warm-up): the β-VAE objective
(Higgins et al., ICLR 2017) and the KL warm-up of Bowman et al. (CoNLL 2016) and Sønderby et
al. (NeurIPS 2016), with which the VampPrior paper (Tomczak & Welling, AISTATS 2018) trains.

We follow the VampPrior authors' code, jmtomczak/vae_vampprior: ``utils/training.py``
(``train_vae``) sets ``beta = min(1, epoch / warmup)`` with epochs counted from 1 (so the first
epoch already has weight 1/warmup, never 0), and ``models/VAE.py`` (``calculate_loss``) trains
on ``−RE + beta · KL`` with KL = log q(z|x) − log p(z) at the posterior draw. Where we differ:

- the weight rises per optimizer step, not per epoch: step t = 1, 2, … (the t-th call of
  ``training_step``) has w_t = β · min(1, t / kl_warmup_steps). With kl_warmup_steps = warmup ×
  steps per epoch, each epoch's last step has their epoch's weight and its earlier steps a little
  less; ``kl_warmup_hold`` = steps per epoch holds each epoch's weight for all its steps, theirs;
- their validation loss is computed with beta = 1 (``utils/evaluation.py``: ``calculate_loss``
  at its default); here validation reports the training objective at the current weight, as
  every method's ``objective`` does, logged as ``valid_beta_<name>`` (``valid_beta_elbo`` for
  the VAE), because with β ≠ 1 or during a warm-up it is not the method's bound. The ELBO and
  log-likelihood estimates of the final evaluation are unweighted, as for every method;
- β is a separate option (their code has only the warm-up; β ≠ 1 is the β-VAE).

The step count is a persistent buffer (``kl_warmup_step``, registered only when the warm-up is
on, so a model without one keeps its state_dict), saved in checkpoints and restored on resume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from vaebench.config import NEW_OPTION, require

from .base import MethodConfig


@dataclass(frozen=True)
class KLWeightConfig(MethodConfig):
    """``kl_weight``: β, the weight of the KL term in the training objective (1: the method's own
    bound; β > 1 the β-VAE's stronger pull towards the prior). Any value other than 1, or a
    warm-up, makes the objective no bound: it is then logged as ``valid_beta_<name>``.

    ``kl_warmup_steps``: raise the KL weight linearly over this many optimizer steps, step t
    weighting the KL by β · min(1, t / kl_warmup_steps), as the VampPrior code's warm-up (per
    epoch there; 0: no warm-up). Validation during the warm-up reports the weighted objective
    at the current weight.

    ``kl_warmup_hold``: raise the weight in stairs, holding it for blocks of this many steps: step
    t weighs the KL by β · min(1, h ⌈t / h⌉ / kl_warmup_steps). With h = the steps of an epoch the
    weight is the VampPrior code's, epoch e's steps all weighted β · min(1, e / warmup epochs)
    (0: the linear ramp above).
    """

    kl_weight: float = field(default=1.0, metadata=NEW_OPTION)
    kl_warmup_steps: int = field(default=0, metadata=NEW_OPTION)
    kl_warmup_hold: int = field(default=0, metadata=NEW_OPTION)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(math.isfinite(self.kl_weight) and self.kl_weight > 0,
                f"kl_weight must be a positive number, got {self.kl_weight}")
        require(self.kl_warmup_steps >= 0, f"kl_warmup_steps must be 0 (off) or positive, got {self.kl_warmup_steps}")
        require(self.kl_warmup_hold >= 0, f"kl_warmup_hold must be 0 (off) or positive, got {self.kl_warmup_hold}")
        require(not self.kl_warmup_hold or self.kl_warmup_steps,
                "kl_warmup_hold holds the steps of a warm-up: set kl_warmup_steps too")

    @property
    def weighted_kl(self) -> bool:
        """Whether the KL term is weighted at all (β ≠ 1 or a warm-up)."""
        return self.kl_weight != 1 or self.kl_warmup_steps > 0


class KLWeighting:
    """Mixin for a :class:`~vaebench.methods.base.Method` whose config is a :class:`KLWeightConfig`.

    Call :meth:`init_kl_weight` in ``__init__`` (after ``Method.__init__``), take the weight of
    each training step from :meth:`kl_weight_now` with ``advance=True`` (once per
    ``training_step``) and that of validation with ``advance=False``. A subclass whose
    ``training_step`` does not use the weight must refuse ``kl_weight`` ≠ 1 and a warm-up.
    """

    config: KLWeightConfig
    objective_name: str
    mutable_buffers: tuple[str, ...]
    kl_warmup_step: torch.Tensor

    def init_kl_weight(self) -> None:
        """Register the step count (warm-up only) and name the objective after its weighting."""
        if self.config.kl_warmup_steps:
            # persistent: checkpoints carry it, so a resumed run continues the warm-up
            self.register_buffer("kl_warmup_step", torch.zeros((), dtype=torch.long))  # type: ignore[attr-defined]
            self.mutable_buffers = (*self.mutable_buffers, "kl_warmup_step")  # training_step counts in it
        if self.config.weighted_kl:
            # per instance: the class keeps its own name, which the registry checks
            self.objective_name = f"beta_{type(self).objective_name}"

    @property
    def weighted_kl(self) -> bool:
        return self.config.weighted_kl

    @property
    def stopping_objective_name(self) -> str:
        """The unweighted bound's name (the class's ``objective_name``: ``elbo`` for the VAE)."""
        return type(self).objective_name

    def stopping_objective(self, x: torch.Tensor) -> torch.Tensor:
        """The method's objective at KL weight 1, its bound, whatever β and the warm-up: what early
        stopping watches, as the VampPrior authors' code validates with ``beta = 1``."""
        self._unweighted = True
        try:
            return self.objective(x)  # type: ignore[attr-defined]
        finally:
            self._unweighted = False

    def kl_weight_at(self, step: int) -> float:
        """The KL weight of training step ``step`` (counted from 1): β · min(1, step / kl_warmup_steps)."""
        warmup, hold = self.config.kl_warmup_steps, self.config.kl_warmup_hold
        if hold:
            step = hold * math.ceil(step / hold)
        return self.config.kl_weight * (min(1.0, step / warmup) if warmup else 1.0)

    def kl_weight_now(self, *, advance: bool) -> float | torch.Tensor:
        """The KL weight of the current step: a number without a warm-up, else a 0-dim float64
        tensor computed from the step count on the model's device (no host sync, and a
        compiled step reads it rather than baking in a constant). ``advance``: count a new
        training step first (once per ``training_step``); validation passes False."""
        warmup = self.config.kl_warmup_steps
        if getattr(self, "_unweighted", False) and not advance:
            return 1.0
        if not warmup:
            return self.config.kl_weight
        if advance:
            self.kl_warmup_step.add_(1)
        step = self.kl_warmup_step.double()
        hold = self.config.kl_warmup_hold
        if hold:  # the step rounded up to its block's last, the block's weight
            step = torch.ceil(step / hold) * hold
        return (step / warmup).clamp(max=1.0) * self.config.kl_weight


__all__ = ["KLWeightConfig", "KLWeighting"]
