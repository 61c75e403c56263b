"""Optimizers a method config can choose by name (``optimizer = "adam" | "burda-adam"``)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

OPTIMIZERS = ("adam", "burda-adam")


class BurdaAdam(torch.optim.Optimizer):
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

    (their code ascends the bound; we descend the loss, its negative). All parameters of a
    group are updated with batched ``torch._foreach_*`` kernels; the step count lives in
    the group, so it is saved and restored with :meth:`state_dict`.
    """

    def __init__(self, params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.99, 0.999), eps: float = 1e-4) -> None:
        if lr <= 0 or eps <= 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"invalid BurdaAdam settings: lr={lr}, betas={betas}, eps={eps}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "step": 0})

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
            grads = [p.grad for p in params]
            for p in params:
                if not self.state[p]:
                    self.state[p]["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    self.state[p]["exp_avg_sq"] = torch.ones_like(p, memory_format=torch.preserve_format)
            m = [self.state[p]["exp_avg"] for p in params]
            v = [self.state[p]["exp_avg_sq"] for p in params]
            beta1, beta2 = group["betas"]
            group["step"] += 1
            t = group["step"]
            alpha = group["lr"] * math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
            # the update from the old moments first (Theano's simultaneous updates), then the moments
            denom = torch._foreach_sqrt(v)
            torch._foreach_add_(denom, group["eps"])
            torch._foreach_addcdiv_(params, m, denom, value=-alpha)
            torch._foreach_mul_(m, beta1)
            torch._foreach_add_(m, grads, alpha=1 - beta1)
            torch._foreach_mul_(v, beta2)
            torch._foreach_addcmul_(v, grads, grads, value=1 - beta2)
        return loss


def make_optimizer(name: str, params: list[torch.nn.Parameter], *, lr: float,
                   betas: tuple[float, float], eps: float | None = None) -> torch.optim.Optimizer:
    """The optimizer ``name`` over ``params``; ``eps`` None keeps each optimizer's own default.

    ``adam`` is torch's Adam, fused (one kernel for all parameters) on CPU and CUDA.
    """
    if name == "burda-adam":
        return BurdaAdam(params, lr=lr, betas=betas, **({} if eps is None else {"eps": eps}))
    if name == "adam":
        device = params[0].device if params else torch.device("cpu")
        fused = device.type in ("cuda", "cpu")
        return torch.optim.Adam(params, lr=lr, betas=betas, fused=fused, foreach=None if fused else True,
                                **({} if eps is None else {"eps": eps}))
    raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
