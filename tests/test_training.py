"""The training loop; the tests given the ``device`` fixture run on ``pytest --device``'s device."""

import dataclasses
import json
import math

import pytest
import torch

from vaebench.backbones import Architecture
from vaebench.checkpoint import load_checkpoint, save_checkpoint
from vaebench.datasets import DataSplits
from vaebench.errors import TrainingDiverged
from vaebench.methods import METHODS, create_method
from vaebench.training import TrainConfig, train


def _on(data: DataSplits, device: torch.device) -> DataSplits:
    """``data`` with its splits on ``device``, as the runner hands them to train()."""
    return DataSplits(data.name, data.train.to(device), data.valid.to(device), data.test.to(device),
                      data.image_shape, data.binary)


def _vae(data, seed=0, device="cpu"):
    torch.manual_seed(seed)
    return create_method("vae", {}, data_shape=data.image_shape, latent_dim=4, architecture=None).to(device)


def test_training_records_history_and_improves_validation_elbo(mnist_small, device):
    mnist_small = _on(mnist_small, device)
    model = _vae(mnist_small, device=device)
    result = train(model, mnist_small, TrainConfig(epochs=3, batch_size=50), seed=0,
                   dynamic_binarization=False, progress=False)
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert result.steps == 3 * 20
    valid = [h["valid_elbo"] for h in result.history]
    assert valid[-1] > valid[0]


def test_step_budget_stops_mid_epoch(mnist_small, device):
    mnist_small = _on(mnist_small, device)
    result = train(_vae(mnist_small, device=device), mnist_small, TrainConfig(epochs=None, steps=30, batch_size=50),
                   seed=0, dynamic_binarization=False, progress=False)
    assert result.steps == 30 and len(result.history) == 2


def test_checkpoint_round_trip_and_resume_matches_an_uninterrupted_run(mnist_small, tmp_path, device):
    mnist_small = _on(mnist_small, device)
    config = TrainConfig(epochs=3, batch_size=100)
    straight = _vae(mnist_small, device=device)
    torch.manual_seed(7)
    train(straight, mnist_small, config, seed=3, dynamic_binarization=True, progress=False)

    # the same run, stopped after 2 epochs and resumed from its checkpoint in a fresh model
    first = _vae(mnist_small, device=device)
    torch.manual_seed(7)
    train(first, mnist_small, TrainConfig(epochs=2, batch_size=100), seed=3, dynamic_binarization=True,
          checkpoint_dir=tmp_path, progress=False)
    state = load_checkpoint(tmp_path)  # weights_only=True
    assert state["epoch"] == 2 and set(state["optimizers"]) == {"model"}
    resumed = _vae(mnist_small, seed=123, device=device)
    result = train(resumed, mnist_small, config, seed=3, dynamic_binarization=True, checkpoint_dir=tmp_path,
                   progress=False)
    assert result.resumed_from_epoch == 2 and len(result.history) == 3
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_a_resumed_run_names_every_process_that_trained_it(mnist_500, tmp_path):
    def run(epochs, who):
        return train(_vae(mnist_500), mnist_500, TrainConfig(epochs=epochs, batch_size=100, valid_every=0), seed=0,
                     dynamic_binarization=False, checkpoint_dir=tmp_path, progress=False, provenance=who)

    assert run(1, {"commit": "a"}).segments == [{"from_epoch": 0, "to_epoch": 1, "commit": "a"}]
    result = run(3, {"commit": "b", "device": "GPU"})
    first, second = {"from_epoch": 0, "to_epoch": 1, "commit": "a"}, {"from_epoch": 1, "to_epoch": 3, "commit": "b",
                                                                       "device": "GPU"}
    assert result.segments == [first, second] == load_checkpoint(tmp_path)["segments"]
    # a finished run evaluated again trains nothing and adds nobody
    assert run(3, {"commit": "c"}).segments == [first, second]


def test_a_checkpoint_from_before_segments_says_its_epochs_are_unrecorded(mnist_500, tmp_path):
    config = TrainConfig(epochs=1, batch_size=100, valid_every=0)
    train(_vae(mnist_500), mnist_500, config, seed=0, dynamic_binarization=False, checkpoint_dir=tmp_path,
          progress=False)
    state = load_checkpoint(tmp_path)
    del state["segments"]
    save_checkpoint(tmp_path, state)
    result = train(_vae(mnist_500), mnist_500, TrainConfig(epochs=2, batch_size=100, valid_every=0), seed=0,
                   dynamic_binarization=False, checkpoint_dir=tmp_path, progress=False, provenance={"commit": "b"})
    assert result.segments == [{"from_epoch": 0, "to_epoch": 1, "recorded": False},
                               {"from_epoch": 1, "to_epoch": 2, "commit": "b"}]


def test_checkpoint_loads_into_a_new_model_with_identical_outputs(mnist_small, tmp_path):
    model = _vae(mnist_small)
    train(model, mnist_small, TrainConfig(epochs=1, batch_size=100), seed=0, dynamic_binarization=False,
          checkpoint_dir=tmp_path, progress=False)
    clone = _vae(mnist_small, seed=99)
    clone.load_state_dict(load_checkpoint(tmp_path)["model"])
    z = torch.randn(5, 4)
    torch.testing.assert_close(model.decoder.logits(z), clone.decoder.logits(z))


def test_divergence_is_detected(mnist_small, device):
    mnist_small = _on(mnist_small, device)
    model = _vae(mnist_small, device=device)
    with torch.no_grad():
        model.decoder.net[0].weight.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="diverged"):
        train(model, mnist_small, TrainConfig(epochs=1, batch_size=100), seed=0,
              dynamic_binarization=False, progress=False)


def _burda_vae(data, seed=0):
    torch.manual_seed(seed)
    return create_method("vae", {"optimizer": "burda-adam", "betas": [0.99, 0.999], "analytic_kl": False},
                         data_shape=data.image_shape, latent_dim=4,
                         architecture=Architecture(hidden=(20,), activation="tanh", init="glorot",
                                                   output_bias="mean-logit"))


def test_staged_schedule_sets_the_rates_per_epoch_and_resumes_mid_stage_bit_identically(mnist_small, tmp_path):
    stages = ((1, 1.0), (3, 0.5))
    config = TrainConfig(batch_size=100, lr_stages=stages, shuffle=False, valid_every=2)
    assert config.epochs == 4
    straight = _burda_vae(mnist_small)
    torch.manual_seed(7)
    full = train(straight, mnist_small, config, seed=3, dynamic_binarization=True, progress=False)
    assert [h["lr_scale"] for h in full.history] == [1.0, 0.5, 0.5, 0.5]
    assert straight.optimizers["model"].param_groups[0]["lr"] == 0.5e-3

    # stopped after epoch 2, in the middle of the second stage, and resumed in a fresh model
    first = _burda_vae(mnist_small)
    torch.manual_seed(7)
    train(first, mnist_small, TrainConfig(batch_size=100, lr_stages=stages, shuffle=False, valid_every=2, epochs=2),
          seed=3, dynamic_binarization=True, checkpoint_dir=tmp_path, progress=False)
    resumed = _burda_vae(mnist_small, seed=123)
    result = train(resumed, mnist_small, config, seed=3, dynamic_binarization=True, checkpoint_dir=tmp_path,
                   progress=False)
    assert result.resumed_from_epoch == 2
    assert resumed.optimizers["model"].param_groups[0]["step"] == 4 * 10
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in result.history]
    assert strip == [{k: v for k, v in h.items() if k != "seconds"} for h in full.history]


def test_output_bias_starts_at_the_logit_of_the_mean_training_image(mnist_small):
    model = _burda_vae(mnist_small)
    # no steps: training with a zero budget is not allowed, so call the hook train() runs first
    model.init_from_data(mnist_small.train)
    mean = mnist_small.train.double().mean(0).clamp(0.001, 0.999)
    expected = torch.log(mean / (1 - mean)).float()
    assert torch.equal(model.decoder.net[-1].bias.detach(), expected)
    # all-black pixels hit the clip: logit(0.001) = −log(999)
    assert (mnist_small.train[:, 0] == 0).all()
    assert model.decoder.net[-1].bias[0].item() == pytest.approx(-math.log(999), rel=1e-6)


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_trains_a_few_steps_on_the_device(name, mnist_small, device):
    """A smoke test per method: 6 steps through the loop on the device, finite losses for every
    optimizer, parameters moved and still on the device."""
    data = _on(mnist_small, device)
    torch.manual_seed(0)
    method = create_method(name, {}, data_shape=data.image_shape, latent_dim=4,
                           architecture=Architecture(hidden=(50,))).to(device)
    before = [p.detach().clone() for p in method.parameters()]
    result = train(method, data, TrainConfig(epochs=None, steps=6, batch_size=50, valid_every=0), seed=0,
                   dynamic_binarization=True, progress=False)
    assert result.steps == 6
    losses = {k: v for k, v in result.history[-1].items() if k.startswith("train_")}
    assert {f"train_{group}" for group in method.optimizers} <= set(losses)
    assert all(math.isfinite(v) for v in losses.values()), losses
    assert all(p.device.type == device.type for p in method.parameters())
    assert any(not torch.equal(a, p) for a, p in zip(before, method.parameters()))


#: what each method's validation objective is, by the name it is logged under
OBJECTIVES = {"vae": "elbo", "iaf": "elbo", "iwae": "iwae_bound", "avb": "adversary_elbo_estimate",
              "avb-ac": "adversary_elbo_estimate", "aae": "recon_log_likelihood"}


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_logs_its_validation_objective_under_its_own_name(name, mnist_small):
    """valid_<objective_name>, and only that: an IWAE bound or an adversary's estimate is never
    logged as valid_elbo."""
    torch.manual_seed(0)
    method = create_method(name, {}, data_shape=mnist_small.image_shape, latent_dim=4,
                           architecture=Architecture(hidden=(50,)))
    if name in OBJECTIVES:
        assert method.objective_name == OBJECTIVES[name]
    result = train(method, mnist_small, TrainConfig(epochs=1, batch_size=100, valid_batch_size=250), seed=0,
                   dynamic_binarization=True, progress=False)
    (record,) = result.history
    assert [k for k in record if k.startswith("valid_")] == [f"valid_{method.objective_name}"]
    assert math.isfinite(record[f"valid_{method.objective_name}"])
    assert ("valid_elbo" in record) == (method.objective_name == "elbo")


def test_a_run_writing_to_a_log_prints_progress_lines_and_a_short_one_none(mnist_small, monkeypatch, capsys):
    import vaebench.training as training

    config = TrainConfig(epochs=3, batch_size=50)
    # pytest's captured output is no terminal, so tqdm draws no bar: as in a background run's log
    train(_vae(mnist_small), mnist_small, config, seed=0, dynamic_binarization=False, description="short")
    assert capsys.readouterr().out == ""  # done within LOG_INTERVAL: the cell's own line suffices
    monkeypatch.setattr(training, "LOG_INTERVAL", 0.0)
    result = train(_vae(mnist_small), mnist_small, config, seed=0, dynamic_binarization=False, description="cell")
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines] == ["cell: epoch 1/3", "cell: epoch 2/3", "cell: epoch 3/3"]
    last = result.history[-1]
    assert f"train_model {last['train_model']:.2f}" in lines[-1] and f"valid_elbo {last['valid_elbo']:.2f}" in lines[-1]
    assert lines[-1].endswith("about 0 s left") and "about" in lines[0]
    train(_vae(mnist_small), mnist_small, config, seed=0, dynamic_binarization=False, progress=False)
    assert capsys.readouterr().out == ""  # --no-progress: silent


def test_progress_line_states_the_time_left():
    from vaebench.training import _progress_line

    line = _progress_line("c", 10, 3280, {"train_model": 93.3254, "valid_elbo": -94.3481, "epoch": 10}, 6.5)
    assert line == "c: epoch 10/3,280, train_model 93.33, valid_elbo -94.35, 6.5 s/epoch, about 5.9 h left"
    assert _progress_line("c", 1, 3, {}, 30.0).endswith("about 1 min left")


def test_early_stopping_counts_epochs_without_a_new_best_as_the_vampprior_authors_code():
    """Their rule (utils/perform_experiment.py): a new best resets the count, any other epoch adds one
    (reset to 0 before the start epoch), and training stops once the count exceeds the patience."""
    from vaebench.training import EarlyStopping

    model = torch.nn.Linear(2, 1)
    values = [-5.0, -4.0, -4.5, -4.5, -3.0, -3.5, float("nan"), -3.0, -3.2, -9.0]
    stopping = EarlyStopping("elbo", patience=2, start=4)
    stops = []
    for epoch, value in enumerate(values, start=1):
        with torch.no_grad():
            model.bias.fill_(epoch)  # the model of each epoch, told apart by its bias
        stops.append(stopping.update(epoch, value, model))
    # epochs 3 and 4 do not improve, but before epoch 4 the count is reset: 3 → 0, 4 → 1; 5 is a
    # new best; 6, 7 (NaN), 8 (a tie is no improvement) count 1, 2, 3 > 2: stop after epoch 8
    assert stops == [False] * 7 + [True, True, True]
    assert stopping.stopped_at == 8 and stopping.best_epoch == 5 and stopping.best == -3.0
    assert stopping.best_model["bias"].item() == 5
    # its state survives a round trip, best model included
    again = EarlyStopping("elbo", patience=2, start=4)
    again.load_state_dict(stopping.state_dict())
    assert again.summary() == stopping.summary()
    assert again.summary() == {"watched": "valid_elbo", "best_epoch": 5, "best_value": -3.0, "patience": 2,
                               "start": 4, "stopped_early": True, "stopped_at_epoch": 8}


def _without_seconds(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def test_early_stopping_keeps_the_best_epochs_model_and_a_resumed_run_stops_where_a_straight_one_does(
        mnist_small, tmp_path):
    data = DataSplits(mnist_small.name, mnist_small.train[:200], mnist_small.valid[:200], mnist_small.test,
                      mnist_small.image_shape)
    config = TrainConfig(epochs=40, batch_size=50, early_stopping_patience=2, early_stopping_start=3,
                         valid_batch_size=200)

    def run(config, folder):
        torch.manual_seed(0)
        model = create_method("vae", {"lr": 1e-2, "kl_warmup_steps": 8}, data_shape=data.image_shape,
                              latent_dim=4)
        torch.manual_seed(7)
        return model, train(model, data, config, seed=3, dynamic_binarization=True, checkpoint_dir=folder,
                            progress=False)

    straight, result = run(config, tmp_path / "straight")
    summary = result.early_stopping
    assert summary["stopped_early"], summary  # overfitting 200 images at this rate ends well before 40 epochs
    stopped = summary["stopped_at_epoch"]
    # it watched the ELBO (weight 1) though the training objective is weighted during the warm-up
    assert summary["watched"] == "valid_elbo" and "valid_beta_elbo" in result.history[0]
    elbos = [h["valid_elbo"] for h in result.history]
    assert len(elbos) == stopped and summary["best_value"] == max(elbos)
    assert elbos.index(max(elbos)) + 1 == summary["best_epoch"] < stopped
    # the model handed back is the best epoch's (the checkpoint's last model is the stopping epoch's)
    state = load_checkpoint(tmp_path / "straight")
    assert state["epoch"] == stopped
    for name, value in straight.state_dict().items():
        assert torch.equal(value, state["early_stopping"]["best_model"][name]), name
    assert any(not torch.equal(v, state["model"][k]) for k, v in straight.state_dict().items())

    # interrupted two epochs before the stop and resumed: the same stop, the same best model
    _, first = run(dataclasses.replace(config, epochs=stopped - 2), tmp_path / "resumed")
    assert not first.early_stopping["stopped_early"]
    resumed, again = run(config, tmp_path / "resumed")
    assert again.resumed_from_epoch == stopped - 2 and again.early_stopping == summary
    assert _without_seconds(again.history) == _without_seconds(result.history)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    # a rerun of a stopped run trains no further and hands back the same best model
    rerun, third = run(config, tmp_path / "straight")
    assert _without_seconds(third.history) == _without_seconds(result.history)
    assert third.early_stopping == summary
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(), rerun.state_dict().values()))


def test_early_stopping_needs_validation_every_epoch():
    from vaebench.errors import ConfigError

    with pytest.raises(ConfigError, match="valid_every = 1"):
        TrainConfig(early_stopping_patience=5, valid_every=2)
    with pytest.raises(ConfigError, match="early_stopping_patience"):
        TrainConfig(early_stopping_patience=-1)
