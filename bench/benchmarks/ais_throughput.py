"""AIS throughput on the suite's MLP decoder against this machine's own matmul throughput.

Run: ``python -m vaebench.benchmarks.ais_throughput [--device auto|cpu|cuda] [--steps T] [--latent-dim D]
[--initial posterior]``.
16 chains × 100 MNIST test images run as one batch of 1,600 rows, after a pilot run (4 chains,
a fifth of the temperatures) that tunes the step sizes; the timing includes the pilot. The
FLOP count is the decoder's matmuls: forward plus the input-gradient backward (decoder
parameters are frozen during AIS, so no weight-gradient matmuls happen), 4 · Σ in·out per
row and evaluation. The estimate (mean log p(x) over the images, with its standard error)
is printed beside the time; the model is untrained (seed 0), so it is a check, not a result.
The reference is torch.mm on exactly those layer shapes, timed in the same process on the
same device with the same thread count, so the ratio is a fair "fraction of achievable matmul
speed" (of the GPU's own, with ``--device cuda``).
Not a test: the numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from vaebench.ais import ais_log_likelihood
from vaebench.backbones import Architecture
from vaebench.datasets import DataConfig, load_dataset
from vaebench.device import resolve_device
from vaebench.errors import run_command
from vaebench.evaluation import EvalConfig, posterior_start
from vaebench.methods import create_method
from vaebench.records import device_description

from .matmul import add_device_option, layer_matmul_gflops, linear_flops, synchronize


def main(argv: list[str] | None = None) -> dict[str, float | int | str]:
    """Run the benchmark; print its one line (the device first) and return its fields."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_device_option(parser)
    parser.add_argument("--steps", type=int, default=50, help="AIS temperatures")
    parser.add_argument("--leapfrog", type=int, default=10)
    parser.add_argument("--chains", type=int, default=16)
    parser.add_argument("--examples", type=int, default=100)
    parser.add_argument("--latent-dim", type=int, default=32)
    parser.add_argument("--initial", choices=("prior", "posterior"), default="prior",
                        help="AIS start: the prior, or a Gaussian fitted to 512 posterior draws")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)

    torch.manual_seed(0)
    data = load_dataset("mnist", DataConfig(train_subset=1, valid_subset=1, test_subset=args.examples))
    method = create_method("vae", None, data_shape=data.image_shape, latent_dim=args.latent_dim,
                           architecture=Architecture()).to(device)
    method.eval()
    x = data.test.to(device)
    rows = args.chains * len(x)
    # The machine may be shared: the matmul reference is measured right before and right after
    # the AIS run and averaged, so both see the same load on average.
    mm_before = layer_matmul_gflops(method.decoder.net, rows)
    initial = posterior_start(method, x, EvalConfig(is_samples=0, moment_samples=512)) if args.initial == "posterior" else None
    # Warm-up run (allocator, kernels), then the timed run.
    ais_log_likelihood(method, x, n_chains=args.chains, n_steps=3,
                       leapfrog_steps=args.leapfrog, initial=initial, pilot_steps=2, seed=0)
    synchronize(device)
    tic = time.perf_counter()
    result = ais_log_likelihood(method, x, n_chains=args.chains, n_steps=args.steps,
                                leapfrog_steps=args.leapfrog, initial=initial, seed=0, progress=True)
    synchronize(device)
    seconds = time.perf_counter() - tic
    estimate = result.log_likelihood.double()
    # ``evaluations`` counts every chain of an example, pilot included; each is a forward plus
    # the input-gradient backward: twice the forward matmul FLOPs
    ais_gflops = result.evaluations * len(x) * 2 * linear_flops(method.decoder.net, 1) / seconds / 1e9
    mm_after = layer_matmul_gflops(method.decoder.net, rows)
    mm_gflops = (mm_before + mm_after) / 2
    out = {"device": device_description(device), "threads": torch.get_num_threads(), "temperatures": args.steps, "leapfrog": args.leapfrog,
           "initial": args.initial, "rows": rows, "log_likelihood": estimate.mean().item(),
           "log_likelihood_sem": (estimate.std() / len(x) ** 0.5).item(), "acceptance": result.acceptance_rate.mean().item(),
           "seconds": seconds, "examples_per_s": len(x) / seconds,
           "ais_gflops": ais_gflops, "matmul_gflops_before": mm_before,
           "matmul_gflops_after": mm_after, "matmul_gflops": mm_gflops, "ratio": ais_gflops / mm_gflops}
    print(" ".join(f"{k}={_shown(v)}" for k, v in out.items()))
    return out


def _shown(value: float | int | str) -> str:
    """A value of the key=value line: floats to 4 digits, text with spaces quoted."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, str) and " " in value:
        return json.dumps(value)
    return str(value)


if __name__ == "__main__":
    sys.exit(run_command(main, prog="vaebench.benchmarks.ais_throughput"))
