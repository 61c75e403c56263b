"""Annealed importance sampling (AIS) for log p(x), and bidirectional Monte Carlo (BDMC).

AIS (Neal 2001), as used for decoders by Wu et al. (2017): chains start from an initial
density q0 (the prior N(0, I) by default) and pass through targets

    f_β(z) = q0(z)^(1−β) · (p(z) p(x|z))^β,     β: 0 = β_0 < β_1 < … < β_T = 1,

each transition being Hamiltonian Monte Carlo that leaves f_β invariant. The importance
weight log w = Σ_t (β_t − β_{t−1}) h(z_{t−1}), h = log p(z) + log p(x|z) − log q0(z), has
E[w] = p(x), so log mean_c w_c is a stochastic lower bound on log p(x).

BDMC (Grosse et al. 2015): on data simulated from the model, (z, x) ~ p(z) p(x|z), the
latent z is an exact posterior sample; AIS run backwards from it (β from 1 to 0) gives an
unbiased estimate of 1/p(x), hence a stochastic *upper* bound. The gap between the two
bounds bounds the error of the forward estimate at these settings.

Conventions: the model is either a decoder module with ``log_prob(x, z)`` (any method's
``method.decoder``) or a plain callable ``log_likelihood(z, x)``; either takes z of shape
(chains, B, Dz) and x of shape (B, …), broadcast over the chain dimension, and returns
log p(x|z) of shape (chains, B). All chains of all examples run as one batch.
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

from vaebench.methods.base import BernoulliDecoder

from .metrics import fitted_gaussian, mean_and_sem

LOG_2PI = math.log(2 * math.pi)
LogLikelihood = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: a decoder module with ``log_prob(x, z)`` (the suite's decoders), or a callable (z, x) → log p(x|z)
Model = nn.Module | LogLikelihood
Schedule = Literal["sigmoid", "linear"]

#: HMC step sizes adapt toward this acceptance rate (Neal 2011; Wu et al. 2017 use 0.65)
TARGET_ACCEPTANCE = 0.65
#: log step size moves by this times (acceptance probability − target) per transition
ADAPT_RATE = 0.1
INITIAL_STEP_SIZE = 0.1
STEP_SIZE_RANGE = (1e-4, 10.0)


class Density(Protocol):
    """A starting distribution per example: ``sample(n)`` → (n, B, Dz), ``log_prob(z)`` → (n, B)."""

    def sample(self, n: int) -> torch.Tensor: ...

    def log_prob(self, z: torch.Tensor) -> torch.Tensor: ...


@dataclass
class AISResult:
    """Per-example AIS output.

    ``log_likelihood``: log mean_c w_c, shape (B,). ``log_weights``: log w, (chains, B).
    ``ess``: effective sample size of the chains' normalised weights, (B,), in [1, chains].
    ``acceptance_rate``: fraction of HMC proposals accepted per example, (B,).
    ``step_size``: final leapfrog step size per example (shared by its chains), (B,).
    ``evaluations``: log-likelihood-and-gradient evaluations per chain (for FLOP counts).
    """

    log_likelihood: torch.Tensor
    log_weights: torch.Tensor
    ess: torch.Tensor
    acceptance_rate: torch.Tensor
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


def _as_log_likelihood(model: Model) -> LogLikelihood:
    """A decoder module's ``log_prob(x, z)`` as a (z, x) callable; a callable passes through."""
    if isinstance(model, nn.Module):
        return lambda z, x: model.log_prob(x, z)
    return model


@contextlib.contextmanager
def _frozen(model: Model) -> Iterator[None]:
    """Stop parameter gradients of ``model`` (a module, or a module's bound method) while AIS runs.

    AIS only needs ∂/∂z; with the parameters frozen autograd neither records nor computes
    their gradients, which saves the weight-gradient matmuls of every leapfrog step.
    """
    owner = model if isinstance(model, nn.Module) else getattr(model, "__self__", None)
    params = [p for p in owner.parameters() if p.requires_grad] if isinstance(owner, nn.Module) else []
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


class _StandardNormal:
    """The prior as an initial density, with its gradient in closed form."""

    def __init__(self, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> None:
        self.shape, self.device, self.dtype = shape, device, dtype

    def sample(self, n: int) -> torch.Tensor:
        return torch.randn(n, *self.shape, device=self.device, dtype=self.dtype)

    @staticmethod
    def log_prob(z: torch.Tensor) -> torch.Tensor:
        return -0.5 * (z.square().sum(-1) + z.shape[-1] * LOG_2PI)


@dataclass
class _State:
    """Everything the sampler needs at a point z, computed once per point.

    ``ll``/``g_ll``: log p(x|z) and its z-gradient; ``lq``/``g_lq``: the same for log q0.
    """

    z: torch.Tensor
    ll: torch.Tensor
    g_ll: torch.Tensor
    lq: torch.Tensor
    g_lq: torch.Tensor

    def h(self) -> torch.Tensor:
        """log p(z) + log p(x|z) − log q0(z): the log-weight increment per unit of β."""
        return _StandardNormal.log_prob(self.z) + self.ll - self.lq

    def log_target(self, beta: float) -> torch.Tensor:
        return self.lq + beta * self.h()

    def grad(self, beta: float) -> torch.Tensor:
        return self.g_lq + beta * (self.g_ll - self.z - self.g_lq)

    def where(self, mask: torch.Tensor, other: _State) -> _State:
        """This state where ``mask`` (chains, B) holds, else ``other``."""
        m = mask.unsqueeze(-1)
        return _State(torch.where(m, self.z, other.z), torch.where(mask, self.ll, other.ll),
                      torch.where(m, self.g_ll, other.g_ll), torch.where(mask, self.lq, other.lq),
                      torch.where(m, self.g_lq, other.g_lq))


ValueAndGrad = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _value_and_grad(model: Model) -> ValueAndGrad:
    """(z, x) → (log p(x|z), ∂/∂z log p(x|z)), both for z of shape (chains, B, Dz).

    For the suite's Bernoulli decoder the gradient at the logits, x − σ(logits), is written out
    and backpropagated through the network alone: autograd through the log-density would make
    several more full passes over the (chains·B) × pixels logits per leapfrog step.
    """
    if isinstance(model, BernoulliDecoder):
        def bernoulli(z: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            with torch.enable_grad():
                logits = model.logits(z)
            detached = logits.detach()
            ll = (x * detached).sum(-1) - nn.functional.softplus(detached).sum(-1)
            (grad,) = torch.autograd.grad(logits, z, grad_outputs=x - torch.sigmoid(detached))
            return ll, grad
        return bernoulli

    log_likelihood = _as_log_likelihood(model)

    def generic(z: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            ll = log_likelihood(z, x)
            (grad,) = torch.autograd.grad(ll.sum(), z)
        return ll.detach(), grad
    return generic


def _evaluator(model: Model, x: torch.Tensor, initial: Density | _StandardNormal) -> Callable[[torch.Tensor], _State]:
    prior_start = isinstance(initial, _StandardNormal)
    value_and_grad = _value_and_grad(model)

    def evaluate(z: torch.Tensor) -> _State:
        z = z.detach().requires_grad_(True)
        ll, g_ll = value_and_grad(z, x)
        if prior_start:
            lq, g_lq = _StandardNormal.log_prob(z.detach()), -z.detach()
        else:
            with torch.enable_grad():
                lq = initial.log_prob(z)
                (g_lq,) = torch.autograd.grad(lq.sum(), z)
        # A non-finite density (an overflowing decoder far out in z) must never be accepted.
        ll = torch.nan_to_num(ll, nan=-math.inf)
        return _State(z.detach(), ll, torch.nan_to_num(g_ll), lq.detach(), torch.nan_to_num(g_lq))

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


def _anneal(model: Model, x: torch.Tensor, z0: torch.Tensor, betas: torch.Tensor,
            initial: Density | _StandardNormal, leapfrog_steps: int, progress: bool,
            description: str) -> AISResult:
    """Run AIS along ``betas`` (increasing: forward, decreasing: reverse) from ``z0`` (chains, B, Dz)."""
    evaluate = _evaluator(model, x, initial)
    chains, batch = z0.shape[:2]
    state = evaluate(z0)
    # Weights in float64: T small increments of O(100) nats each would lose digits in float32.
    log_w = torch.zeros(chains, batch, dtype=torch.float64, device=z0.device)
    # One step size per example, shared by its chains and adapted from their mean acceptance.
    # Per-chain step sizes adapted from each chain's own acceptances make a chain's kernel depend
    # on its own past, which breaks invariance: on a 5-D linear-Gaussian model that biased
    # log p(x) upward by ~0.15 nats at 1,000 temperatures, growing with T. Shared over 16 chains,
    # the dependence on any one chain is weak and no bias was measurable.
    step = torch.full((1, batch), INITIAL_STEP_SIZE, dtype=z0.dtype, device=z0.device)
    accepted = torch.zeros(batch, dtype=torch.float64, device=z0.device)
    betas_list = betas.tolist()
    n_transitions = len(betas_list) - 2
    for t in tqdm(range(1, len(betas_list)), desc=description, disable=None if progress else True, leave=False):
        log_w += (betas_list[t] - betas_list[t - 1]) * state.h().double()
        if t == len(betas_list) - 1:
            break  # the transition at the final temperature would not change any weight
        state, acc, prob = _hmc(state, betas_list[t], step, leapfrog_steps, evaluate)
        accepted += acc.double().mean(0)
        step = step * torch.exp(ADAPT_RATE * (prob.mean(0, keepdim=True) - TARGET_ACCEPTANCE))
        step = step.clamp(*STEP_SIZE_RANGE)
    w = torch.softmax(log_w, 0)
    return AISResult(
        log_likelihood=torch.logsumexp(log_w, 0) - math.log(chains),
        log_weights=log_w,
        ess=1.0 / w.square().sum(0),
        acceptance_rate=accepted / max(n_transitions, 1),
        step_size=step[0],
        evaluations=1 + n_transitions * leapfrog_steps,
    )


def ais_log_likelihood(model: Model, x: torch.Tensor, latent_dim: int, *,
                       n_chains: int = 16, n_steps: int = 500, leapfrog_steps: int = 10,
                       schedule: Schedule = "sigmoid", initial: Density | None = None,
                       seed: int | None = None, progress: bool = False) -> AISResult:
    """AIS estimate of log p(x) per example of ``x`` under prior N(0, I) and ``model``'s p(x|z).

    ``n_steps``: temperatures T. ``initial``: a starting density other than the prior (e.g.
    a :class:`~vaebench.metrics.Proposal`, q(z|x) or a Gaussian fitted to posterior samples),
    with ``sample(n)`` → (n, B, Dz); the intermediate targets then interpolate between it and
    the posterior, and the weights account for it. ``seed`` fixes all randomness without
    touching the caller's generator state. A decoder module's parameters (or those of the
    module a callable is bound to) are frozen while AIS runs.
    """
    start = initial if initial is not None else _StandardNormal((x.shape[0], latent_dim), x.device, x.dtype)
    with _seeded(seed, x.device), _frozen(model), torch.no_grad():
        z0 = start.sample(n_chains).detach()
        return _anneal(model, x, z0, beta_schedule(n_steps, schedule), start, leapfrog_steps,
                       progress, "AIS")


def reverse_ais_log_likelihood(model: Model, x: torch.Tensor, z: torch.Tensor, *,
                               n_chains: int = 16, n_steps: int = 500, leapfrog_steps: int = 10,
                               schedule: Schedule = "sigmoid", initial: Density | None = None,
                               seed: int | None = None, progress: bool = False) -> AISResult:
    """Reverse AIS from exact posterior samples ``z`` (B, Dz) of p(z|x): a stochastic upper bound.

    Each chain anneals from the posterior (β = 1) to the initial density (β = 0); its weight
    w' has E[w'] = 1/p(x), so −log mean_c w'_c bounds log p(x) from above in expectation. The
    returned ``log_likelihood`` is that upper bound; ``log_weights`` are the log w'.
    """
    start = initial if initial is not None else _StandardNormal(tuple(z.shape), z.device, z.dtype)
    with _seeded(seed, x.device), _frozen(model), torch.no_grad():
        z0 = z.detach().unsqueeze(0).expand(n_chains, *z.shape).contiguous()
        result = _anneal(model, x, z0, beta_schedule(n_steps, schedule).flip(0), start,
                         leapfrog_steps, progress, "reverse AIS")
    result.log_likelihood = -(torch.logsumexp(result.log_weights, 0) - math.log(n_chains))
    return result


def bdmc(model: Model, sample_x: Callable[[torch.Tensor], torch.Tensor], latent_dim: int,
         n_examples: int, *, n_chains: int = 16, n_steps: int = 500, leapfrog_steps: int = 10,
         schedule: Schedule = "sigmoid", initial_fn: Callable[[torch.Tensor], Density] | None = None,
         seed: int | None = None, device: torch.device | str = "cpu", progress: bool = False) -> BDMCResult:
    """Bidirectional Monte Carlo on ``n_examples`` pairs simulated as z ~ N(0, I), x = ``sample_x(z)``.

    Runs forward AIS on x (lower bound) and reverse AIS from the true z (upper bound) with the
    same settings; ``initial_fn(x)`` builds a per-example initial density where wanted.
    """
    device = torch.device(device)
    with _seeded(seed, device), torch.no_grad():
        z = torch.randn(n_examples, latent_dim, device=device)
        x = sample_x(z)
        initial = initial_fn(x) if initial_fn else None
    settings = dict(n_chains=n_chains, n_steps=n_steps, leapfrog_steps=leapfrog_steps,
                    schedule=schedule, initial=initial, progress=progress)
    sub = None if seed is None else seed + 1
    forward = ais_log_likelihood(model, x, latent_dim, seed=sub, **settings)
    reverse = reverse_ais_log_likelihood(model, x, z, seed=None if sub is None else sub + 1, **settings)
    return BDMCResult(x=x, z=z, forward=forward, reverse=reverse,
                      lower=forward.log_likelihood, upper=reverse.log_likelihood)


def bernoulli_sampler(decoder: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """x ~ p(x|z) for a decoder with ``mean(z)`` (the suite's Bernoulli decoder)."""
    return lambda z: torch.bernoulli(decoder.mean(z))


def ais_metrics(method: nn.Module, x: torch.Tensor, *, n_chains: int, n_steps: int, leapfrog_steps: int,
                schedule: Schedule, initial: Literal["prior", "fitted"], bdmc_examples: int,
                batch_size: int, progress: bool = False) -> dict[str, float]:
    """AIS and BDMC numbers for a run record: means over examples, with ``_sem`` twins.

    ``initial``: ``prior`` starts every method's chains from N(0, I), so the estimate depends
    on the decoder alone, not on how good the method's encoder is (the default); ``fitted``
    starts from a Gaussian fitted to the method's posterior samples
    (:func:`vaebench.metrics.fitted_gaussian`, which also works for implicit posteriors such
    as AVB's), tighter for the same number of temperatures. BDMC uses the same settings on
    ``bdmc_examples`` pairs simulated from the model.
    """
    def initial_fn(chunk: torch.Tensor) -> Density | None:
        return fitted_gaussian(method, chunk, inflate=1.2) if initial == "fitted" else None

    settings = dict(n_chains=n_chains, n_steps=n_steps, leapfrog_steps=leapfrog_steps, schedule=schedule,
                    progress=progress)
    per_example: dict[str, list[torch.Tensor]] = {}
    for chunk in x.split(batch_size):
        with torch.no_grad():
            start = initial_fn(chunk)
        r = ais_log_likelihood(method.decoder, chunk, method.latent_dim, initial=start, **settings)
        for name, value in (("log_likelihood_ais", r.log_likelihood), ("ais_ess", r.ess),
                            ("ais_acceptance", r.acceptance_rate), ("ais_step_size", r.step_size)):
            per_example.setdefault(name, []).append(value)
    if bdmc_examples:
        for offset in range(0, bdmc_examples, batch_size):
            b = bdmc(method.decoder, bernoulli_sampler(method.decoder), method.latent_dim,
                     min(batch_size, bdmc_examples - offset), device=x.device,
                     initial_fn=initial_fn if initial == "fitted" else None, **settings)
            for name, value in (("bdmc_lower", b.lower), ("bdmc_upper", b.upper), ("bdmc_gap", b.upper - b.lower)):
                per_example.setdefault(name, []).append(value)
    return mean_and_sem(per_example)
