"""The refined AIS start: q(z|x)'s draws moved by HMC on the true posterior p(z|x) before the
Gaussian is fitted, so that AIS starts near p(z|x) whatever q(z|x) is: an implicit posterior
far narrower than p(z|x) (AVB's) or a deterministic encoder's single point.

The model is test_model_protocol's linear-Gaussian one (a hierarchical prior far from N(0, I)),
whose posterior and log p(x) are exact. Its q(z|x) is made deliberately bad: 20 times narrower
than p(z|x) and shifted by 2 (about 5 posterior standard deviations).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vaebench.ais import refined_draws
from vaebench.config import from_dict
from vaebench.errors import ConfigError
from vaebench.evaluation import EvalConfig, evaluate
from vaebench.metrics import gaussian_moments

from test_model_protocol import _model

#: the bad q(z|x): shifted by this, its sd this fraction of the exact posterior's
SHIFT, NARROW = 2.0, 0.05
#: 6 test images, 64 simulated ones for BDMC; 8 temperatures, which from q's own draws leave a
#: BDMC gap of hundreds of nats (measured: 224 to 307 over 5 seeds)
SETTINGS = dict(examples=6, is_samples=0, moment_samples=64, batch_size=64, ais_steps=8, ais_chains=32,
                ais_leapfrog=5, bdmc_examples=64, ais_initial="posterior")


@pytest.mark.parametrize("start", ["narrow", "point"])
def test_refined_draws_have_the_exact_posteriors_moments(start):
    model, exact, x = _model(shift=SHIFT, widen=NARROW, density=False)
    mean, cov = exact.posterior(x)
    sd = cov.diagonal().sqrt()
    torch.manual_seed(0)
    z0 = model.posterior(x, 64).z
    if start == "point":  # a deterministic encoder: every chain starts at one point per image
        z0 = z0[:1].expand_as(z0).contiguous()
    # before: the start is nowhere near p(z|x), so the checks below can fail
    m0, c0 = gaussian_moments(z0)
    assert ((m0 - mean) / sd).abs().min() > 3
    draws = refined_draws(model, x, z0, n_transitions=200, leapfrog_steps=5, seed=1)
    assert draws.shape == (64 * 100, len(x), 2)
    m, c = gaussian_moments(draws)
    # over 20 seeds, from either start, the largest mean error was 0.025 posterior sds and the
    # draws' sd 0.82 to 1.16 times the exact one (at 32 chains and 100 transitions: 0.055, and
    # 0.74 to 1.26)
    assert ((m - mean) / sd).abs().max() < 0.15
    ratio = c.diagonal(dim1=-2, dim2=-1).sqrt() / sd
    assert ((0.7 < ratio) & (ratio < 1.35)).all(), ratio


def test_refined_draws_leave_the_callers_random_stream_and_the_models_parameters_alone():
    model, _, x = _model(shift=SHIFT, widen=NARROW, density=False)
    z0 = model.posterior(x, 4).z
    state = torch.get_rng_state()
    a = refined_draws(model, x, z0, n_transitions=3, leapfrog_steps=2, seed=7)
    assert torch.equal(state, torch.get_rng_state())
    assert torch.equal(a, refined_draws(model, x, z0, n_transitions=3, leapfrog_steps=2, seed=7))
    assert a.shape == (4 * 2, len(x), 2)  # the states after the 2nd and 3rd of 3 transitions
    assert all(p.requires_grad for p in (*model.prior.parameters(), *model.likelihood.parameters()))
    with pytest.raises(ValueError):
        refined_draws(model, x, z0, n_transitions=0)


def test_a_refined_start_makes_ais_from_a_bad_posterior_exact_and_its_bdmc_gap_small():
    model, exact, x = _model(shift=SHIFT, widen=NARROW, density=False)
    gaps = {}
    for refine in (0, 100):
        torch.manual_seed(0)
        run = evaluate(model, x, EvalConfig(**SETTINGS, ais_refine_steps=refine), progress=False)
        gaps[refine] = run.summary["bdmc_gap"]
    # from q's own draws: hundreds of nats; refined: over 5 seeds at most 0.041 (SE about 0.02)
    assert gaps[0] > 50
    assert gaps[100] < 0.15, gaps
    chains = SETTINGS["ais_chains"]
    error = run.per_example["log_likelihood_ais"] - exact.log_px(x).numpy()
    se = np.sqrt((chains / run.per_example["ais_ess"] - 1) / chains)
    # over 5 seeds the largest error on one image was 0.078 nats
    assert (np.abs(error) < 4 * se + 0.05).all(), (error, se)
    assert run.summary["ais_prior_start"] == 0.0


@settings(max_examples=60, deadline=None)
@given(refine=st.one_of(st.integers(-3, 300), st.floats(0, 5), st.booleans(), st.text(max_size=2)),
       initial=st.sampled_from(["auto", "posterior", "prior"]))
def test_refine_settings_are_checked_with_one_line(refine, initial):
    params = {"ais_steps": 10, "ais_initial": initial, "ais_refine_steps": refine}
    valid = isinstance(refine, int) and not isinstance(refine, bool) and refine >= 0 and (
        refine == 0 or initial == "posterior")
    if valid:
        assert from_dict(EvalConfig, params).ais_refine_steps == refine
    else:
        with pytest.raises(ConfigError) as error:
            from_dict(EvalConfig, params, "eval")
        message = str(error.value)
        assert "\n" not in message and message.startswith("eval") and "ais_refine_steps" in message, message

