"""How the exact-answer checks of test_evaluation.py vary with the evaluation's seed (CPU).

    python tests/evaluation_seed_spread.py --seeds 30 [--chains 128 --is-samples 20000
        --full-is-samples 5000 --prior-steps 500 --prior-test-steps 500]

Each check's error is computed as the test computes it, for seeds 0 … N-1, and printed with
its threshold, mean, SD, largest value and the number of seeds at or over the threshold.
The defaults are the sizes the tests had before they were chosen with this tool. Not a test.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_evaluation import SETTINGS, _model, _numpy  # noqa: E402

from vaebench.evaluation import EvalConfig, evaluate  # noqa: E402

LIMITS = dict(is_max=0.02, ais_mean=0.05, elbo_max=0.05, recon_max=0.15, bdmc_gap=0.2, full_is_max=0.03,
              implicit_upper_max=0.1, implicit_ais_mean=0.05, prior_ais_mean=0.05)


def errors(seed: int, settings: dict, full: int, prior_test_steps: int, chains: int) -> dict[str, float]:
    cpu = torch.device("cpu")
    out = {}
    method, grid, test = _model(True, cpu)
    x = test[:6]
    exact = _numpy(grid.log_px(x))
    expected = {k: _numpy(v) for k, v in grid.expectations(x).items()}
    torch.manual_seed(seed)
    run = evaluate(method, test, EvalConfig(**settings, full_test_is_samples=full), progress=False)
    out["is_max"] = np.abs(run.per_example["log_likelihood_is"] - exact).max()
    out["ais_mean"] = abs((run.per_example["log_likelihood_ais"] - exact).mean())
    out["elbo_max"] = np.abs(run.per_example["elbo"] - expected["elbo"]).max()
    out["recon_max"] = np.abs(run.per_example["recon_bernoulli_nll"] + expected["log_lik"]).max()
    out["bdmc_gap"] = abs(run.summary["bdmc_gap"])
    out["full_is_max"] = np.abs(run.per_example_full["log_likelihood_is_full"] - _numpy(grid.log_px(test))).max()
    method, grid, test = _model(False, cpu)
    torch.manual_seed(seed)
    run = evaluate(method, test, EvalConfig(**settings, full_test_is_samples=full), progress=False)
    out["implicit_upper_max"] = np.abs(run.per_example["elbo_upper_bound"] - expected["elbo"]).max()
    out["implicit_ais_mean"] = abs((run.per_example["log_likelihood_ais"] - exact).mean())
    method, grid, test = _model(False, cpu)
    torch.manual_seed(seed)
    run = evaluate(method, test, EvalConfig(examples=4, is_samples=0, moment_samples=64, ais_steps=5,
                                            ais_prior_steps=prior_test_steps, ais_chains=chains), progress=False)
    out["prior_ais_mean"] = abs((run.per_example["log_likelihood_ais"] - _numpy(grid.log_px(test[:4]))).mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--chains", type=int, default=16)
    parser.add_argument("--is-samples", type=int, default=5000)
    parser.add_argument("--full-is-samples", type=int, default=2000)
    parser.add_argument("--prior-steps", type=int, default=None, help="AIS temperatures from the prior (implicit run)")
    parser.add_argument("--prior-test-steps", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    settings = {**SETTINGS, "ais_chains": args.chains, "is_samples": args.is_samples,
                "ais_prior_steps": args.prior_steps}
    tic = time.time()
    rows = [errors(s, settings, args.full_is_samples, args.prior_test_steps, args.chains) for s in range(args.seeds)]
    print(f"{args.seeds} seeds, {args.chains} chains, IS {args.is_samples}, full IS {args.full_is_samples}, "
          f"prior temperatures {args.prior_steps} (implicit run) and {args.prior_test_steps} (prior-started check), "
          f"{time.time() - tic:.0f} s")
    for key, limit in LIMITS.items():
        v = np.array([r[key] for r in rows])
        print(f"{key:<19} threshold {limit:<5} mean {v.mean():.4f} sd {v.std(ddof=1):.4f} max {v.max():.4f} "
              f"at or over {(v >= limit).sum()}/{args.seeds}")


if __name__ == "__main__":
    main()
