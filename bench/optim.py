"""Optimizers a method config can choose by name (``optimizer = "adam" | "burda-adam"``)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim.adam import adam as adam_functional

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

    (their code ascends the bound; we descend the loss, its negative).

    Speed: the step runs torch's fused Adam kernel (one pass over all parameters; foreach
    where fusing is unsupported). The lag makes the model's parameters one update behind a
    shadow copy q that follows the usual order (moments first): step t sets p ← q, then
    moves q by Adam at step count t + 1 with ε scaled by 1/sqrt(1 − β2^(t+1)), which is the
    update above with ε after the square root. The shadow copies are optimizer state, so
    they are saved and restored with :meth:`state_dict`.
    """

    def __init__(self, params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.99, 0.999), eps: float = 1e-4) -> None:
        if lr <= 0 or eps <= 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"invalid BurdaAdam settings: lr={lr}, betas={betas}, eps={eps}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "step": 0})
        for group in self.param_groups:
            group["fused"] = all(p.device.type in ("cpu", "cuda") for p in group["params"])

    def _state(self, p: torch.Tensor, fused: bool) -> dict[str, torch.Tensor]:
        state = self.state[p]
        if not state:
            # step 1 here is the fused kernel's t + 1 at t = 0 (it counts before it updates)
            state["step"] = torch.ones((), dtype=torch.float32, device=p.device if fused else "cpu")
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.ones_like(p, memory_format=torch.preserve_format)
            state["shadow"] = p.detach().clone(memory_format=torch.preserve_format)
        return state

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
            states = [self._state(p, group["fused"]) for p in params]
            shadows = [s["shadow"] for s in states]
            beta1, beta2 = group["betas"]
            group["step"] += 1  # a Python count beside the kernel's tensors: no device read
            t1 = group["step"] + 1
            torch._foreach_copy_(params, shadows)
            adam_functional(
                shadows, [p.grad for p in params], [s["exp_avg"] for s in states],
                [s["exp_avg_sq"] for s in states], [], [s["step"] for s in states],
                fused=group["fused"], foreach=None if group["fused"] else True,
                amsgrad=False, beta1=beta1, beta2=beta2, lr=group["lr"], weight_decay=0.0,
                eps=group["eps"] / math.sqrt(1 - beta2 ** t1), maximize=False,
            )
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
