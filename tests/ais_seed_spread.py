"""How the exact-answer checks of test_ais.py vary with the AIS seed, on one device.

    python tests/ais_seed_spread.py DEVICE SEEDS CHECK[:key=value,...] ...

e.g. ``python tests/ais_seed_spread.py cpu 20 closed:n=256 bdmc_bern:n=256,c=1,T=30 vae:n=128``.
A check's defaults are the sizes test_ais.py used before they were chosen with this tool; the
keys are n (examples), c (chains), T (temperatures). Models and data are made on the CPU and
moved, so two devices differ only in the AIS random numbers and floating-point order. Prints,
per error, its mean, SD and extremes over seeds, and how many seeds fall outside ±0.05 (the
tests' TOLERANCE for an AIS mean error; for a BDMC bound what matters is its sign). Not a test.
"""
import math
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from test_ais import LinearGaussian, bernoulli_model, grid_log_marginal, make_bernoulli_2d  # noqa: E402

from vaebench.ais import Gaussian, ais_log_likelihood, bdmc, pilot  # noqa: E402

dev = torch.device("cpu")  # set from the command line


def lg_data(n):
    model = LinearGaussian(device="cpu")
    torch.manual_seed(0)
    z = torch.randn(n, model.latent_dim)
    x = model.sample_x(z)
    return LinearGaussian(device=dev), z.to(dev), x.to(dev)


def bern_net():
    return make_bernoulli_2d().to(dev)


def frozen(s, n=64, T=100):
    model, z, x = lg_data(n)
    start = Gaussian(z + 0.1, 0.05 * torch.eye(model.latent_dim, device=dev).expand(n, -1, -1))
    steps, _ = pilot(model, x, n_steps=20, leapfrog_steps=5, initial=start, seed=3 + 100 * s)
    r = ais_log_likelihood(model, x, n_chains=16, n_steps=T, leapfrog_steps=5, initial=start, step_sizes=steps,
                           seed=4 + 100 * s)
    return {"error": (r.log_likelihood.double() - model.exact(x)).mean().item()}


def closed(s, n=32, T=1000):
    model, z, x = lg_data(n)
    r = ais_log_likelihood(model, x, n_chains=16, n_steps=T, leapfrog_steps=10, seed=1 + 100 * s)
    return {"error": (r.log_likelihood.double() - model.exact(x)).mean().item()}


def initial(s, n=32, T=300):
    model, z, x = lg_data(n)
    start = torch.distributions.Normal(z + 0.3, torch.full_like(z, 0.5))
    from vaebench.metrics import Proposal
    init = Proposal(lambda k: start.sample((k,)), lambda w: start.log_prob(w).sum(-1))
    r = ais_log_likelihood(model, x, n_chains=16, n_steps=T, initial=init, seed=2 + 100 * s)
    return {"error": (r.log_likelihood.double() - model.exact(x)).mean().item()}


def quad(s, n=32, T=500):
    net = bern_net()
    torch.manual_seed(3)
    with torch.no_grad():
        x = torch.bernoulli(torch.sigmoid(net(torch.randn(n, 2, device=dev))))
        e = grid_log_marginal(net, x)
    r = ais_log_likelihood(bernoulli_model(net), x, n_chains=16, n_steps=T, leapfrog_steps=10, seed=4 + 100 * s)
    return {"error": (r.log_likelihood.double() - e).mean().item()}


def bdmc_bern(s, n=32, c=16, T=10):
    net = bern_net()
    r = bdmc(bernoulli_model(net), n, n_chains=c, n_steps=T, seed=6 + 100 * s)  # on the net's device
    with torch.no_grad():
        e = grid_log_marginal(net, r.x)
    return {"lower": (r.lower.double() - e).mean().item(), "upper": (r.upper.double() - e).mean().item(), "gap": float(r.gap)}


def bdmc_lg(s, n=64, c=16, T=100):
    model = LinearGaussian(device=dev)
    r = bdmc(model, n, n_chains=c, n_steps=T, seed=5 + 100 * s)  # on the device of the model's prior
    e = model.exact(r.x)
    return {"lower": (r.lower.double() - e).mean().item(), "upper": (r.upper.double() - e).mean().item(), "gap": float(r.gap)}


_vae = {}
def vae(s, n=16, T=300):
    if n not in _vae:
        from vaebench.backbones import Architecture
        from vaebench.datasets import DataConfig, load_dataset
        from vaebench.methods import create_method
        from vaebench.training import TrainConfig, train
        data = load_dataset("mnist", DataConfig(train_subset=2000, valid_subset=100, test_subset=n))
        torch.manual_seed(0)
        m = create_method("vae", None, data_shape=data.image_shape, latent_dim=2, architecture=Architecture(hidden=(100, 100)))
        train(m, data, TrainConfig(epochs=4, batch_size=50, valid_every=0), seed=0, dynamic_binarization=True, progress=False)
        m = m.to(dev)
        x = data.test.to(dev)
        with torch.no_grad():
            _vae[n] = m, x, grid_log_marginal(m.likelihood.logits, x, half_width=6.0, n=401)
    m, x, e = _vae[n]
    r = ais_log_likelihood(m, x, n_chains=16, n_steps=T, leapfrog_steps=5, seed=8 + 100 * s)
    return {"error": (r.log_likelihood.double() - e).mean().item()}


def main(argv: list[str]) -> None:
    global dev
    dev, seeds = torch.device(argv[0]), int(argv[1])
    torch.set_num_threads(1)
    name = torch.cuda.get_device_name() if dev.type == "cuda" else "CPU"
    print(f"device {dev} ({name}), torch {torch.__version__}, {seeds} seeds each", flush=True)
    for spec in argv[2:]:
        check, _, params = spec.partition(":")
        kw = {k: int(v) for k, v in (p.split("=") for p in params.split(",") if p)}
        t0 = time.time()
        rows = [globals()[check](s, **kw) for s in range(seeds)]
        for key in rows[0]:
            v = torch.tensor([r[key] for r in rows], dtype=torch.float64)
            print(f"{spec:<28} {key:<6} mean {v.mean():+.4f}  sd {v.std():.4f}  SE {v.std() / math.sqrt(seeds):.4f}  "
                  f"min {v.min():+.4f}  max {v.max():+.4f}  |.|>0.05 {(v.abs() > 0.05).sum().item()}/{seeds}  "
                  f"seed0 {v[0]:+.4f}  ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
