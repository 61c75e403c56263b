"""Compiled training updates: ``[train] compile = true`` (the losses) and ``"step"`` (the whole step).

At batch 20 a step of the suite's MLPs is a few dozen small kernels, and run eagerly, Python,
the dispatcher and autograd's bookkeeping take about as long as the arithmetic.

- ``compile = true`` compiles :meth:`Method.training_step` (forward and backward); the
  optimizers still step eagerly. It works for every method.
- ``compile = "step"`` traces the losses, their gradients (``torch.func``) and the optimizers'
  updates into one function, which ``torch.compile`` turns into a few fused kernels around
  the matmuls. It needs a method that keeps :meth:`Method.update` (one backward per parameter
  group, then one step of each optimizer) and optimizers whose rule is restated here: torch's
  Adam, :class:`~vaebench.optim.BurdaAdam` and :class:`~vaebench.optim.AdamNormGrad`.

The rules below update those optimizers' own state tensors and the model's parameters in
place, so a checkpoint holds the same things whichever way the steps ran, and a run may
resume either way. Buffers that :meth:`Method.training_step` changes in place (declared in
:attr:`Method.mutable_buffers`, such as a KL warm-up's step count) enter both compiled forms
as copies, written back after the gradients are taken. Random draws use aten's generators
(``fallback_random``), so a seed gives the same noise as an eager step; only floating-point
rounding differs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from vaebench.methods import Method

from .errors import ConfigError
from .optim import NORM_FLOOR, AdamNormGrad, BurdaAdam

Losses = dict[str, torch.Tensor]


def compiled_losses_update(method: Method) -> Callable[[torch.Tensor], Losses]:
    """``method.update`` with its losses (forward and backward) compiled by ``torch.compile``."""
    import torch._inductor.config as inductor_config

    # aten's random kernels, not inductor's: the same seed gives the same noise as eager
    inductor_config.fallback_random = True
    if not method.mutable_buffers:
        losses_of = torch.compile(method.training_step)

        def update(batch: torch.Tensor) -> Losses:
            losses = losses_of(batch)
            method.apply_losses(losses)
            return {k: v.detach() for k, v in losses.items()}

        return update

    # A buffer the step updates in place (Method.mutable_buffers) enters the compiled losses as a
    # copy, written back after the backward pass: AOTAutograd's backward may recompute from a
    # graph input instead of saving, and an input changed in place in the forward gave it the
    # changed value (a KL warm-up's backward took the next step's weight).
    module = _TrainingStep(method)
    buffers = {f"method.{name}": method.get_buffer(name) for name in method.mutable_buffers}

    def losses_with_copies(batch: torch.Tensor, buffers: dict[str, torch.Tensor]
                           ) -> tuple[Losses, dict[str, torch.Tensor]]:
        copies = {name: b.clone() for name, b in buffers.items()}
        return torch.func.functional_call(module, copies, (batch,)), copies

    compiled = torch.compile(losses_with_copies)

    def update_buffers(batch: torch.Tensor) -> Losses:
        losses, updated = compiled(batch, buffers)
        method.apply_losses(losses)
        with torch.no_grad():
            for name, value in updated.items():
                buffers[name].copy_(value)
        return {k: v.detach() for k, v in losses.items()}

    return update_buffers


class _Rule:
    """An optimizer's update restated in tensor operations, over its one parameter group."""

    def __init__(self, optimizer: torch.optim.Optimizer, params: list[nn.Parameter]) -> None:
        self.group = optimizer.param_groups[0]
        self.states = [optimizer.state[p] for p in params]

    @staticmethod
    def unsupported(group: dict[str, Any]) -> list[str]:
        """The settings of ``group`` that this rule does not restate."""
        return []


class _AdamRule(_Rule):
    """torch's Adam (no weight decay, amsgrad or maximize), as its fused kernel computes it:
    moments first, then ``p −= lr / (1 − β1^t) · m / (sqrt(v) / sqrt(1 − β2^t) + ε)``."""

    def __init__(self, optimizer: torch.optim.Optimizer, params: list[nn.Parameter]) -> None:
        super().__init__(optimizer, params)
        self.t = int(self.states[0]["step"])  # the one read of the count; Python keeps it from here

    @staticmethod
    def unsupported(group: dict[str, Any]) -> list[str]:
        return [key for key in ("weight_decay", "amsgrad", "maximize", "capturable", "differentiable")
                if group.get(key)]

    def scalars(self) -> list[torch.Tensor]:
        self.t += 1
        beta1, beta2 = self.group["betas"]
        return [torch.tensor(self.group["lr"] / (1 - beta1 ** self.t)),
                torch.tensor(1 / math.sqrt(1 - beta2 ** self.t))]

    def tensors(self) -> list[dict[str, torch.Tensor]]:
        return [{k: s[k] for k in ("step", "exp_avg", "exp_avg_sq")} for s in self.states]

    def apply(self, params: list[torch.Tensor], grads: list[torch.Tensor], states: list[dict[str, torch.Tensor]],
              scalars: list[torch.Tensor]) -> None:
        step_size, bias2_root = scalars
        beta1, beta2 = self.group["betas"]
        eps = self.group["eps"]
        for p, g, s in zip(params, grads, states):
            s["step"].add_(1)
            s["exp_avg"].lerp_(g, 1 - beta1)
            s["exp_avg_sq"].mul_(beta2).addcmul_(g, g, value=1 - beta2)
            p.sub_(step_size * s["exp_avg"] / (s["exp_avg_sq"].sqrt() * bias2_root + eps))


class _GroupCountRule(_Rule):
    """A rule for the optimizers of vaebench.optim, which count steps in their group (their
    state_dict saves it): the step size lr · sqrt(1 − β2^t) / (1 − β1^t) from that count."""

    def scalars(self) -> list[torch.Tensor]:
        self.group["step"] += 1
        t = self.group["step"]
        beta1, beta2 = self.group["betas"]
        return [torch.tensor(self.group["lr"] * math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t))]

    def moments_and_step(self, p: torch.Tensor, g: torch.Tensor, s: dict[str, torch.Tensor],
                         step_size: torch.Tensor) -> None:
        """Their shared update from gradient ``g``: the count, the moments, then
        ``p −= step_size · m / (sqrt(v) + ε)`` (ε after the uncorrected square root)."""
        beta1, beta2 = self.group["betas"]
        s["step"].add_(1)
        s["exp_avg"].lerp_(g, 1 - beta1)
        s["exp_avg_sq"].mul_(beta2).addcmul_(g, g, value=1 - beta2)
        p.sub_(step_size * s["exp_avg"] / (s["exp_avg_sq"].sqrt() + self.group["eps"]))


class _BurdaAdamRule(_GroupCountRule):
    """:class:`~vaebench.optim.BurdaAdam`: the moments take the previous step's gradient, then
    ``p −= lr · sqrt(1 − β2^t) / (1 − β1^t) · m / (sqrt(v) + ε)``, then this step's gradient is kept."""

    def tensors(self) -> list[dict[str, torch.Tensor]]:
        return [{k: s[k] for k in ("step", "exp_avg", "exp_avg_sq", "delayed_grad")} for s in self.states]

    def apply(self, params: list[torch.Tensor], grads: list[torch.Tensor], states: list[dict[str, torch.Tensor]],
              scalars: list[torch.Tensor]) -> None:
        (step_size,) = scalars
        for p, g, s in zip(params, grads, states):
            self.moments_and_step(p, s["delayed_grad"], s, step_size)
            s["delayed_grad"].copy_(g)


class _AdamNormGradRule(_GroupCountRule):
    """:class:`~vaebench.optim.AdamNormGrad`: each gradient divided by its norm plus 1e-7, the moments,
    then ``p −= lr · sqrt(1 − β2^t) / (1 − β1^t) · m / (sqrt(v) + ε)``."""

    def tensors(self) -> list[dict[str, torch.Tensor]]:
        return [{k: s[k] for k in ("step", "exp_avg", "exp_avg_sq")} for s in self.states]

    def apply(self, params: list[torch.Tensor], grads: list[torch.Tensor], states: list[dict[str, torch.Tensor]],
              scalars: list[torch.Tensor]) -> None:
        (step_size,) = scalars
        for p, g, s in zip(params, grads, states):
            self.moments_and_step(p, g / (torch.linalg.vector_norm(g) + NORM_FLOOR), s, step_size)


#: the optimizers whose update :class:`CompiledStep` restates, by exact class
RULES: dict[type, type[_Rule]] = {torch.optim.Adam: _AdamRule, BurdaAdam: _BurdaAdamRule,
                                  AdamNormGrad: _AdamNormGradRule}


def check_compiled_step(method: Method) -> None:
    """Raise :class:`ConfigError` (one line) unless ``compile = "step"`` can run ``method``."""
    if type(method).update is not Method.update:
        raise ConfigError(f"compile = 'step' needs the standard update, but {method.name} overrides update "
                          "(use compile = true)")
    for name, optimizer in method.optimizers.items():
        if type(optimizer) not in RULES:
            raise ConfigError(f"compile = 'step' has no update rule for {type(optimizer).__name__} "
                              f"(optimizer {name!r}); it knows {', '.join(t.__name__ for t in RULES)}")
        if len(optimizer.param_groups) != 1:
            raise ConfigError(f"compile = 'step' needs one parameter group per optimizer; {name!r} has "
                              f"{len(optimizer.param_groups)}")
        unsupported = RULES[type(optimizer)].unsupported(optimizer.param_groups[0])
        if unsupported:
            raise ConfigError(f"compile = 'step' restates {type(optimizer).__name__} without "
                              f"{', '.join(unsupported)}, which optimizer {name!r} sets")


class _TrainingStep(nn.Module):
    """``method.training_step`` as a module's forward, for ``torch.func.functional_call``."""

    def __init__(self, method: Method) -> None:
        super().__init__()
        self.method = method

    def forward(self, batch: torch.Tensor) -> Losses:
        return self.method.training_step(batch)


class CompiledStep:
    """``method.update`` as one compiled function: losses, gradients and optimizer updates.

    The first call steps eagerly when an optimizer has no state yet (it creates it, as at the
    start of a run); every later call runs the compiled function, which updates the model's
    parameters and the optimizers' state in place. Each group's gradient is the gradient of
    its loss with respect to its parameters only, from one forward pass, as in
    :meth:`Method.apply_losses`.
    """

    def __init__(self, method: Method) -> None:
        if not method.optimizers:
            method.configure_optimizers()
        check_compiled_step(method)
        self.method = method
        self._module = _TrainingStep(method)
        self._compiled: Callable[..., Losses] | None = None

    def _build(self) -> None:
        names = {id(p): name for name, p in self._module.named_parameters()}
        self._groups: dict[str, list[str]] = {}
        self._rules: dict[str, _Rule] = {}
        for group, optimizer in self.method.optimizers.items():
            params = optimizer.param_groups[0]["params"]
            missing = [names[id(p)] for p in params if p not in optimizer.state]
            if missing:
                raise ConfigError(f"compile = 'step': {len(missing)} parameters of group {group!r} got no "
                                  f"gradient in the first step (e.g. {missing[0]}); the compiled step would "
                                  "update them with zero gradients, which the eager optimizer does not")
            self._groups[group] = [names[id(p)] for p in params]
            self._rules[group] = RULES[type(optimizer)](optimizer, params)
        # in-place updates keep every tensor's identity, so these lists stay valid for the run
        self._params = {name: p.detach() for name, p in self._module.named_parameters()}
        self._buffers = {f"method.{name}": self.method.get_buffer(name) for name in self.method.mutable_buffers}
        self._states = {group: rule.tensors() for group, rule in self._rules.items()}
        # on the CPU, inductor's C++ wrapper saves the Python that calls the kernels (0.79 against
        # 0.88 ms per burda2016 VAE step, timed once while another run held the other core)
        on_cpu = next(self.method.parameters()).device.type == "cpu"
        self._compiled = torch.compile(self._step, dynamic=False,
                                       options={"fallback_random": True, "cpp_wrapper": on_cpu})

    def _step(self, batch: torch.Tensor, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
              states: dict[str, list[dict[str, torch.Tensor]]], scalars: dict[str, list[torch.Tensor]]) -> Losses:
        def losses_of(p: dict[str, torch.Tensor]) -> tuple[Losses, dict[str, torch.Tensor]]:
            # torch.func forbids changing a captured tensor: the buffers the step updates in place
            # (Method.mutable_buffers) enter as copies made here, written back below
            copies = {name: b.clone() for name, b in buffers.items()}
            return torch.func.functional_call(self._module, {**p, **copies}, (batch,)), copies

        losses, pullback, updated = torch.func.vjp(losses_of, params, has_aux=True)
        grads = {}
        for group in self._groups:
            cotangent = {k: torch.ones_like(v) if k == group else torch.zeros_like(v) for k, v in losses.items()}
            (all_grads,) = pullback(cotangent)
            grads[group] = [all_grads[name] for name in self._groups[group]]
        with torch.no_grad():
            for group, rule in self._rules.items():
                rule.apply([params[name] for name in self._groups[group]], grads[group], states[group],
                           scalars[group])
            for name, value in updated.items():
                buffers[name].copy_(value)
        return {k: v.detach() for k, v in losses.items()}

    def __call__(self, batch: torch.Tensor) -> Losses:
        if self._compiled is None:
            if not all(optimizer.state for optimizer in self.method.optimizers.values()):
                return self.method.update(batch)
            self._build()
        scalars = {group: rule.scalars() for group, rule in self._rules.items()}
        return self._compiled(batch, self._params, self._buffers, self._states, scalars)


def compiled_update(method: Method, mode: Any) -> Callable[[torch.Tensor], Losses]:
    """The update function for ``[train] compile = mode``: false, true or ``"step"``."""
    if mode == "step":
        return CompiledStep(method)
    return compiled_losses_update(method) if mode else method.update
