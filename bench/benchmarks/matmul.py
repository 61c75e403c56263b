"""The machine's own matmul throughput, the yardstick other benchmarks are quoted against."""

from __future__ import annotations

import time

import torch
from torch import nn


def matmul_gflops(n: int = 1024, repeats: int = 20, device: str | torch.device = "cpu") -> float:
    """Best-of-``repeats`` GFLOP/s of an n×n by n×n float32 matmul."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if a.is_cuda:
            torch.cuda.synchronize()
        tic = time.perf_counter()
        torch.mm(a, b)
        if a.is_cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - tic)
    return 2 * n**3 / best / 1e9


def linear_flops(module: nn.Module, rows: int) -> int:
    """Forward-pass FLOPs of the module's nn.Linear layers for ``rows`` input rows (2·in·out each)."""
    return sum(2 * m.in_features * m.out_features * rows for m in module.modules() if isinstance(m, nn.Linear))


def layer_matmul_gflops(module: nn.Module, rows: int, repeats: int = 20) -> float:
    """GFLOP/s of torch.mm on the forward and input-gradient shapes of ``module``'s linear layers,
    at ``rows`` rows: the speed those layers could reach if nothing but their matmuls ran."""
    layers = [m for m in module.modules() if isinstance(m, nn.Linear)]
    fwd = [(torch.randn(rows, m.in_features), m.weight.detach().T.contiguous()) for m in layers]
    bwd = [(torch.randn(rows, m.out_features), m.weight.detach().contiguous()) for m in layers]
    pairs = fwd + bwd
    for a, b in pairs:  # warm-up
        torch.mm(a, b)
    tic = time.perf_counter()
    for _ in range(repeats):
        for a, b in pairs:
            torch.mm(a, b)
    seconds = time.perf_counter() - tic
    flops = repeats * sum(2 * a.shape[0] * a.shape[1] * b.shape[1] for a, b in pairs)
    return flops / seconds / 1e9
