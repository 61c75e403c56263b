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
