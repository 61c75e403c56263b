"""Optimizers a method config can choose by name (``optimizer = "adam" | "burda-adam" | "adam-normgrad"``)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim.adam import adam as adam_functional

OPTIMIZERS = ("adam", "burda-adam", "adam-normgrad")


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
    where fusing is unsupported), whose order is the usual one, moments first. The lag then
    means feeding it each gradient one step late: step t runs the kernel on g_(t−1), at step
    count t with ε scaled by 1/sqrt(1 − β2^t) (which puts ε after the square root), and keeps
    g_t for the next step. The step takes the gradients: ``p.grad`` is None after it, so no
    copy is needed and zeroing them cannot touch the kept ones. The kept gradients are
    optimizer state, so they are saved and restored with :meth:`state_dict`.
    """

    def __init__(self, params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.99, 0.999), eps: float = 1e-4) -> None:
        if lr <= 0 or eps <= 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"invalid BurdaAdam settings: lr={lr}, betas={betas}, eps={eps}")
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
            t = group["step"]
            if t == 1:  # m = 0: the parameters stay; the moments wait for this gradient
                for p in params:
                    self.state[p].update(
                        step=torch.ones((), dtype=torch.float32, device=p.device if group["fused"] else "cpu"),
                        exp_avg=torch.zeros_like(p, memory_format=torch.preserve_format),
                        exp_avg_sq=torch.ones_like(p, memory_format=torch.preserve_format))
            else:
                states = [self.state[p] for p in params]
                beta1, beta2 = group["betas"]
                adam_functional(
                    params, [s["delayed_grad"] for s in states], [s["exp_avg"] for s in states],
                    [s["exp_avg_sq"] for s in states], [], [s["step"] for s in states],
                    fused=group["fused"], foreach=None if group["fused"] else True,
                    amsgrad=False, beta1=beta1, beta2=beta2, lr=group["lr"], weight_decay=0.0,
                    eps=group["eps"] / math.sqrt(1 - beta2 ** t), maximize=False,
                )
            for p in params:
                self.state[p]["delayed_grad"] = p.grad
                p.grad = None
        return loss


#: added to each gradient's norm before dividing by it (``AdamNormGrad``'s 1e-7)
NORM_FLOOR = 1e-7


class AdamNormGrad(torch.optim.Optimizer):
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
        if lr <= 0 or eps <= 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"invalid AdamNormGrad settings: lr={lr}, betas={betas}, eps={eps}")
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
            t = group["step"]
            for p in params:
                if not self.state[p]:
                    self.state[p].update(
                        step=torch.zeros((), dtype=torch.float32, device=p.device if group["fused"] else "cpu"),
                        exp_avg=torch.zeros_like(p, memory_format=torch.preserve_format),
                        exp_avg_sq=torch.zeros_like(p, memory_format=torch.preserve_format))
            grads = [p.grad for p in params]
            norms = torch._foreach_add(torch._foreach_norm(grads), NORM_FLOOR)
            grads = torch._foreach_div(grads, norms)
            states = [self.state[p] for p in params]
            beta1, beta2 = group["betas"]
            adam_functional(
                params, grads, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states], [],
                [s["step"] for s in states], fused=group["fused"], foreach=None if group["fused"] else True,
                amsgrad=False, beta1=beta1, beta2=beta2, lr=group["lr"], weight_decay=0.0,
                eps=group["eps"] / math.sqrt(1 - beta2 ** t), maximize=False,
            )
        return loss


def make_optimizer(name: str, params: list[torch.nn.Parameter], *, lr: float,
                   betas: tuple[float, float], eps: float | None = None) -> torch.optim.Optimizer:
    """The optimizer ``name`` over ``params``; ``eps`` None keeps each optimizer's own default.

    ``adam`` is torch's Adam, fused (one kernel for all parameters) on CPU and CUDA.
    """
    if name == "burda-adam":
        return BurdaAdam(params, lr=lr, betas=betas, **({} if eps is None else {"eps": eps}))
    if name == "adam-normgrad":
        return AdamNormGrad(params, lr=lr, betas=betas, **({} if eps is None else {"eps": eps}))
    if name == "adam":
        device = params[0].device if params else torch.device("cpu")
        fused = device.type in ("cuda", "cpu")
        return torch.optim.Adam(params, lr=lr, betas=betas, fused=fused, foreach=None if fused else True,
                                **({} if eps is None else {"eps": eps}))
    raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
