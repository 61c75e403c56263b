"""Evaluation of a trained method on a test set: every metric, batched, with standard errors."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from vaebench.methods import Method

from .config import require
from .metrics import elbo, importance_sampled_log_likelihood, reconstruction_metrics
from .quadrature import aggregate_kl, quadrature_log_likelihood


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation settings.

    ``is_samples``: K for the importance-sampled log-likelihood (0 skips it).
    ``elbo_samples``: Monte Carlo samples per example for the ELBO.
    ``batch_size``: test examples evaluated together.
    ``quadrature``: for 2-D latent spaces, also the exact log-likelihood by numerical
    quadrature and the KL of the aggregate posterior to the prior (:mod:`vaebench.quadrature`).
    """

    is_samples: int = 1000
    elbo_samples: int = 1
    batch_size: int = 100
    quadrature: bool = False

    def __post_init__(self) -> None:
        require(self.is_samples >= 0, f"is_samples must be non-negative, got {self.is_samples}")
        require(self.elbo_samples > 0, f"elbo_samples must be positive, got {self.elbo_samples}")
        require(self.batch_size > 0, f"batch_size must be positive, got {self.batch_size}")


def evaluate(method: Method, x: torch.Tensor, config: EvalConfig, *, progress: bool = True,
             description: str = "evaluate") -> dict[str, float]:
    """Mean and standard error over the examples of ``x`` of each metric, plus timing.

    Keys: ``elbo``, ``log_likelihood_is`` (when ``is_samples`` > 0), ``exact_log_likelihood``
    (with ``quadrature``), ``recon_*``, each with a ``*_sem`` twin; with ``quadrature`` also
    ``aggregate_kl`` (one number for the whole set); and ``eval_seconds``.
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
    out: dict[str, float] = {}
    for name, parts in per_example.items():
        values = torch.cat(parts).double()
        out[name] = values.mean().item()
        out[f"{name}_sem"] = (values.std() / len(values) ** 0.5).item() if len(values) > 1 else float("nan")
    if config.quadrature:
        with torch.no_grad():
            out["aggregate_kl"] = aggregate_kl(method, x)
    out["eval_seconds"] = time.perf_counter() - tic
    return out
