"""Evaluation of a trained method on a test set: every column on the same images, per example.

Every compared column (AIS, importance sampling, ELBO, reconstruction, the exact
log-likelihood, method diagnostics) is computed on the same test images, the first
``examples`` of the test split, and stored per example so that methods can be compared
pair by pair. Sample-based columns come from one set of posterior draws per batch
(:func:`vaebench.metrics.posterior_pass`); AIS starts from a Gaussian fitted to those draws.

The model is read through :mod:`vaebench.model` (prior, likelihood, posterior), plus two
optional attributes of a method: ``diagnostics(x)``, its own per-example numbers, and
``columns``, their declarations (:class:`~vaebench.columns.Column`), which the evaluation
checks against what ``diagnostics`` returns and hands on to the record.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from .active_units import ActiveUnits, exact_posterior_mean, from_means, latent_layers
from .ais import Density, GapSearch, Gaussian, ais_log_likelihood, bdmc, bdmc_gap_search, refined_draws
from .columns import Column
from .config import NEW_OPTION, require
from .metrics import gaussian_moments, importance_sampled_log_likelihood, mean_and_sem, posterior_pass
from .model import LatentVariableModel
from .quadrature import aggregate_kl, quadrature_log_likelihood

#: the AIS start is the posterior draws' Gaussian with its sd widened by this factor: AIS is
#: valid from any full-support start, and a start wider than the posterior is the safe side
FIT_INFLATE = 1.2
#: added to the fitted covariance's diagonal, so that a nearly flat direction of the draws
#: does not force tiny HMC steps in every direction
FIT_VARIANCE_FLOOR = 1e-4
#: below this sd in every dimension the draws are a point (a deterministic encoder): AIS then
#: starts that example from N(0, I) instead (the standard prior; for a model with another prior
#: still a valid full-support start, but not its prior)
MIN_FITTED_STD = 1e-4


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation settings.

    ``examples``: the first ``examples`` images of the test split are evaluated (None: all
    of it); every compared column uses exactly these images.
    ``is_samples``: K for the importance-sampled log-likelihood with q(z|x) as proposal,
    for methods with a density (0 skips it). ``elbo_samples``: at least this many posterior
    draws for the ELBO and reconstruction columns. ``moment_samples``: at least this many
    draws for the moments of the posterior (the Gaussian bound on the KL term for implicit
    posteriors, and the Gaussian AIS starts from). One set of max(is_samples, elbo_samples,
    moment_samples) draws per image serves all of them.
    ``full_test_is_samples``: when > 0, also importance sampling with this many samples on
    the whole test split (methods with a density only), reported as a full-test-set column.
    ``batch_size``: test images evaluated together.
    ``quadrature``: for 2-D latent spaces, also the exact log-likelihood by numerical
    quadrature and the KL of the aggregate posterior to the prior (:mod:`vaebench.quadrature`).

    AIS (:mod:`vaebench.ais`): ``ais_initial``: ``posterior`` starts each image's chains from
    a Gaussian fitted to its posterior draws (for a Gaussian q(z|x) that is q itself up to
    sampling noise), ``prior`` from N(0, I), ``auto`` (the default) from the posterior's
    Gaussian where q(z|x) has a density and from the prior for implicit posteriors (AVB's
    draws are far narrower than its model's true posterior: from their Gaussian the BDMC gap
    was 175 nats at 100 temperatures, against 7 from the prior). ``ais_steps`` temperatures
    from the posterior's Gaussian (0 skips AIS and BDMC), ``ais_prior_steps`` from the prior
    (None: ``ais_steps``), ``ais_chains`` chains per image, ``ais_leapfrog`` leapfrog steps per
    HMC transition, ``ais_schedule`` (``sigmoid`` or ``linear``); step sizes are tuned by a
    pilot run of ``ais_pilot_steps`` temperatures (None: a fifth of the run's, at least 10)
    with ``ais_pilot_chains`` chains, then frozen. ``ais_refine_steps`` (with ``ais_initial =
    "posterior"``): before the Gaussian is fitted, ``ais_chains`` of each image's posterior draws
    move by that many HMC transitions on the model's true posterior p(z|x)
    (:func:`vaebench.ais.refined_draws`), and the Gaussian is fitted to the second half of their
    states; this gives every method, implicit posteriors and deterministic encoders included,
    the same kind of start, near p(z|x) whatever q(z|x) is. ``bdmc_examples``: pairs simulated from the model for the BDMC
    gap at the same settings (0 skips it).

    ``active_units``: also count the active units (:mod:`vaebench.active_units`) over the same
    images, from the exact posterior means where the posterior offers them and otherwise from the
    means of the one pass's ``posterior_samples`` draws per image. Off by default, and left out of
    the evaluation's id at its default, so that existing studies keep their records.

    Gap-targeted AIS: with ``bdmc_gap_target`` (nats) the temperatures are not fixed but found:
    starting from ``ais_steps`` (or ``ais_prior_steps``) they double, up to ``ais_max_steps``,
    until the BDMC gap on the ``bdmc_examples`` simulated pairs is at most the target
    (:func:`vaebench.ais.bdmc_gap_search`); the test images' AIS then runs with that schedule,
    and the summary says which it was and whether the target was met. Without a target
    (the default) the temperatures are the fixed ones above, as before the option existed.
    """

    examples: int | None = None
    is_samples: int = 1000
    elbo_samples: int = 1
    moment_samples: int = 512
    full_test_is_samples: int = 0
    batch_size: int = 100
    quadrature: bool = False
    ais_steps: int = 0
    ais_prior_steps: int | None = None
    ais_chains: int = 16
    ais_leapfrog: int = 5
    ais_schedule: Literal["sigmoid", "linear"] = "sigmoid"
    ais_initial: Literal["auto", "posterior", "prior"] = "auto"
    ais_pilot_steps: int | None = None
    ais_pilot_chains: int = 4
    bdmc_examples: int = 0
    active_units: bool = field(default=False, metadata=NEW_OPTION)
    bdmc_gap_target: float | None = field(default=None, metadata=NEW_OPTION)
    ais_max_steps: int | None = field(default=None, metadata=NEW_OPTION)
    ais_refine_steps: int = field(default=0, metadata=NEW_OPTION)

    def __post_init__(self) -> None:
        require(self.examples is None or self.examples > 0, f"examples must be positive, got {self.examples}")
        for name in ("is_samples", "full_test_is_samples", "ais_steps", "bdmc_examples"):
            require(getattr(self, name) >= 0, f"{name} must be non-negative, got {getattr(self, name)}")
        for name in ("elbo_samples", "batch_size", "ais_chains", "ais_leapfrog", "ais_pilot_chains"):
            require(getattr(self, name) > 0, f"{name} must be positive, got {getattr(self, name)}")
        require(self.moment_samples >= 2, f"moment_samples must be at least 2, got {self.moment_samples}")
        require(self.ais_prior_steps is None or self.ais_prior_steps > 0,
                f"ais_prior_steps must be positive, got {self.ais_prior_steps}")
        require(self.ais_pilot_steps is None or self.ais_pilot_steps > 0,
                f"ais_pilot_steps must be positive, got {self.ais_pilot_steps}")
        require(self.ais_refine_steps >= 0, f"ais_refine_steps must be non-negative, got {self.ais_refine_steps}")
        require(not self.ais_refine_steps or self.ais_initial == "posterior",
                f"ais_refine_steps refines the posterior's draws that AIS starts from: set ais_initial = "
                f"\"posterior\" too, got {self.ais_initial!r}")
        self._check_gap_target()

    def _check_gap_target(self) -> None:
        target, cap = self.bdmc_gap_target, self.ais_max_steps
        if target is None:
            require(cap is None, f"ais_max_steps ({cap}) caps the temperatures of gap-targeted AIS: "
                                 "set bdmc_gap_target too, or leave it out")
            return
        require(math.isfinite(target) and target > 0,
                f"bdmc_gap_target must be a positive, finite number of nats, got {target}")
        require(self.ais_steps > 0, "bdmc_gap_target needs AIS: ais_steps is 0")
        require(self.bdmc_examples > 0, "bdmc_gap_target needs bdmc_examples > 0: the gap is measured on images "
                                        "simulated from the model")
        require(cap is not None, "bdmc_gap_target needs ais_max_steps, the most temperatures to try")
        for name in ("ais_steps", "ais_prior_steps"):
            start = getattr(self, name)
            require(start is None or cap >= start,
                    f"ais_max_steps ({cap}) is below {name} ({start}), where the search for temperatures starts")

    @property
    def posterior_samples(self) -> int:
        """Posterior draws per image in the one pass that serves IS, ELBO, reconstruction and moments."""
        return max(self.is_samples, self.elbo_samples, self.moment_samples)


@dataclass
class Evaluation:
    """What :func:`evaluate` measured.

    ``summary``: metric → mean over the evaluated images, ``<metric>_sem`` → its standard
    error, plus scalars: ``n`` (images evaluated), ``bdmc_lower``, ``bdmc_upper``,
    ``bdmc_gap`` (with ``_sem``, on ``bdmc_examples`` simulated images), ``aggregate_kl``,
    and the full-test-set ``log_likelihood_is_full`` (with ``_sem``) over ``n_full`` images.
    ``per_example``: metric → float32 array aligned with ``indices`` (int64 indices into the
    test split). ``per_example_full``/``indices_full``: the same for full-test-set columns.
    ``seconds``: wall seconds per part (``posterior_pass``, ``diagnostics``, ``quadrature``,
    ``ais``, ``bdmc``, ``is_full``, whichever ran) and ``total``. ``columns``: the method's
    declarations of its own per-example columns (those of ``diagnostics``). ``active_units``:
    A_u per latent unit and the count (:class:`~vaebench.active_units.ActiveUnits`), where asked for.
    ``bdmc_search``: with a gap target, one entry per schedule tried, in order: its
    ``temperatures``, ``bdmc_gap`` and ``bdmc_gap_sem`` (empty without a target).
    """

    summary: dict[str, float]
    per_example: dict[str, np.ndarray]
    indices: np.ndarray
    seconds: dict[str, float]
    columns: tuple[Column, ...] = ()
    per_example_full: dict[str, np.ndarray] = field(default_factory=dict)
    indices_full: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    active_units: ActiveUnits | None = None
    bdmc_search: list[dict[str, float]] = field(default_factory=list)


def fitted_gaussian(mean: torch.Tensor, cov: torch.Tensor, dtype: torch.dtype = torch.float32) -> Gaussian:
    """The AIS start from posterior moments (B, D), (B, D, D): widened, floored, and N(0, I) for
    images whose draws are a single point (a valid start whatever the model's prior)."""
    eye = torch.eye(mean.shape[-1], dtype=cov.dtype, device=cov.device)
    point = cov.diagonal(dim1=-2, dim2=-1).amax(-1) < MIN_FITTED_STD**2
    cov = torch.where(point[:, None, None], eye, FIT_INFLATE**2 * cov + FIT_VARIANCE_FLOOR * eye)
    mean = torch.where(point[:, None], torch.zeros_like(mean), mean)
    return Gaussian(mean.to(dtype), cov)


def posterior_start(model: LatentVariableModel, x: torch.Tensor, config: EvalConfig) -> Gaussian:
    """The Gaussian fitted to each image's posterior draws, refined on p(z|x) where ``config`` says so."""
    if config.ais_refine_steps:
        return _refined_start(model, x, config)
    with torch.no_grad():
        return fitted_gaussian(*gaussian_moments(model.posterior(x, config.posterior_samples).z), dtype=x.dtype)


def _refined_start(model: LatentVariableModel, x: torch.Tensor, config: EvalConfig,
                   progress: bool = False) -> Gaussian:
    """The Gaussian fitted to ``ais_chains`` posterior draws per image after ``ais_refine_steps`` HMC
    transitions on p(z|x)."""
    with torch.no_grad():
        z0 = model.posterior(x, config.ais_chains).z
    draws = refined_draws(model, x, z0, n_transitions=config.ais_refine_steps,
                          leapfrog_steps=config.ais_leapfrog, progress=progress)
    return fitted_gaussian(*gaussian_moments(draws), dtype=x.dtype)


def _diagnostics(model: LatentVariableModel, columns: tuple[Column, ...], x: torch.Tensor
                 ) -> dict[str, torch.Tensor]:
    """The model's own per-example numbers, checked against what it declares."""
    values = getattr(model, "diagnostics", lambda _: {})(x)
    declared = {c.name for c in columns}
    if set(values) != declared:
        raise ValueError(f"diagnostics returned {sorted(values)} but the method declares {sorted(declared)} "
                         "in its columns: declare every per-example number it reports, and only those")
    return values


def _to_numpy(values: list[torch.Tensor]) -> np.ndarray:
    return torch.cat(values).detach().float().cpu().numpy()


def evaluate(method: LatentVariableModel, test: torch.Tensor, config: EvalConfig, *, progress: bool = True,
             description: str = "evaluate") -> Evaluation:
    """Every column of ``config`` on the first ``config.examples`` images of ``test``.

    Per-example columns: ``recon_bernoulli_nll``, ``recon_mse``, ``recon_pixel_error``,
    ``posterior_sd_median``; with a density ``elbo`` (a Monte Carlo lower bound on log p(x))
    and ``log_likelihood_is``; for implicit posteriors ``kl_gaussian_lower_bound`` and
    ``elbo_upper_bound`` instead (see :func:`vaebench.metrics.posterior_pass`); whatever
    ``method.diagnostics`` returns; with ``quadrature`` ``exact_log_likelihood``; with
    ``ais_steps`` ``log_likelihood_ais``, ``ais_ess``, ``ais_acceptance``, ``ais_step_size``.
    The summary also says where AIS started (``ais_prior_start``: 1 from the prior, 0 from
    the posterior's Gaussian) and with how many temperatures (``ais_temperatures``); with a
    ``bdmc_gap_target``, whether the BDMC gap met it (``bdmc_gap_target_met``: 1 or 0), the
    temperatures being the first on the ladder that did, or the cap.
    """
    tic = time.perf_counter()
    if isinstance(method, torch.nn.Module):
        method.eval()
    declared: tuple[Column, ...] = tuple(getattr(method, "columns", ()))
    n_draws = config.posterior_samples
    require(n_draws > method.latent_dim, f"moment_samples must exceed the latent size {method.latent_dim} for a "
                                          f"covariance of full rank, got {n_draws} posterior draws")
    x = test if config.examples is None else test[: config.examples]
    from_posterior = config.ais_initial == "posterior" or (config.ais_initial == "auto" and method.has_density)
    seconds: dict[str, float] = defaultdict(float)
    columns: dict[str, list[torch.Tensor]] = defaultdict(list)
    unit_means: list[tuple[torch.Tensor, torch.Tensor | None]] = []  # per batch, for the active units

    def timed(part: str, start: float) -> None:
        seconds[part] += time.perf_counter() - start

    settings = _ais_settings(config, from_posterior)
    search = None
    if config.ais_steps and config.bdmc_gap_target is not None:
        t = time.perf_counter()  # the temperatures are found first, on simulated data, then used below
        search = _gap_search(method, config, from_posterior, progress)
        settings["n_steps"] = search.temperatures
        timed("bdmc", t)
    chunks = tqdm(x.split(config.batch_size), desc=description, disable=None if progress else True, leave=False)
    for chunk in chunks:
        t = time.perf_counter()
        with torch.no_grad():
            result = posterior_pass(method, chunk, n_draws, is_samples=config.is_samples if method.has_density else 0)
        timed("posterior_pass", t)
        for name, value in result.columns.items():
            columns[name].append(value)
        if config.active_units:
            with torch.no_grad():
                exact = exact_posterior_mean(method, chunk)
            # the diagonal copied, so that each batch's (B, D, D) covariance is not kept alive
            unit_means.append((result.mean, result.cov.diagonal(dim1=-2, dim2=-1).clone())
                              if exact is None else (exact, None))
        t = time.perf_counter()
        with torch.no_grad():
            diagnostics = _diagnostics(method, declared, chunk)
        for name, value in diagnostics.items():
            columns[name].append(value)
        if diagnostics:
            timed("diagnostics", t)
        if config.quadrature:
            t = time.perf_counter()
            columns["exact_log_likelihood"].append(quadrature_log_likelihood(method, chunk))
            timed("quadrature", t)
        if config.ais_steps:
            t = time.perf_counter()
            if not from_posterior:
                start = None
            elif config.ais_refine_steps:
                start = _refined_start(method, chunk, config, progress)
            else:
                start = fitted_gaussian(result.mean, result.cov, chunk.dtype)
            ais = ais_log_likelihood(method, chunk, initial=start, **settings, progress=progress)
            for name, value in (("log_likelihood_ais", ais.log_likelihood), ("ais_ess", ais.ess),
                                ("ais_acceptance", ais.acceptance_rate), ("ais_step_size", ais.step_size)):
                columns[name].append(value)
            timed("ais", t)
    per_example = {name: _to_numpy(values) for name, values in columns.items()}
    summary = mean_and_sem(per_example)
    summary["n"] = float(len(x))
    if config.ais_steps:
        summary["ais_prior_start"] = 0.0 if from_posterior else 1.0
        summary["ais_temperatures"] = float(settings["n_steps"])
    if config.quadrature:
        t = time.perf_counter()
        with torch.no_grad():
            summary["aggregate_kl"] = aggregate_kl(method, x)
        timed("quadrature", t)
    if search is not None:
        summary.update(_bdmc_columns(search.lower, search.upper))
        summary["bdmc_examples"] = float(config.bdmc_examples)
        summary["bdmc_gap_target_met"] = float(search.met)
    elif config.ais_steps and config.bdmc_examples:
        t = time.perf_counter()
        summary.update(_bdmc_summary(method, config, from_posterior, progress))
        timed("bdmc", t)
    evaluation = Evaluation(summary, per_example, np.arange(len(x), dtype=np.int64), dict(seconds), declared)
    if config.active_units:
        evaluation.active_units = _active_units(method, unit_means, n_draws)
        summary.update(evaluation.active_units.summary())
    if search is not None:
        evaluation.bdmc_search = [{"temperatures": float(steps), "bdmc_gap": gap, "bdmc_gap_sem": sem}
                                  for steps, gap, sem in search.tried]
    if config.full_test_is_samples and method.has_density:
        t = time.perf_counter()
        with torch.no_grad():
            full = _to_numpy([importance_sampled_log_likelihood(method, chunk, config.full_test_is_samples)
                              for chunk in test.split(config.batch_size)])
        evaluation.per_example_full["log_likelihood_is_full"] = full
        evaluation.indices_full = np.arange(len(test), dtype=np.int64)
        summary.update(mean_and_sem({"log_likelihood_is_full": full}))
        summary["n_full"] = float(len(test))
        timed("is_full", t)
    seconds["total"] = time.perf_counter() - tic
    evaluation.seconds = dict(seconds)
    return evaluation


def _active_units(method: LatentVariableModel, means: list[tuple[torch.Tensor, torch.Tensor | None]],
                  n_draws: int) -> ActiveUnits:
    """A_u from each batch's posterior means: exact where the posterior gave them, else the draws'
    (with the draws' variances, for the Monte Carlo inflation)."""
    exact = means[0][1] is None  # a posterior offers its exact mean for every batch or for none
    spreads = None if exact else torch.cat([spread for _, spread in means])
    return from_means(torch.cat([mean for mean, _ in means]), spreads, 0 if exact else n_draws, latent_layers(method))


def _ais_settings(config: EvalConfig, from_posterior: bool) -> dict:
    steps = config.ais_steps if from_posterior or config.ais_prior_steps is None else config.ais_prior_steps
    return dict(n_chains=config.ais_chains, n_steps=steps, leapfrog_steps=config.ais_leapfrog,
                schedule=config.ais_schedule, pilot_steps=config.ais_pilot_steps,
                pilot_chains=config.ais_pilot_chains)


def _initial_fn(method: LatentVariableModel, config: EvalConfig, from_posterior: bool
                ) -> Callable[[torch.Tensor], Density] | None:
    """The BDMC start for simulated images: the posterior draws' Gaussian, or None (the prior)."""
    if not from_posterior:
        return None
    return lambda x: posterior_start(method, x, config)


def _bdmc_columns(lower: torch.Tensor, upper: torch.Tensor) -> dict[str, float]:
    """Mean and standard error of BDMC's bounds and gap over the simulated images."""
    return mean_and_sem({name: _to_numpy([value]) for name, value in
                         (("bdmc_lower", lower), ("bdmc_upper", upper), ("bdmc_gap", upper - lower))})


def _bdmc_summary(method: LatentVariableModel, config: EvalConfig, from_posterior: bool,
                  progress: bool) -> dict[str, float]:
    """BDMC on ``bdmc_examples`` images simulated from the model, at the AIS settings and start."""
    lower, upper = [], []
    for offset in range(0, config.bdmc_examples, config.batch_size):
        b = bdmc(method, min(config.batch_size, config.bdmc_examples - offset),
                 initial_fn=_initial_fn(method, config, from_posterior), progress=progress,
                 **_ais_settings(config, from_posterior))
        lower.append(b.lower)
        upper.append(b.upper)
    summary = _bdmc_columns(torch.cat(lower), torch.cat(upper))
    summary["bdmc_examples"] = float(config.bdmc_examples)
    return summary


def _gap_search(method: LatentVariableModel, config: EvalConfig, from_posterior: bool, progress: bool
                ) -> GapSearch:
    """Gap-targeted BDMC at the AIS settings and start, from the study's temperatures up to its cap."""
    # one draw from the caller's (seeded) stream: every schedule then sees the same simulated images
    seed = int(torch.randint(0, 2**31 - 1, ()).item())
    return bdmc_gap_search(method, config.bdmc_examples, target=config.bdmc_gap_target,
                           max_steps=config.ais_max_steps, batch_size=config.batch_size, seed=seed,
                           initial_fn=_initial_fn(method, config, from_posterior), progress=progress,
                           **_ais_settings(config, from_posterior))


__all__ = ["EvalConfig", "Evaluation", "evaluate", "fitted_gaussian", "posterior_start"]
