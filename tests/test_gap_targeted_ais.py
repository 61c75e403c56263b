"""Gap-targeted AIS: temperatures grow until the BDMC gap on data simulated from the model meets a
target, or a cap; the test images' AIS then runs at that schedule, and the record says which it was.

The model is test_model_protocol's linear-Gaussian one (a hierarchical prior far from N(0, I)),
whose log p(x) is exact; its q(z|x) is a Gaussian near the exact posterior, so AIS starts from
the Gaussian fitted to q's draws, as it does for a method with a density.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vaebench.ais import bdmc, bdmc_gap_search, temperature_ladder
from vaebench.cli import main
from vaebench.config import from_dict
from vaebench.errors import ConfigError
from vaebench.evaluation import EvalConfig, evaluate, posterior_start
from vaebench.records import load_records

from test_model_protocol import _model
from test_runner import write_study

#: 64 simulated images in one batch (the model is tiny: a batch costs what one image does), so
#: that the gap of each schedule has a standard error of about 0.04 nats. Measured over 20 seeds:
#: the search stopped at 8 to 64 temperatures (never at the first schedule, whose gap was 0.58 to
#: 0.90), and the largest mean error of the estimate was 0.11 nats against an allowance of at least 0.25
SEARCH = dict(examples=6, is_samples=0, moment_samples=64, batch_size=64, ais_steps=2, ais_chains=32,
              ais_leapfrog=5, bdmc_examples=64)


def test_the_ladder_doubles_from_the_start_and_ends_at_the_cap():
    assert temperature_ladder(100, 1000) == [100, 200, 400, 800, 1000]
    assert temperature_ladder(3, 12) == [3, 6, 12]
    assert temperature_ladder(5, 5) == [5]
    with pytest.raises(ValueError):
        temperature_ladder(10, 5)


def test_every_schedule_sees_the_pairs_and_starts_bdmc_draws_and_builds_each_start_once():
    model, _, _ = _model()
    built = []
    config = EvalConfig(ais_initial="posterior", ais_refine_steps=3, ais_chains=4, ais_leapfrog=2)

    def start(x):  # the refined start: it draws, so rebuilding it would also move the random numbers
        built.append(x.shape[0])
        return posterior_start(model, x, config)

    ais = dict(n_chains=4, leapfrog_steps=2)  # not `settings`: that is hypothesis's, imported above
    search = bdmc_gap_search(model, 10, target=1e-9, n_steps=2, max_steps=8, batch_size=4, seed=7,
                             initial_fn=start, **ais)
    assert built == [4, 4, 2]  # once per batch, not once per schedule
    assert [int(t) for t, _, _ in search.tried] == [2, 4, 8]
    # the last schedule's bounds are what bdmc gives batch by batch under the same seeds
    separate = [bdmc(model, n, n_steps=8, seed=7 + 2 * b, initial_fn=start, **ais)
                for b, n in enumerate((4, 4, 2))]
    assert torch.equal(search.lower, torch.cat([r.lower for r in separate]))
    assert torch.equal(search.upper, torch.cat([r.upper for r in separate]))


def test_the_search_stops_at_the_first_schedule_within_the_target_and_agrees_with_the_exact_answer():
    model, exact, x = _model()
    target = 0.1
    run = evaluate(model, x, EvalConfig(**SEARCH, bdmc_gap_target=target, ais_max_steps=256), progress=False)
    temperatures = [int(t["temperatures"]) for t in run.bdmc_search]
    gaps = [t["bdmc_gap"] for t in run.bdmc_search]
    # the ladder from the study's start, every schedule before the last above the target, the last within it
    assert len(temperatures) >= 2 and temperatures == temperature_ladder(2, 256)[:len(temperatures)]
    assert all(gap > target for gap in gaps[:-1]) and gaps[-1] <= target, gaps
    # the record: the test images' AIS ran at that schedule, and its gap is the table's BDMC gap
    assert run.summary["ais_temperatures"] == temperatures[-1]
    assert run.summary["bdmc_gap_target_met"] == 1.0
    assert run.summary["bdmc_gap"] == pytest.approx(gaps[-1], abs=1e-5)
    assert run.summary["bdmc_examples"] == 64
    # the estimate: within its Monte Carlo error (delta method, Var(w)/E[w]² ≈ C/ESS − 1) plus the
    # target, which bounds AIS's shortfall on data from this model, of the exact log p(x)
    chains = SEARCH["ais_chains"]
    error = run.per_example["log_likelihood_ais"] - exact.log_px(x).numpy()
    se = np.sqrt((chains / run.per_example["ais_ess"] - 1) / chains)
    se_mean = math.sqrt((se**2).sum()) / len(se)
    assert abs(error.mean()) < 4 * se_mean + target, (error, se_mean)


def test_a_target_out_of_reach_within_the_cap_is_reported_as_not_met():
    model, _, x = _model()
    run = evaluate(model, x, EvalConfig(**SEARCH, bdmc_gap_target=0.001, ais_max_steps=4), progress=False)
    assert [t["temperatures"] for t in run.bdmc_search] == [2, 4]
    assert all(t["bdmc_gap"] > 0.001 for t in run.bdmc_search)
    assert run.summary["bdmc_gap_target_met"] == 0.0 and run.summary["ais_temperatures"] == 4


def test_without_a_target_the_temperatures_are_fixed_and_nothing_is_searched():
    model, _, x = _model()
    run = evaluate(model, x, EvalConfig(**SEARCH), progress=False)
    assert run.summary["ais_temperatures"] == 2 and run.bdmc_search == []
    assert "bdmc_gap_target_met" not in run.summary


def test_a_study_whose_target_is_not_met_says_so_in_its_record_and_report(tmp_path):
    study = write_study(tmp_path)
    study.write_text(study.read_text() + "ais_steps = 2\nais_chains = 2\nais_leapfrog = 1\nbdmc_examples = 4\n"
                     "bdmc_gap_target = 0.001\nais_max_steps = 4\n")
    out = tmp_path / "out"
    assert main(["run", str(study), "--out", str(out), "--no-progress"]) == 0
    (record,) = load_records(out)
    assert [t["temperatures"] for t in record["bdmc_search"]] == [2, 4]
    assert record["metrics"]["bdmc_gap_target_met"] == 0.0
    assert any(note.startswith("BDMC gap target not met") and "cap of 4 temperatures" in note
               for note in record["notes"]), record["notes"]
    readme = (out / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| mnist"))
    header = next(line for line in readme.splitlines() if line.startswith("| dataset"))
    cells = dict(zip([h.strip() for h in header.split("|")], [c.strip() for c in row.split("|")]))
    assert cells["BDMC gap"].endswith("⚠") and cells["AIS temperatures"] == "4"
    assert "- ⚠ beside **BDMC gap**: in at least one seed the gap was still above the target at the cap of 4 " \
           "temperatures" in readme
    assert "until the BDMC gap was at most 0.001 nats" in readme
    assert "⚠ beside a BDMC gap: its target was not met" in (out / "table.md").read_text()


# --- settings ------------------------------------------------------------------------------------

@settings(max_examples=100, deadline=None)
@given(target=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-2, 2),
                        st.booleans(), st.text(max_size=3)),
       cap=st.one_of(st.none(), st.integers(-5, 700), st.floats(0, 10)),
       steps=st.integers(0, 400), prior=st.one_of(st.none(), st.integers(1, 700)), examples=st.integers(0, 2))
def test_gap_target_settings_are_checked_with_one_line(target, cap, steps, prior, examples):
    params = {"ais_steps": steps, "bdmc_examples": examples, "ais_prior_steps": prior,
              "bdmc_gap_target": target, "ais_max_steps": cap}
    params = {k: v for k, v in params.items() if v is not None}
    number = isinstance(target, (int, float)) and not isinstance(target, bool)
    whole = isinstance(cap, int)
    valid = (target is None and cap is None) or (
        number and math.isfinite(target) and target > 0 and steps > 0 and examples > 0 and whole
        and cap >= steps and (prior is None or cap >= prior))
    if valid:
        parsed = from_dict(EvalConfig, params)
        assert parsed.bdmc_gap_target == target and parsed.ais_max_steps == cap
    else:
        with pytest.raises(ConfigError) as error:
            from_dict(EvalConfig, params, "eval")
        message = str(error.value)
        assert "\n" not in message and message.startswith("eval")
        assert "bdmc_gap_target" in message or "ais_max_steps" in message, message
