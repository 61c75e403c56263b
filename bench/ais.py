"""Annealed importance sampling (AIS) for log p(x), and bidirectional Monte Carlo (BDMC).

AIS (Neal 2001), as used for decoders by Wu et al. (2017): chains start from an initial
density q0 (the prior N(0, I), or a per-example Gaussian such as one fitted to posterior
draws) and pass through targets

    f_β(z) = q0(z)^(1−β) · (p(z) p(x|z))^β,     β: 0 = β_0 < β_1 < … < β_T = 1,

each transition being Hamiltonian Monte Carlo that leaves f_β invariant. The importance
weight log w = Σ_t (β_t − β_{t−1}) h(z_{t−1}), h = log p(z) + log p(x|z) − log q0(z), has
E[w] = p(x), so log mean_c w_c is a stochastic lower bound on log p(x).

That holds only if the transition kernels do not depend on the chains whose weights are
averaged. So HMC step sizes are tuned in a short *pilot* run (its own chains and random
numbers, adapting toward an acceptance rate), then frozen, one per temperature and example,
for the run that produces the estimate (:class:`StepSizes`).

BDMC (Grosse et al. 2015): on data simulated from the model, (z, x) ~ p(z) p(x|z), the
latent z is an exact posterior sample; AIS run backwards from it (β from 1 to 0) gives an
unbiased estimate of 1/p(x), hence a stochastic *upper* bound. The gap between the two
bounds bounds the error of the forward estimate at these settings. Both directions use the
same frozen step sizes.

Gap-targeted BDMC (:func:`bdmc_gap_search`) grows the number of temperatures along a ladder
(:func:`temperature_ladder`: doubling, up to a cap) until the BDMC gap on pairs simulated from the
model is at most a target, so that the estimate on real data can be run at the fewest
temperatures whose accuracy was checked, and says plainly when the cap came first.

Conventions: the model is any :class:`~vaebench.model.LatentVariableModel`; AIS reads its
prior p(z) and likelihood p(x|z) and nothing else (its posterior, where the start is fitted to
it, is the caller's business). z has shape (chains, B, Dz) and x (B, …), broadcast over the
chain dimension. All chains of all examples run as one batch. A plain callable
``log_likelihood(z, x)`` under a N(0, I) prior becomes a model with
:func:`model_from_log_likelihood`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from .distributions import LOG_2PI, StandardNormal
from .model import LatentVariableModel, Likelihood, Model, Prior, value_and_grad

LogLikelihood = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Schedule = Literal["sigmoid", "linear"]

#: pilot HMC step sizes adapt toward this acceptance rate. Wu et al. (2017) use 0.65 with
#: adaptation during the run; with frozen pilot step sizes 0.8 halved AVB's BDMC gap at
#: 300 temperatures × 10 leapfrog steps (0.9 → 0.54 nats with the lookup of StepSizes.at)
TARGET_ACCEPTANCE = 0.8
#: log step size moves by this times (acceptance probability − target) per pilot transition;
#: large, because a pilot has few transitions in which to find the scale
PILOT_ADAPT_RATE = 0.5
#: pilot transitions at its first temperature before it starts annealing, so that the step
#: size has found its scale before the first one is recorded
PILOT_WARMUP = 10
INITIAL_STEP_SIZE = 0.1
STEP_SIZE_RANGE = (1e-4, 10.0)
#: pilot chains per example and the pilot's share of the temperatures, by default
PILOT_CHAINS = 4
PILOT_FRACTION = 0.2
MIN_PILOT_STEPS = 10
#: a gap-targeted search multiplies the temperatures by this from one schedule to the next
GAP_SEARCH_GROWTH = 2


class Density(Protocol):
    """A starting distribution per example: ``sample(n)`` → (n, B, Dz), ``log_prob(z)`` → (n, B).

    It may also offer ``value_and_grad(z)`` → (log q0(z), ∂/∂z log q0(z)), which spares
    autograd in every leapfrog step.
    """

    def sample(self, n: int) -> torch.Tensor: ...

    def log_prob(self, z: torch.Tensor) -> torch.Tensor: ...


class Gaussian:
    """N(loc_b, cov_b) per example b: loc (B, Dz), cov (B, Dz, Dz), with its gradient in closed form.

    The AIS start for a method's posterior: a Gaussian fitted to its draws (or q(z|x) itself
    where that is Gaussian). Float64 Cholesky factors; sampling and densities in ``loc``'s dtype.
    """

    def __init__(self, loc: torch.Tensor, cov: torch.Tensor) -> None:
        chol = torch.linalg.cholesky(cov.double())
        eye = torch.eye(loc.shape[-1], dtype=torch.float64, device=loc.device)
        self.loc = loc
        self.scale_tril = chol.to(loc.dtype)
        self.inv_tril = torch.linalg.solve_triangular(chol, eye.expand_as(chol), upper=False).to(loc.dtype)
        self.precision = (self.inv_tril.mT @ self.inv_tril)
        self.const = (-chol.diagonal(dim1=-2, dim2=-1).log().sum(-1) - 0.5 * loc.shape[-1] * LOG_2PI).to(loc.dtype)

    def sample(self, n: int) -> torch.Tensor:
        eps = torch.randn(n, *self.loc.shape, device=self.loc.device, dtype=self.loc.dtype)
        return self.loc + torch.einsum("bij,nbj->nbi", self.scale_tril, eps)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        u = torch.einsum("bij,nbj->nbi", self.inv_tril, z - self.loc)
        return self.const - 0.5 * u.square().sum(-1)

    def value_and_grad(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r = z - self.loc
        g = -torch.einsum("bij,nbj->nbi", self.precision, r)
        return self.const + 0.5 * (g * r).sum(-1), g


@dataclass
class StepSizes:
    """Frozen HMC step sizes: ``steps[s, b]`` is example b's step size tuned at temperature ``betas[s]``.

    Made by a pilot run (:func:`pilot`); a transition at temperature β uses the entry of the
    smallest ``betas[s]`` ≥ β (the last entry above ``betas[-1]``), so one pilot serves
    forward and reverse runs and schedules of any length. The entry above, not below: step
    sizes shrink as the target sharpens toward β = 1, and the one from below was too large
    (AVB's BDMC gap at 300 temperatures × 10 leapfrog steps: 1.5 nats from below, 0.9 from above).
    """

    betas: torch.Tensor  # (S,) float64, increasing
    steps: torch.Tensor  # (S, B)

    def at(self, betas: torch.Tensor) -> torch.Tensor:
        """Step sizes for transitions at ``betas`` (any order): shape (len(betas), B)."""
        index = torch.searchsorted(self.betas, betas.to(self.betas), right=False)
        return self.steps[index.clamp(max=len(self.betas) - 1).to(self.steps.device)]

    def __getitem__(self, examples: slice) -> StepSizes:
        return StepSizes(self.betas, self.steps[:, examples])


@dataclass
class AISResult:
    """Per-example AIS output.

    ``log_likelihood``: log mean_c w_c, shape (B,). ``log_weights``: log w, (chains, B).
    ``ess``: effective sample size of the chains' normalised weights, (B,), in [1, chains].
    ``acceptance_rate``: fraction of HMC proposals accepted per example, (B,).
    ``step_sizes``: the frozen step sizes used (from the pilot run, whose cost is included in
    ``evaluations``). ``step_size``: their geometric mean over the transitions, (B,).
    ``evaluations``: log-likelihood-and-gradient evaluations per example, summed over chains,
    pilot included (for cost accounting).
    """

    log_likelihood: torch.Tensor
    log_weights: torch.Tensor
    ess: torch.Tensor
    acceptance_rate: torch.Tensor
    step_sizes: StepSizes
    step_size: torch.Tensor
    evaluations: int


@dataclass
class BDMCResult:
    """Forward (lower) and reverse (upper) AIS bounds on simulated data, per example.

    ``gap``: mean over examples of upper − lower, in nats: the accuracy check of the settings.
    """

    x: torch.Tensor
    z: torch.Tensor
    forward: AISResult
    reverse: AISResult
    lower: torch.Tensor
    upper: torch.Tensor

    @property
    def gap(self) -> float:
        return (self.upper - self.lower).mean().item()


@dataclass
class GapSearch:
    """What gap-targeted BDMC (:func:`bdmc_gap_search`) tried and where it stopped.

    ``tried``: (temperatures, BDMC gap in nats, its standard error over the simulated examples)
    of each schedule run, in order; the search stops at the first whose gap is at most
    ``target``, or at ``cap`` temperatures (a NaN gap never meets the target). ``lower`` and
    ``upper``: the forward and reverse bounds per simulated example, (n,), of the last schedule.
    """

    target: float
    cap: int
    tried: list[tuple[int, float, float]]
    lower: torch.Tensor
    upper: torch.Tensor

    @property
    def temperatures(self) -> int:
        """The temperatures of the last schedule run: the one to estimate with."""
        return self.tried[-1][0]

    @property
    def gap(self) -> float:
        return self.tried[-1][1]

    @property
    def met(self) -> bool:
        """Whether the last schedule's gap is within the target (False: the cap came first)."""
        return self.gap <= self.target


def beta_schedule(n_steps: int, kind: Schedule = "sigmoid", delta: float = 4.0) -> torch.Tensor:
    """β_0 = 0 < … < β_T = 1 (float64, length T + 1).

    ``sigmoid``: Wu et al.'s γ_t = σ(δ(2t/T − 1)), rescaled to run exactly from 0 to 1, which
    spends more temperatures near both ends. ``linear``: t/T.
    """
    if n_steps < 1:
        raise ValueError(f"AIS needs at least one temperature step, got {n_steps}")
    t = torch.linspace(0.0, 1.0, n_steps + 1, dtype=torch.float64)
    if kind == "linear":
        return t
    if kind == "sigmoid":
        g = torch.sigmoid(delta * (2 * t - 1))
        return (g - g[0]) / (g[-1] - g[0])
    raise ValueError(f"unknown AIS schedule {kind!r}; use 'sigmoid' or 'linear'")


class _CallableLikelihood:
    """A plain callable (z, x) → log p(x|z) as a :class:`~vaebench.model.Likelihood` (densities only)."""

    def __init__(self, log_likelihood: LogLikelihood) -> None:
        self.log_likelihood = log_likelihood

    def log_prob(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.log_likelihood(z, x)

    def sample(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("a callable log-likelihood cannot be sampled from")

    def mean(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("a callable log-likelihood has no mean")


def model_from_log_likelihood(log_likelihood: LogLikelihood, latent_dim: int, *,
                              device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Model:
    """A model with prior N(0, I) over ``latent_dim`` dimensions (on ``device``, in ``dtype``: where
    the chains start) and the given log p(x|z), for AIS on a decoder outside the registry."""
    prior = StandardNormal(latent_dim).to(device=device, dtype=dtype)
    return Model(prior, _CallableLikelihood(log_likelihood), has_density=False)


@contextlib.contextmanager
def _frozen(model: LatentVariableModel) -> Iterator[None]:
    """Stop parameter gradients of the model's modules while AIS runs.

    AIS only needs ∂/∂z; with the parameters frozen autograd neither records nor computes
    their gradients, which saves the weight-gradient matmuls of every leapfrog step.
    """
    modules = [m for m in (model, model.prior, model.likelihood) if isinstance(m, nn.Module)]
    params = list({id(p): p for m in modules for p in m.parameters() if p.requires_grad}.values())
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Run under a fixed seed without disturbing the caller's random state (None: no reseeding)."""
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class _PriorStart:
    """The prior as the initial density of B examples' chains (``sample(n)`` → (n, B, Dz))."""

    def __init__(self, prior: Prior, batch: int) -> None:
        self.prior, self.batch = prior, batch
        closed_form = getattr(prior, "value_and_grad", None)
        if closed_form is not None:
            self.value_and_grad = closed_form

    def sample(self, n: int) -> torch.Tensor:
        return self.prior.sample(n, self.batch)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return self.prior.log_prob(z)


@dataclass
class _State:
    """Everything the sampler needs at a point z, computed once per point.

    ``lj``/``g_lj``: log p(z) + log p(x|z) and its z-gradient; ``lq``/``g_lq``: the same for log q0.
    """

    z: torch.Tensor
    lj: torch.Tensor
    g_lj: torch.Tensor
    lq: torch.Tensor
    g_lq: torch.Tensor

    def h(self) -> torch.Tensor:
        """log p(z) + log p(x|z) − log q0(z): the log-weight increment per unit of β."""
        return self.lj - self.lq

    def log_target(self, beta: float) -> torch.Tensor:
        return self.lq + beta * self.h()

    def grad(self, beta: float) -> torch.Tensor:
        return self.g_lq + beta * (self.g_lj - self.g_lq)

    def where(self, mask: torch.Tensor, other: _State) -> _State:
        """This state where ``mask`` (chains, B) holds, else ``other``."""
        m = mask.unsqueeze(-1)
        return _State(torch.where(m, self.z, other.z), torch.where(mask, self.lj, other.lj),
                      torch.where(m, self.g_lj, other.g_lj), torch.where(mask, self.lq, other.lq),
                      torch.where(m, self.g_lq, other.g_lq))


def _density_value_and_grad(density: Prior | Density, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return value_and_grad(density.log_prob, z, getattr(density, "value_and_grad", None))


def _likelihood_value_and_grad(likelihood: Likelihood, x: torch.Tensor, z: torch.Tensor
                               ) -> tuple[torch.Tensor, torch.Tensor]:
    closed_form = getattr(likelihood, "value_and_grad", None)
    return value_and_grad(lambda v: likelihood.log_prob(x, v), z,
                          None if closed_form is None else lambda v: closed_form(x, v))


def _evaluator(model: LatentVariableModel, x: torch.Tensor, initial: Density) -> Callable[[torch.Tensor], _State]:
    # a start at the model's own prior is the same density: evaluate it once per point, not twice
    # (a learned prior, a mixture say, can cost as much as the decoder)
    start_is_prior = isinstance(initial, _PriorStart) and initial.prior is model.prior

    def evaluate(z: torch.Tensor) -> _State:
        z = z.detach()
        ll, g_ll = _likelihood_value_and_grad(model.likelihood, x, z)
        lp, g_lp = _density_value_and_grad(model.prior, z)
        lq, g_lq = (lp, g_lp) if start_is_prior else _density_value_and_grad(initial, z)
        # A non-finite density (an overflowing decoder far out in z) must never be accepted.
        lj = torch.nan_to_num(ll, nan=-math.inf) + lp
        return _State(z, lj, torch.nan_to_num(g_ll) + g_lp, lq, torch.nan_to_num(g_lq))

    return evaluate


def _hmc(state: _State, beta: float, step: torch.Tensor, leapfrog_steps: int,
         evaluate: Callable[[torch.Tensor], _State]) -> tuple[_State, torch.Tensor, torch.Tensor]:
    """One HMC transition leaving f_β invariant; returns (state, accepted, acceptance probability).

    The state at the end of the trajectory carries its densities and gradient, so neither the
    accept test nor the next weight update or trajectory evaluates the model again.
    """
    eps = step.unsqueeze(-1)
    p0 = torch.randn_like(state.z)
    p = p0 + 0.5 * eps * state.grad(beta)
    new = state
    for i in range(leapfrog_steps):
        new = evaluate(new.z + eps * p)
        p = p + (eps if i < leapfrog_steps - 1 else 0.5 * eps) * new.grad(beta)
    log_ratio = (new.log_target(beta) - 0.5 * p.square().sum(-1)) - (
        state.log_target(beta) - 0.5 * p0.square().sum(-1))
    log_ratio = torch.nan_to_num(log_ratio, nan=-math.inf)
    accept = torch.rand_like(log_ratio).log() < log_ratio
    return new.where(accept, state), accept, log_ratio.clamp(max=0).exp()


def _adapt(step: torch.Tensor, prob: torch.Tensor) -> torch.Tensor:
    """The step size per example (1, B) moved toward ``TARGET_ACCEPTANCE`` by the chains' mean
    acceptance probability ``prob`` (chains, B)."""
    return (step * torch.exp(PILOT_ADAPT_RATE * (prob.mean(0, keepdim=True) - TARGET_ACCEPTANCE))
            ).clamp(*STEP_SIZE_RANGE)


def _anneal(model: LatentVariableModel, x: torch.Tensor, z0: torch.Tensor, betas: torch.Tensor, initial: Density,
            leapfrog_steps: int, step_sizes: StepSizes | None, progress: bool, description: str
            ) -> tuple[AISResult, StepSizes]:
    """Run AIS along ``betas`` (increasing: forward, decreasing: reverse) from ``z0`` (chains, B, Dz).

    With ``step_sizes`` the kernels are frozen; without, this is a pilot run: one step size
    per example, shared by its chains, adapts toward ``TARGET_ACCEPTANCE``, and the step
    size reached at each temperature is returned (its log-weights are not an estimate to report).
    """
    evaluate = _evaluator(model, x, initial)
    chains, batch = z0.shape[:2]
    state = evaluate(z0)
    # Weights in float64: T small increments of O(100) nats each would lose digits in float32.
    log_w = torch.zeros(chains, batch, dtype=torch.float64, device=z0.device)
    betas_list = betas.tolist()
    n_transitions = len(betas_list) - 2
    transition_betas = betas[1:-1]
    pilot = step_sizes is None
    if not pilot:
        frozen = step_sizes.at(transition_betas).to(z0.dtype)  # (transitions, B), one lookup up front
        log_step_sum = frozen.log().sum(0)
    else:
        # One step size per example, shared by its chains: per-chain adaptation makes a chain's
        # kernel depend on its own past, which biased a 5-D linear-Gaussian log p(x) by ~0.15 nats.
        step = torch.full((1, batch), INITIAL_STEP_SIZE, dtype=z0.dtype, device=z0.device)
        adapted = torch.full((max(n_transitions, 1), batch), INITIAL_STEP_SIZE, dtype=z0.dtype, device=z0.device)
        for _ in range(PILOT_WARMUP if n_transitions else 0):
            state, _, prob = _hmc(state, betas_list[1], step, leapfrog_steps, evaluate)
            step = _adapt(step, prob)
    accepted = torch.zeros(batch, dtype=torch.float64, device=z0.device)
    for t in tqdm(range(1, len(betas_list)), desc=description, disable=None if progress else True, leave=False):
        log_w += (betas_list[t] - betas_list[t - 1]) * state.h().double()
        if t == len(betas_list) - 1:
            break  # the transition at the final temperature would not change any weight
        current = step if pilot else frozen[t - 1].unsqueeze(0)
        state, acc, prob = _hmc(state, betas_list[t], current, leapfrog_steps, evaluate)
        accepted += acc.double().mean(0)
        if pilot:
            step = _adapt(step, prob)
            adapted[t - 1] = step[0]
    if pilot:
        order = transition_betas.argsort() if n_transitions else torch.zeros(1, dtype=torch.long)
        used = transition_betas[order] if n_transitions else betas[:1]
        step_sizes = StepSizes(used.to(torch.float64).cpu(), adapted[order.to(adapted.device)])
        log_step_sum = adapted[:n_transitions].log().sum(0)
    w = torch.softmax(log_w, 0)
    result = AISResult(
        log_likelihood=torch.logsumexp(log_w, 0) - math.log(chains),
        log_weights=log_w,
        ess=1.0 / w.square().sum(0),
        acceptance_rate=accepted / max(n_transitions, 1),
        step_sizes=step_sizes,
        step_size=(log_step_sum / max(n_transitions, 1)).exp() if n_transitions else
        torch.full((batch,), math.nan, device=z0.device),
        evaluations=chains * (1 + (n_transitions + (PILOT_WARMUP if pilot and n_transitions else 0))
                              * leapfrog_steps),
    )
    return result, step_sizes


def _device(model: LatentVariableModel) -> torch.device:
    """Where the model's parameters and buffers live (the CPU if it has none)."""
    for part in (model, model.prior, model.likelihood):
        if isinstance(part, nn.Module):
            for tensor in (*part.parameters(), *part.buffers()):
                return tensor.device
    return torch.device("cpu")


def _start(model: LatentVariableModel, initial: Density | None, batch: int) -> Density:
    return initial if initial is not None else _PriorStart(model.prior, batch)


def pilot(model: LatentVariableModel, x: torch.Tensor, *, n_steps: int, leapfrog_steps: int = 10,
          n_chains: int = PILOT_CHAINS, schedule: Schedule = "sigmoid", initial: Density | None = None,
          seed: int | None = None) -> tuple[StepSizes, int]:
    """Tune HMC step sizes in a short adaptive AIS run of ``n_steps`` temperatures.

    Returns the step sizes, to be frozen in the runs that produce estimates, and the number
    of evaluations the pilot cost per example (all chains).
    """
    start = _start(model, initial, x.shape[0])
    with _seeded(seed, x.device), _frozen(model), torch.no_grad():
        z0 = start.sample(n_chains).detach()
        result, steps = _anneal(model, x, z0, beta_schedule(n_steps, schedule), start, leapfrog_steps,
                                None, False, "AIS pilot")
    return steps, result.evaluations


def refined_draws(model: LatentVariableModel, x: torch.Tensor, z0: torch.Tensor, *, n_transitions: int,
                  leapfrog_steps: int = 10, seed: int | None = None, progress: bool = False) -> torch.Tensor:
    """Draws near the model's true posterior p(z|x): chains from ``z0`` (chains, B, Dz) moved by
    ``n_transitions`` HMC transitions at β = 1, the states of the second half returned, stacked
    ((chains · ⌈n/2⌉), B, Dz).

    For fitting an AIS start when the draws ``z0`` of q(z|x) are narrower than or away from
    p(z|x) (an implicit posterior, a deterministic encoder). The step size (one per example,
    shared by its chains) adapts toward ``TARGET_ACCEPTANCE`` throughout: these draws only build a
    start density, and AIS is unbiased from any start fixed before its own chains run, so the
    adaptation need not leave p(z|x) exactly invariant.
    """
    if n_transitions < 1:
        raise ValueError(f"refining posterior draws needs at least one transition, got {n_transitions}")
    batch = z0.shape[1]
    prior = _PriorStart(model.prior, batch)  # at β = 1 the start's density cancels: the prior's is free
    kept: list[torch.Tensor] = []
    with _seeded(seed, x.device), _frozen(model), torch.no_grad():
        evaluate = _evaluator(model, x, prior)
        state = evaluate(z0)
        step = torch.full((1, batch), INITIAL_STEP_SIZE, dtype=z0.dtype, device=z0.device)
        for t in tqdm(range(n_transitions), desc="refine posterior draws", disable=None if progress else True,
                      leave=False):
            state, _, prob = _hmc(state, 1.0, step, leapfrog_steps, evaluate)
            step = _adapt(step, prob)
            if 2 * t >= n_transitions - 1:
                kept.append(state.z)
    return torch.cat(kept)


def default_pilot_steps(n_steps: int) -> int:
    """The pilot's temperatures for a run of ``n_steps``: a fifth, at least ``MIN_PILOT_STEPS``."""
    return max(MIN_PILOT_STEPS, round(PILOT_FRACTION * n_steps))


def ais_log_likelihood(model: LatentVariableModel, x: torch.Tensor, *,
                       n_chains: int = 16, n_steps: int = 500, leapfrog_steps: int = 10,
                       schedule: Schedule = "sigmoid", initial: Density | None = None,
                       step_sizes: StepSizes | None = None, pilot_steps: int | None = None,
                       pilot_chains: int = PILOT_CHAINS, seed: int | None = None,
                       progress: bool = False) -> AISResult:
    """AIS estimate of log p(x) per example of ``x`` under ``model``'s prior and likelihood.

    ``n_steps``: temperatures T. ``initial``: a starting density other than the model's prior
    (e.g. a :class:`Gaussian` fitted to posterior draws), with ``sample(n)`` → (n, B, Dz); the
    intermediate targets then interpolate between it and the posterior, and the weights
    account for it.
    ``step_sizes``: frozen HMC step sizes; without them a pilot run of ``pilot_steps``
    temperatures (default :func:`default_pilot_steps`) and ``pilot_chains`` chains tunes them
    first, on its own random numbers, so the estimate is a stochastic lower bound. ``seed``
    fixes all randomness without touching the caller's generator state. The model's
    parameters are frozen while AIS runs.
    """
    start = _start(model, initial, x.shape[0])
    pilot_cost = 0
    with _seeded(seed, x.device):
        if step_sizes is None:
            step_sizes, pilot_cost = pilot(
                model, x, n_steps=pilot_steps or default_pilot_steps(n_steps),
                leapfrog_steps=leapfrog_steps, n_chains=pilot_chains, schedule=schedule, initial=start)
        with _frozen(model), torch.no_grad():
            z0 = start.sample(n_chains).detach()
            result, _ = _anneal(model, x, z0, beta_schedule(n_steps, schedule), start, leapfrog_steps,
                                step_sizes, progress, "AIS")
    result.evaluations += pilot_cost
    return result


def reverse_ais_log_likelihood(model: LatentVariableModel, x: torch.Tensor, z: torch.Tensor,
                               step_sizes: StepSizes, *, n_chains: int = 16, n_steps: int = 500,
                               leapfrog_steps: int = 10, schedule: Schedule = "sigmoid",
                               initial: Density | None = None, seed: int | None = None,
                               progress: bool = False) -> AISResult:
    """Reverse AIS from exact posterior samples ``z`` (B, Dz) of p(z|x): a stochastic upper bound.

    Each chain anneals from the posterior (β = 1) to the initial density (β = 0) with the
    frozen ``step_sizes``; its weight w' has E[w'] = 1/p(x), so −log mean_c w'_c bounds
    log p(x) from above in expectation. The returned ``log_likelihood`` is that upper bound;
    ``log_weights`` are the log w'.
    """
    start = _start(model, initial, z.shape[0])
    with _seeded(seed, x.device), _frozen(model), torch.no_grad():
        z0 = z.detach().unsqueeze(0).expand(n_chains, *z.shape).contiguous()
        result, _ = _anneal(model, x, z0, beta_schedule(n_steps, schedule).flip(0), start,
                            leapfrog_steps, step_sizes, progress, "reverse AIS")
    result.log_likelihood = -(torch.logsumexp(result.log_weights, 0) - math.log(n_chains))
    return result


@dataclass
class SimulatedPairs:
    """Pairs z ~ p(z), x ~ p(x|z) for BDMC, with the AIS start built for x (None: the prior)."""

    z: torch.Tensor
    x: torch.Tensor
    initial: Density | None


def simulate_pairs(model: LatentVariableModel, n_examples: int, *,
                   initial_fn: Callable[[torch.Tensor], Density] | None = None,
                   seed: int | None = None) -> SimulatedPairs:
    """``n_examples`` pairs drawn from the model on its prior's device, and ``initial_fn(x)``
    where given, all under ``seed``."""
    with _seeded(seed, _device(model)), torch.no_grad():
        z = model.prior.sample(n_examples)
        x = model.likelihood.sample(z)
        initial = initial_fn(x) if initial_fn else None
    return SimulatedPairs(z=z, x=x, initial=initial)


def bdmc(model: LatentVariableModel, n_examples: int, *, n_chains: int = 16, n_steps: int = 500,
         leapfrog_steps: int = 10, schedule: Schedule = "sigmoid",
         initial_fn: Callable[[torch.Tensor], Density] | None = None,
         pilot_steps: int | None = None, pilot_chains: int = PILOT_CHAINS,
         seed: int | None = None, progress: bool = False,
         pairs: SimulatedPairs | None = None) -> BDMCResult:
    """Bidirectional Monte Carlo on ``n_examples`` pairs simulated from the model: z ~ p(z), x ~ p(x|z).

    A pilot run on x tunes the step sizes; forward AIS on x (lower bound) and reverse AIS
    from the true z (upper bound) then run with them frozen and otherwise the same settings.
    ``initial_fn(x)`` builds a per-example initial density where wanted. The pairs are drawn
    on the prior's device under ``seed`` (:func:`simulate_pairs`); the rest runs under
    ``seed + 1``. ``pairs``: ones :func:`simulate_pairs` already drew (with this ``seed`` and
    ``initial_fn``), so that several schedules share them without rebuilding their starts.
    """
    if pairs is None:
        pairs = simulate_pairs(model, n_examples, initial_fn=initial_fn, seed=seed)
    elif pairs.x.shape[0] != n_examples:
        raise ValueError(f"bdmc was asked for {n_examples} pairs but given {pairs.x.shape[0]}")
    x, z, initial = pairs.x, pairs.z, pairs.initial
    with _seeded(None if seed is None else seed + 1, _device(model)):
        steps, pilot_cost = pilot(
            model, x, n_steps=pilot_steps or default_pilot_steps(n_steps), leapfrog_steps=leapfrog_steps,
            n_chains=pilot_chains, schedule=schedule, initial=initial)
        settings = dict(n_chains=n_chains, n_steps=n_steps, leapfrog_steps=leapfrog_steps,
                        schedule=schedule, initial=initial, progress=progress)
        forward = ais_log_likelihood(model, x, step_sizes=steps, **settings)
        reverse = reverse_ais_log_likelihood(model, x, z, steps, **settings)
    forward.evaluations += pilot_cost
    return BDMCResult(x=x, z=z, forward=forward, reverse=reverse,
                      lower=forward.log_likelihood, upper=reverse.log_likelihood)


def temperature_ladder(start: int, cap: int, growth: int = GAP_SEARCH_GROWTH) -> list[int]:
    """The temperatures a gap-targeted search tries: ``start``, ``start × growth``, … while below
    ``cap``, then ``cap`` itself (so the cap is always tried and never exceeded)."""
    if not 1 <= start <= cap or growth < 2:
        raise ValueError(f"a temperature ladder needs 1 <= start <= cap and growth >= 2, "
                         f"got start {start}, cap {cap}, growth {growth}")
    rungs = [start]
    while rungs[-1] < cap:
        rungs.append(min(rungs[-1] * growth, cap))
    return rungs


def bdmc_gap_search(model: LatentVariableModel, n_examples: int, *, target: float, max_steps: int,
                    n_steps: int, batch_size: int | None = None, seed: int = 0,
                    initial_fn: Callable[[torch.Tensor], Density] | None = None,
                    progress: bool = False, **settings) -> GapSearch:
    """BDMC on ``n_examples`` pairs simulated from the model at each schedule of
    :func:`temperature_ladder` (``n_steps`` up to ``max_steps``) until the mean gap is at most ``target``.

    Every schedule sees the same simulated pairs and starts: batch b of ``batch_size`` pairs
    (default: all at once) runs :func:`bdmc` under seed ``seed + 2b`` (which also takes
    ``seed + 2b + 1``), so two schedules' gaps differ by their temperatures, not their data.
    ``settings``: the other :func:`bdmc` settings (chains, leapfrog steps, schedule, pilot), the
    same for every schedule; a pilot of default length grows with the temperatures.
    """
    if not target > 0:
        raise ValueError(f"the BDMC gap target must be positive, got {target}")
    batch = batch_size or n_examples
    # the pairs and their starts (a refined start costs many HMC transitions) are built once:
    # every schedule would rebuild the same ones from the same seeds
    sizes = [min(batch, n_examples - offset) for offset in range(0, n_examples, batch)]
    pairs = [simulate_pairs(model, n, initial_fn=initial_fn, seed=seed + 2 * b) for b, n in enumerate(sizes)]
    tried: list[tuple[int, float, float]] = []
    for steps in temperature_ladder(n_steps, max_steps):
        runs = [bdmc(model, n, n_steps=steps, seed=seed + 2 * b, pairs=p, progress=progress, **settings)
                for b, (n, p) in enumerate(zip(sizes, pairs))]
        lower = torch.cat([r.lower for r in runs])
        upper = torch.cat([r.upper for r in runs])
        gaps = (upper - lower).double()
        sem = (gaps.std() / math.sqrt(len(gaps))).item() if len(gaps) > 1 else math.nan
        tried.append((steps, gaps.mean().item(), sem))
        if tried[-1][1] <= target:
            break
    return GapSearch(target=target, cap=max_steps, tried=tried, lower=lower, upper=upper)
