"""Optimizers a method config can choose by name (``optimizer = "adam" | "burda-adam" | "adam-normgrad"``)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim.adam import adam as adam_functional


class _FusedAdamVariant(torch.optim.Optimizer):
    """What the Adam variants below share: their settings, a Python step count per group (no
    device read), and torch's fused Adam kernel (foreach where fusing is unsupported) with ε
    scaled by 1/sqrt(1 − β2^t), which puts ε after the square root. A subclass says what the
    kernel gets in ``_update``."""

    def __init__(self, params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]], lr: float,
                 betas: tuple[float, float], eps: float) -> None:
        if lr <= 0 or eps <= 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"invalid {type(self).__name__} settings: lr={lr}, betas={betas}, eps={eps}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "step": 0})
        for group in self.param_groups:
            group["fused"] = all(p.device.type in ("cpu", "cuda") for p in group["params"])

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            group["step"] += 1  # a Python count beside the kernel's tensors: no device read
            self._update(group, params, group["step"])
        return loss

    def _update(self, group: dict[str, Any], params: list[torch.nn.Parameter], t: int) -> None:
        raise NotImplementedError

    def _new_state(self, group: dict[str, Any], p: torch.nn.Parameter, *, step: float, second_moment: float) -> None:
        self.state[p].update(
            step=torch.full((), step, dtype=torch.float32, device=p.device if group["fused"] else "cpu"),
            exp_avg=torch.zeros_like(p, memory_format=torch.preserve_format),
            exp_avg_sq=torch.full_like(p, second_moment, memory_format=torch.preserve_format))

    def _adam(self, group: dict[str, Any], params: list[torch.nn.Parameter], grads: list[torch.Tensor],
              t: int) -> None:
        states = [self.state[p] for p in params]
        beta1, beta2 = group["betas"]
        adam_functional(
            params, grads, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states], [],
            [s["step"] for s in states], fused=group["fused"], foreach=None if group["fused"] else True,
            amsgrad=False, beta1=beta1, beta2=beta2, lr=group["lr"], weight_decay=0.0,
            eps=group["eps"] / math.sqrt(1 - beta2 ** t), maximize=False,
        )


class BurdaAdam(_FusedAdamVariant):
    """Adam as in Burda, Grosse & Salakhutdinov's IWAE code (``yburda/iwae``, ``optimizers.py``).

    It differs from Kingma & Ba's Adam (and torch's) in four ways, all kept because that
    code produced the paper's Table 1:

    - second moments start at ones (first moments at zeros), which damps the first steps;
    - ε is added after the square root, ``m / (sqrt(v) + ε)``, with ε = 1e-4 by default;
    - the step size is ``lr · sqrt(1 − β2^t) / (1 − β1^t)`` with t counted from 1;
    - the parameter update of step t uses the moments from *before* step t's gradient,
      because Theano evaluates all of a function's updates from the old values; the new
      gradient only enters the moments. So the first step leaves the parameters unchanged.

    With t starting at 1, step t (t = 1, 2, …) with gradient g of the loss is::

        p ← p − lr · sqrt(1 − β2^t) / (1 − β1^t) · m / (sqrt(v) + ε)
        m ← β1 m + (1 − β1) g
        v ← β2 v + (1 − β2) g²

    (their code ascends the bound; we descend the loss, its negative).

    Speed: the step runs torch's fused Adam kernel (one pass over all parameters; foreach
    where fusing is unsupported), whose order is the usual one, moments first. The lag then
    means feeding it each gradient one step late: step t runs the kernel on g_(t−1), at step
    count t with ε scaled by 1/sqrt(1 − β2^t) (which puts ε after the square root), and keeps
    g_t for the next step. The step takes the gradients: ``p.grad`` is None after it, so no
    copy is needed and zeroing them cannot touch the kept ones. The kept gradients are
    optimizer state, so they are saved and restored with :meth:`state_dict`.
    """

    def __init__(self, params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.99, 0.999), eps: float = 1e-4) -> None:
        super().__init__(params, lr, betas, eps)

    def _update(self, group: dict[str, Any], params: list[torch.nn.Parameter], t: int) -> None:
        if t == 1:  # m = 0: the parameters stay; the moments wait for this gradient
            for p in params:
                self._new_state(group, p, step=1.0, second_moment=1.0)
        else:
            self._adam(group, params, [self.state[p]["delayed_grad"] for p in params], t)
        for p in params:
            self.state[p]["delayed_grad"] = p.grad
            p.grad = None


#: added to each gradient's norm before dividing by it (``AdamNormGrad``'s 1e-7)
NORM_FLOOR = 1e-7


class AdamNormGrad(_FusedAdamVariant):
    """Adam on normalised gradients, as ``AdamNormGrad`` in the VampPrior authors' code
    (jmtomczak/vae_vampprior, ``utils/optimizer.py``), with which ``experiment.py`` trains.

    Each parameter tensor's gradient is divided by its own L2 norm (plus 1e-7) before Adam sees
    it, so every tensor moves by steps of about ``lr`` whatever its gradient's scale. Then their
    Adam, which puts ε after the uncorrected square root: with t counted from 1::

        g ← g / (‖g‖₂ + 1e-7)
        m ← β1 m + (1 − β1) g,   v ← β2 v + (1 − β2) g²
        p ← p − lr · sqrt(1 − β2^t) / (1 − β1^t) · m / (sqrt(v) + ε)

    (moments start at zeros; ε = 1e-8 and no weight decay, as they run it). The step runs torch's
    fused Adam kernel on the normalised gradients with ε scaled by 1/sqrt(1 − β2^t), which is the
    same update (torch's kernel puts ε after the bias-corrected square root).
    """

    def __init__(self, params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        super().__init__(params, lr, betas, eps)

    def _update(self, group: dict[str, Any], params: list[torch.nn.Parameter], t: int) -> None:
        for p in params:
            if not self.state[p]:
                self._new_state(group, p, step=0.0, second_moment=0.0)
        grads = [p.grad for p in params]
        norms = torch._foreach_add(torch._foreach_norm(grads), NORM_FLOOR)
        self._adam(group, params, torch._foreach_div(grads, norms), t)


def _torch_adam(params: list[torch.nn.Parameter], **settings: Any) -> torch.optim.Optimizer:
    """torch's Adam, fused (one kernel for all parameters) on CPU and CUDA."""
    device = params[0].device if params else torch.device("cpu")
    fused = device.type in ("cuda", "cpu")
    return torch.optim.Adam(params, fused=fused, foreach=None if fused else True, **settings)


#: optimizer name → constructor (params, lr=, betas=[, eps=]): the names a method's ``optimizer`` accepts
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": _torch_adam,
    "burda-adam": BurdaAdam,
    "adam-normgrad": AdamNormGrad,
}


def make_optimizer(name: str, params: list[torch.nn.Parameter], *, lr: float,
                   betas: tuple[float, float], eps: float | None = None) -> torch.optim.Optimizer:
    """The optimizer ``name`` (a key of :data:`OPTIMIZERS`) over ``params``; ``eps`` None keeps each
    optimizer's own default."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](params, lr=lr, betas=betas, **({} if eps is None else {"eps": eps}))
