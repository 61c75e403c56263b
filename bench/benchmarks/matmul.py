"""The machine's own matmul throughput, the yardstick other benchmarks are quoted against.

Run: ``python -m vaebench.benchmarks.matmul [--device auto|cpu|cuda] [--size 1024]``: GFLOP/s of
one float32 n×n matmul on the device, best of ``--repeats``. The other benchmarks measure
the same yardstick on their own device in their own run, so their ratios compare a GPU with
its own matmul speed and a CPU with its own.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from torch import nn

from vaebench.device import resolve_device
from vaebench.errors import run_command
from vaebench.records import device_description


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """``--device``, resolved by :func:`vaebench.device.resolve_device` as in ``vaebench run``."""
    parser.add_argument("--device", default="auto",
                        help="auto (CUDA when torch sees a GPU, else the CPU), cpu or cuda")


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on a CUDA device; a no-op on the CPU. Only at timing boundaries."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(n: int = 1024, repeats: int = 20, device: str | torch.device = "cpu") -> float:
    """Best-of-``repeats`` GFLOP/s of an n×n by n×n float32 matmul on ``device``."""
    device = torch.device(device)
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        tic = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        best = min(best, time.perf_counter() - tic)
    return 2 * n**3 / best / 1e9


def linear_flops(module: nn.Module, rows: int) -> int:
    """Forward-pass FLOPs of the module's nn.Linear layers for ``rows`` input rows (2·in·out each)."""
    return sum(2 * m.in_features * m.out_features * rows for m in module.modules() if isinstance(m, nn.Linear))


def layer_matmul_gflops(module: nn.Module, rows: int, repeats: int = 20,
                        device: str | torch.device | None = None) -> float:
    """GFLOP/s of torch.mm on the forward and input-gradient shapes of ``module``'s linear layers,
    at ``rows`` rows, on ``device`` (default: the module's): the speed those layers could reach
    if nothing but their matmuls ran."""
    layers = [m for m in module.modules() if isinstance(m, nn.Linear)]
    device = torch.device(device) if device is not None else layers[0].weight.device
    fwd = [(torch.randn(rows, m.in_features, device=device), m.weight.detach().to(device).T.contiguous())
           for m in layers]
    bwd = [(torch.randn(rows, m.out_features, device=device), m.weight.detach().to(device).contiguous())
           for m in layers]
    pairs = fwd + bwd
    for a, b in pairs:  # warm-up
        torch.mm(a, b)
    synchronize(device)
    tic = time.perf_counter()
    for _ in range(repeats):
        for a, b in pairs:
            torch.mm(a, b)
    synchronize(device)
    seconds = time.perf_counter() - tic
    flops = repeats * sum(2 * a.shape[0] * a.shape[1] * b.shape[1] for a, b in pairs)
    return flops / seconds / 1e9


def main(argv: list[str] | None = None) -> dict[str, float | int | str]:
    """Print and return the device and its float32 matmul GFLOP/s."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_device_option(parser)
    parser.add_argument("--size", type=int, default=1024, help="n of the n×n matrices")
    parser.add_argument("--repeats", type=int, default=20, help="timed matmuls; the fastest is kept")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    out = {"device": device_description(device), "threads": torch.get_num_threads(), "size": args.size,
           "gflops": matmul_gflops(args.size, args.repeats, device)}
    print(f"device {out['device']} ({device}), threads {out['threads']}: "
          f"matmul {args.size}×{args.size} fp32, best of {args.repeats}: {out['gflops']:.1f} GFLOP/s")
    return out


if __name__ == "__main__":
    sys.exit(run_command(main, prog="vaebench.benchmarks.matmul"))
