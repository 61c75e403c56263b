"""Evaluation of a trained method on a test set: every metric, batched, with standard errors."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import torch
from tqdm.auto import tqdm

from vaebench.methods import Method

from .ais import ais_metrics
from .config import require
from .metrics import elbo, importance_sampled_log_likelihood, mean_and_sem, reconstruction_metrics
from .quadrature import aggregate_kl, quadrature_log_likelihood


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation settings.

    ``is_samples``: K for the importance-sampled log-likelihood (0 skips it).
    ``elbo_samples``: Monte Carlo samples per example for the ELBO.
    ``batch_size``: test examples evaluated together.
    ``quadrature``: for 2-D latent spaces, also the exact log-likelihood by numerical
    quadrature and the KL of the aggregate posterior to the prior (:mod:`vaebench.quadrature`).

    AIS (:mod:`vaebench.ais`): ``ais_steps`` temperatures (0 skips AIS and BDMC),
    ``ais_chains`` chains per example, ``ais_leapfrog`` leapfrog steps per HMC transition,
    ``ais_schedule`` (``sigmoid`` or ``linear``), on the first ``ais_examples`` test
    examples; ``ais_initial``: start from the ``prior`` (method-neutral) or a Gaussian
    ``fitted`` to the posterior samples. ``bdmc_examples``: pairs simulated from the model
    for the BDMC gap at the same settings (0 skips it).
    """

    is_samples: int = 1000
    elbo_samples: int = 1
    batch_size: int = 100
    quadrature: bool = False
    ais_steps: int = 0
    ais_chains: int = 16
    ais_leapfrog: int = 10
    ais_schedule: Literal["sigmoid", "linear"] = "sigmoid"
    ais_examples: int = 100
    ais_initial: Literal["prior", "fitted"] = "prior"
    bdmc_examples: int = 0

    def __post_init__(self) -> None:
        require(self.is_samples >= 0, f"is_samples must be non-negative, got {self.is_samples}")
        require(self.elbo_samples > 0, f"elbo_samples must be positive, got {self.elbo_samples}")
        require(self.batch_size > 0, f"batch_size must be positive, got {self.batch_size}")
        require(self.ais_steps >= 0, f"ais_steps must be non-negative, got {self.ais_steps}")
        for name in ("ais_chains", "ais_leapfrog", "ais_examples"):
            require(getattr(self, name) > 0, f"{name} must be positive, got {getattr(self, name)}")
        require(self.bdmc_examples >= 0, f"bdmc_examples must be non-negative, got {self.bdmc_examples}")


def evaluate(method: Method, x: torch.Tensor, config: EvalConfig, *, progress: bool = True,
             description: str = "evaluate") -> dict[str, float]:
    """Mean and standard error over the examples of ``x`` of each metric, plus timing.

    Keys: ``elbo``, ``log_likelihood_is`` (when ``is_samples`` > 0), ``exact_log_likelihood``
    (with ``quadrature``), ``recon_*``, each with a ``*_sem`` twin; with ``quadrature`` also
    ``aggregate_kl`` (one number for the whole set); with ``ais_steps`` > 0 also
    ``log_likelihood_ais``, ``ais_ess``, ``ais_acceptance``, ``ais_step_size`` and, with
    ``bdmc_examples``, ``bdmc_lower``, ``bdmc_upper``, ``bdmc_gap`` (see
    :func:`vaebench.ais.ais_metrics`); and ``eval_seconds``.
    """
    tic = time.perf_counter()
    method.eval()
    per_example: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        chunks = tqdm(x.split(config.batch_size), desc=description, disable=None if progress else True,
                      leave=False)
        for chunk in chunks:
            values = {"elbo": elbo(method, chunk, config.elbo_samples), **reconstruction_metrics(method, chunk)}
            if config.is_samples:
                values["log_likelihood_is"] = importance_sampled_log_likelihood(method, chunk, config.is_samples)
            if config.quadrature:
                values["exact_log_likelihood"] = quadrature_log_likelihood(method, chunk)
            for name, value in values.items():
                per_example.setdefault(name, []).append(value)
    out: dict[str, float] = mean_and_sem(per_example)
    if config.ais_steps:
        out.update(ais_metrics(method, x[: config.ais_examples], n_chains=config.ais_chains,
                               n_steps=config.ais_steps, leapfrog_steps=config.ais_leapfrog,
                               schedule=config.ais_schedule, initial=config.ais_initial,
                               bdmc_examples=config.bdmc_examples, batch_size=config.batch_size,
                               progress=progress))
    if config.quadrature:
        with torch.no_grad():
            out["aggregate_kl"] = aggregate_kl(method, x)
    out["eval_seconds"] = time.perf_counter() - tic
    return out
