"""Training-loop throughput: vaebench's loop against a plain hand-written torch loop.

Both train the same VAE (MLP backbone) on MNIST with the same batch size and fused Adam;
the script prints seconds per epoch for each and the fraction of the machine's own
matmul throughput that each achieves, measured in the same run.

    python -m vaebench.benchmarks.training_throughput [--epochs 2] [--batch-size 100]
"""

from __future__ import annotations

import argparse
import time

import torch

from vaebench.backbones import Architecture
from vaebench.datasets import DataConfig, load_dataset
from vaebench.methods import create_method
from vaebench.training import TrainConfig, train

from .matmul import linear_flops, matmul_gflops


def plain_loop(model, train_x: torch.Tensor, epochs: int, batch_size: int) -> float:
    """The loop a researcher would write by hand: seconds per epoch."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    n = len(train_x) // batch_size * batch_size
    tic = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(len(train_x))[:n]
        for idx in perm.split(batch_size):
            x = torch.bernoulli(train_x[idx])
            q = model.encoder(x)
            z = q.rsample()
            loc, scale = q.base_dist.loc, q.base_dist.scale
            kl = 0.5 * (loc.square() + scale.square() - 1).sum(-1) - scale.log().sum(-1)
            loss = -(model.decoder.log_prob(x, z) - kl).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    loss.item()
    return (time.perf_counter() - tic) / epochs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1, help="epochs per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each loop, alternating; best kept")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--latent-dim", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    data = load_dataset("mnist", DataConfig(valid_subset=1000))
    arch = Architecture(hidden=(300, 300))

    def fresh():
        torch.manual_seed(0)
        return create_method("vae", {}, data_shape=data.image_shape, latent_dim=args.latent_dim,
                             architecture=arch)

    model = fresh()
    n_train = len(data.train) // args.batch_size * args.batch_size
    # forward + backward ≈ 3× the forward matmul FLOPs
    flops_per_epoch = 3 * (linear_flops(model.encoder, n_train) + linear_flops(model.decoder, n_train))

    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, valid_every=0)
    peak = matmul_gflops()
    ours = plain = float("inf")
    # Alternate the two loops and keep each one's best run: this machine's load is noisy.
    for _ in range(args.repeats):
        result = train(fresh(), data, config, seed=0, dynamic_binarization=True, progress=False)
        ours = min(ours, result.seconds / args.epochs)
        plain = min(plain, plain_loop(fresh(), data.train, args.epochs, args.batch_size))
        peak = max(peak, matmul_gflops())

    print(f"threads {torch.get_num_threads()}, best of {args.repeats}, batch {args.batch_size}, MNIST {n_train} examples/epoch, "
          f"{flops_per_epoch / 1e9:.1f} GFLOP/epoch (matmuls, fwd+bwd)")
    print(f"machine matmul (1024², fp32): {peak:.1f} GFLOP/s")
    for name, seconds in (("vaebench loop", ours), ("plain torch loop", plain)):
        achieved = flops_per_epoch / seconds / 1e9
        print(f"{name:<17} {seconds:6.2f} s/epoch  {n_train / seconds:8.0f} examples/s  "
              f"{achieved:6.1f} GFLOP/s = {achieved / peak:.2f} of matmul")
    print(f"vaebench / plain time ratio: {ours / plain:.3f}")


if __name__ == "__main__":
    main()
