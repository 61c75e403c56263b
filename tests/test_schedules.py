import pytest

from vaebench.errors import ConfigError
from vaebench.study import load_study
from vaebench.schedules import burda2016_stages, lr_scale, stage_index, total_passes
from vaebench.training import TrainConfig


def test_burda_schedule_has_the_papers_rates_and_pass_counts():
    stages = burda2016_stages()
    assert [passes for passes, _ in stages] == [1, 3, 9, 27, 81, 243, 729, 2187]
    assert total_passes(stages) == 3280
    rates = [1e-3 * scale for _, scale in stages]
    assert rates == pytest.approx([1e-3, 7.2e-4, 5.2e-4, 3.7e-4, 2.7e-4, 1.9e-4, 1.4e-4, 1e-4], rel=1e-12)


def test_stage_boundaries_fall_after_1_4_13_passes():
    stages = burda2016_stages()
    assert [stage_index(stages, e) for e in (1, 2, 4, 5, 13, 14, 1093, 1094, 3280, 4000)] == \
        [0, 1, 1, 2, 2, 3, 6, 7, 7, 7]
    assert lr_scale(stages, 4) == pytest.approx(0.72) and lr_scale((), 4) == 1.0


def test_train_config_budget_defaults_to_the_schedules_passes():
    assert TrainConfig(lr_stages=burda2016_stages()).epochs == 3280
    assert TrainConfig().epochs == 10
    assert TrainConfig(lr_stages=((2, 1.0),), epochs=1).epochs == 1
    with pytest.raises(ConfigError, match="lr_stages"):
        TrainConfig(lr_stages=((0, 1.0),))


def test_burda2016_preset_runs_the_papers_protocol():
    study = load_study("burda2016")
    assert [s.label for s in study.methods] == ["vae", "iwae-k5", "iwae-k50"]
    expected = burda2016_stages()
    assert [p for p, _ in study.train.lr_stages] == [p for p, _ in expected]
    assert [s for _, s in study.train.lr_stages] == pytest.approx([s for _, s in expected], rel=1e-12)
    assert study.train.epochs == 3280 and study.train.batch_size == 20 and not study.train.shuffle
    assert study.data.valid_from_train == 400 and study.data.test_subset is None
    assert study.architecture.hidden == (200, 200) and study.architecture.activation == "tanh"
    assert study.eval.full_test_is_samples == 5000 and study.latent_dims == (50,)
    assert study.published.values == {"vae": -86.76, "iwae-k5": -85.54, "iwae-k50": -84.78}
    configs = {run.label: run.method_config for run in study.cells()}
    assert configs["vae"]["analytic_kl"] is False
    assert [configs[label].get("k") for label in configs] == [None, 5, 50]
    assert all(c["optimizer"] == "burda-adam" and c["betas"] == [0.99, 0.999] for c in configs.values())
