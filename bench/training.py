"""The one training loop every method runs through."""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import torch
from tqdm.auto import tqdm

from vaebench.datasets import DataSplits, TrainBatches
from vaebench.methods import Method

from .checkpoint import CHECKPOINT, CORRUPT, load_checkpoint, save_checkpoint
from .compiled_step import compiled_update
from .config import NEW_OPTION, require
from .errors import TrainingDiverged
from .metrics import batched_mean
from .schedules import lr_scale, total_passes


@dataclass(frozen=True)
class TrainConfig:
    """Training budget and loop settings.

    Give the budget as ``epochs`` or as ``steps`` (optimizer steps), not both; with neither,
    it is all the passes of ``lr_stages``, or else 10 epochs.
    ``lr_stages``: a staged learning-rate schedule, ``[[passes, scale], ...]``: the method's
    learning rates times ``scale`` for ``passes`` epochs, stage after stage (the last stage's
    scale holds past its end); empty keeps the rates constant. See :mod:`vaebench.schedules`.
    ``shuffle``: reshuffle the training set every epoch (false: the same order every epoch).
    ``checkpoint_every``: epochs between checkpoints (when the run has a checkpoint folder).
    ``valid_every``: epochs between validation-ELBO evaluations (0 turns them off).
    ``compile``: ``true`` runs each step's losses (forward and backward) through
    ``torch.compile``; ``"step"`` compiles the whole step, the optimizer updates included, into
    one function (methods that keep the standard update, with Adam or BurdaAdam; see
    :mod:`vaebench.compiled_step`). Both draw torch's own random numbers, so a seed draws the
    same noise as without them, and both pay off for long runs of small batches, where
    per-operation overhead dominates, after a compilation of 10 s to a minute.
    Floating-point rounding differs slightly from the eager run.

    ``early_stopping_patience``: stop when the validation value of the method's
    :meth:`~vaebench.methods.Method.stopping_objective` (its bound, unweighted: ``valid_elbo`` for
    the VAE, even during a KL warm-up) has not improved on its best for more than this many
    epochs in a row, and end training with the model of its best epoch (0: off, train the whole
    budget and keep the last model). ``early_stopping_start``: epochs before this one never count
    against the patience (their improvements still count). As the VampPrior authors' code
    (``utils/perform_experiment.py``): patience 50, counted from the end of their 100-epoch warm-up,
    and training stops at the 51st epoch in a row without a new best. Needs ``valid_every = 1``.
    The best model, its epoch and the count travel in the checkpoint, so a resumed run stops
    where an uninterrupted one would; the record names the best epoch.
    """

    epochs: int | None = None
    steps: int | None = None
    batch_size: int = 100
    lr_stages: tuple[tuple[int, float], ...] = ()
    shuffle: bool = True
    checkpoint_every: int = 1
    valid_every: int = 1
    valid_batch_size: int = 1000
    compile: bool | Literal["step"] = False
    early_stopping_patience: int = field(default=0, metadata=NEW_OPTION)
    early_stopping_start: int = field(default=0, metadata=NEW_OPTION)

    def __post_init__(self) -> None:
        require(all(passes > 0 and scale > 0 for passes, scale in self.lr_stages),
                f"lr_stages must be [passes, scale] pairs of positive numbers, got {list(self.lr_stages)}")
        if self.epochs is None and self.steps is None:
            # frozen: the resolved default is part of the config
            object.__setattr__(self, "epochs", total_passes(self.lr_stages) if self.lr_stages else 10)
        require(self.epochs is None or self.steps is None,
                "give the training budget as exactly one of epochs or steps")
        budget = self.epochs if self.epochs is not None else self.steps
        require(budget > 0, f"the training budget must be positive, got {budget}")
        require(self.batch_size > 0, f"batch_size must be positive, got {self.batch_size}")
        require(self.checkpoint_every > 0, f"checkpoint_every must be positive, got {self.checkpoint_every}")
        require(self.valid_every >= 0, f"valid_every must be non-negative, got {self.valid_every}")
        require(self.valid_batch_size > 0, f"valid_batch_size must be positive, got {self.valid_batch_size}")
        require(self.early_stopping_patience >= 0,
                f"early_stopping_patience must be 0 (off) or positive, got {self.early_stopping_patience}")
        require(self.early_stopping_start >= 0,
                f"early_stopping_start must be non-negative, got {self.early_stopping_start}")
        require(not self.early_stopping_patience or self.valid_every == 1,
                f"early stopping validates every epoch: set valid_every = 1 (got {self.valid_every})")


@dataclass
class TrainResult:
    history: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    resumed_from_epoch: int = 0
    #: who trained which epochs, one entry per process that trained (see :func:`train`)
    segments: list[dict[str, Any]] = field(default_factory=list)
    #: what a reader of the record should know, e.g. that a damaged checkpoint was set aside
    notes: list[str] = field(default_factory=list)
    #: with early stopping: the watched value's name, the best epoch and its value, whether and
    #: at which epoch training stopped early (see :class:`EarlyStopping`); None without
    early_stopping: dict[str, Any] | None = None


class EarlyStopping:
    """Early stopping on a validation value, higher being better, with the best model kept.

    As the VampPrior authors' ``experiment_vae``: an epoch whose value beats the best so far
    becomes the best (its model is copied) and resets the count of epochs without improvement;
    any other epoch adds one to the count, except before epoch ``start``, where the count is
    reset; training stops once the count exceeds ``patience``. A NaN never improves.
    """

    def __init__(self, name: str, patience: int, start: int) -> None:
        self.name, self.patience, self.start = name, patience, start
        self.best = -math.inf
        self.best_epoch = 0
        self.bad_epochs = 0
        self.stopped_at: int | None = None
        self.best_model: dict[str, torch.Tensor] | None = None

    def update(self, epoch: int, value: float, method: torch.nn.Module) -> bool:
        """Take epoch ``epoch``'s value; True when training should stop after it."""
        if value > self.best:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            self.best_model = {k: v.detach().clone() for k, v in method.state_dict().items()}
        else:
            self.bad_epochs = 0 if epoch < self.start else self.bad_epochs + 1
        if self.bad_epochs > self.patience and self.stopped_at is None:
            self.stopped_at = epoch
        return self.stopped_at is not None

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs,
                "stopped_at": self.stopped_at, "best_model": self.best_model}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best, self.best_epoch = float(state["best"]), int(state["best_epoch"])
        self.bad_epochs = int(state["bad_epochs"])
        self.stopped_at = None if state["stopped_at"] is None else int(state["stopped_at"])
        self.best_model = state["best_model"]

    def summary(self) -> dict[str, Any]:
        """What the record keeps: the watched value, the best epoch and value, where training stopped."""
        return {"watched": f"valid_{self.name}", "best_epoch": self.best_epoch, "best_value": self.best,
                "patience": self.patience, "start": self.start, "stopped_early": self.stopped_at is not None,
                "stopped_at_epoch": self.stopped_at}


#: seconds between progress lines when no progress bar can be shown (output to a log file)
LOG_INTERVAL = 60.0


def _progress_line(description: str, epoch: int, n_epochs: int, record: dict[str, float],
                   seconds_per_epoch: float) -> str:
    """One line for a log: where training stands, its latest numbers and the time left."""
    left = (n_epochs - epoch) * seconds_per_epoch
    eta = f"{left / 3600:.1f} h" if left >= 3600 else f"{left / 60:.0f} min" if left >= 60 else f"{left:.0f} s"
    numbers = ", ".join(f"{k} {v:.2f}" for k, v in record.items() if k.startswith(("train_", "valid_")))
    return (f"{description}: epoch {epoch:,}/{n_epochs:,}, {numbers}, {seconds_per_epoch:.1f} s/epoch, "
            f"about {eta} left")


def _finite_or_raise(epoch: int, means: dict[str, float]) -> None:
    for name, value in means.items():
        if not math.isfinite(value):
            raise TrainingDiverged(f"training diverged: loss {name!r} was {value} in epoch {epoch}")


def train(method: Method, data: DataSplits, config: TrainConfig, *, seed: int, dynamic_binarization: bool,
          checkpoint_dir: Path | None = None, progress: bool = True, description: str = "train",
          provenance: Mapping[str, Any] | None = None) -> TrainResult:
    """Train ``method`` in place on ``data.train`` (already on the method's device).

    The loop never reads a value back from the device inside an epoch: losses are summed
    on the device and read once per epoch, when the progress bar and history are updated.
    With ``progress`` and no terminal to draw a bar on (a background run writing to a log),
    a line every ``LOG_INTERVAL`` seconds (and, after such a line, at the last epoch) says where
    training stands.
    With ``checkpoint_dir``, the model, optimizers, history and random state are saved
    every ``checkpoint_every`` epochs and an existing checkpoint there is resumed.
    ``provenance`` (code, device, threads, ...) describes this process; the checkpoint keeps one
    entry per process that trained, with the epochs it trained, so that a run resumed across
    sessions names every commit and device it ran on (``result.segments``).
    """
    device = next(method.parameters()).device
    batches = TrainBatches(data.train, config.batch_size, dynamic=dynamic_binarization, seed=seed,
                           shuffle=config.shuffle)
    steps_per_epoch = len(batches)
    total_steps = config.steps if config.steps is not None else config.epochs * steps_per_epoch
    n_epochs = math.ceil(total_steps / steps_per_epoch)
    method.configure_optimizers()
    # the configured rates, which the schedule scales (a checkpoint's groups hold scaled ones)
    base_lrs = {name: [group["lr"] for group in opt.param_groups] for name, opt in method.optimizers.items()}
    result = TrainResult()
    stopping = (EarlyStopping(method.stopping_objective_name, config.early_stopping_patience,
                              config.early_stopping_start) if config.early_stopping_patience else None)

    start_epoch = 0
    existed = bool(checkpoint_dir) and (Path(checkpoint_dir) / CHECKPOINT).exists()
    state = load_checkpoint(checkpoint_dir, map_location=device) if checkpoint_dir else None
    if existed and state is None:
        result.notes.append(f"unreadable checkpoint set aside as {CORRUPT}; trained afresh")
    if state is None:
        method.init_from_data(data.train)
    else:
        method.load_state_dict(state["model"])
        for name, opt in method.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        # a generator's state is a CPU byte tensor whatever its device; map_location moved it
        batches.generator.set_state(state["batch_rng"].cpu())
        torch.set_rng_state(state["torch_rng"].cpu())
        if device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), device)
        start_epoch = result.resumed_from_epoch = int(state["epoch"])
        # a checkpoint from before segments were kept knows only how far it got
        result.segments = list(state.get("segments") or [{"from_epoch": 0, "to_epoch": start_epoch,
                                                           "recorded": False}])
        result.history = list(state["history"])
        result.seconds = float(state["seconds"])
        if stopping is not None and "early_stopping" in state:
            stopping.load_state_dict(state["early_stopping"])
    step = min(start_epoch * steps_per_epoch, total_steps)
    earlier = list(result.segments)
    here = {"from_epoch": start_epoch, **(provenance or {})}

    update = compiled_update(method, config.compile)
    bar = tqdm(total=total_steps, initial=step, desc=description, disable=None if progress else True,
               leave=False, dynamic_ncols=True)
    log_lines = progress and bar.disable  # tqdm draws nothing when stderr is not a terminal
    last_line = time.perf_counter()
    lines = 0  # a short run prints none, a long one its last epoch too
    recent: list[float] = []  # seconds of the last epochs, for the time left
    # a run that stopped early is finished: a rerun evaluates its best model, never trains on
    last_epoch = n_epochs if stopping is None or stopping.stopped_at is None else start_epoch
    try:
        for epoch in range(start_epoch + 1, last_epoch + 1):
            epoch_start = time.perf_counter()
            method.train()
            if config.lr_stages:
                scale = lr_scale(config.lr_stages, epoch)
                for name, opt in method.optimizers.items():
                    for group, lr in zip(opt.param_groups, base_lrs[name]):
                        group["lr"] = lr * scale
            tic = time.perf_counter()
            sums: dict[str, torch.Tensor] = {}
            n_steps = min(steps_per_epoch, total_steps - step)
            for batch in itertools.islice(batches, n_steps):
                losses = update(batch)
                for name, value in losses.items():
                    if name in sums:
                        sums[name].add_(value)
                    else:
                        sums[name] = value.clone()
                bar.update(1)
            step += n_steps
            means = {f"train_{k}": v.item() / n_steps for k, v in sums.items()}  # one sync per epoch
            elapsed = time.perf_counter() - tic
            result.seconds += elapsed
            _finite_or_raise(epoch, means)
            record = {"epoch": epoch, "step": step, "seconds": elapsed, **means}
            if config.lr_stages:
                record["lr_scale"] = lr_scale(config.lr_stages, epoch)
            if config.valid_every and (epoch % config.valid_every == 0 or epoch == n_epochs):
                method.eval()
                # under the objective's own name: an IWAE bound or an adversary's estimate is no ELBO
                record[f"valid_{method.objective_name}"] = batched_mean(method.objective, data.valid,
                                                                        config.valid_batch_size)
                if stopping is not None:
                    key = f"valid_{stopping.name}"
                    if key not in record:  # a weighted objective: its bound, at weight 1
                        record[key] = batched_mean(method.stopping_objective, data.valid, config.valid_batch_size)
                    stopping.update(epoch, record[key], method)
                method.train()
            result.history.append(record)
            result.segments = earlier + [{**here, "to_epoch": epoch}]
            bar.set_postfix({k: f"{v:.2f}" for k, v in record.items() if k.startswith(("train_", "valid_"))})
            stop = stopping is not None and stopping.stopped_at is not None
            if checkpoint_dir and (epoch % config.checkpoint_every == 0 or epoch == n_epochs or stop):
                save_checkpoint(checkpoint_dir, {
                    "model": method.state_dict(),
                    "optimizers": {name: opt.state_dict() for name, opt in method.optimizers.items()},
                    "epoch": epoch,
                    "history": result.history,
                    "seconds": result.seconds,
                    "segments": result.segments,
                    "batch_rng": batches.generator.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    **({"cuda_rng": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {}),
                    **({"early_stopping": stopping.state_dict()} if stopping is not None else {}),
                })
            # the time left counts whole epochs: training, validation and checkpoint
            recent = (recent + [time.perf_counter() - epoch_start])[-20:]
            if log_lines and (time.perf_counter() - last_line >= LOG_INTERVAL or (lines and epoch == n_epochs)):
                print(_progress_line(description, epoch, n_epochs, record, sum(recent) / len(recent)), flush=True)
                last_line = time.perf_counter()
                lines += 1
            if stop:
                if log_lines:
                    print(f"{description}: stopped early after epoch {epoch:,}: no better "
                          f"valid_{stopping.name} than epoch {stopping.best_epoch:,}'s "
                          f"{stopping.best:.2f} for {stopping.bad_epochs} epochs", flush=True)
                break
    finally:
        bar.close()
    if stopping is not None:
        if stopping.best_model is not None:  # the model of the best epoch, not the last
            method.load_state_dict(stopping.best_model)
        result.early_stopping = stopping.summary()
    method.eval()
    result.steps = step
    return result
