"""A look at a study's cells mid-training: the record's importance-sampling column on a checkpoint.

``vaebench peek STUDY --out FOLDER`` loads each cell's latest checkpoint (saved atomically by
the training loop, so a running study can be looked at safely) and estimates log p(x) by
importance sampling on the test images, as the record's ``log_likelihood_is_full`` column
(or ``log_likelihood_is`` when the study has no full-test-set estimate) would. It writes
nothing: an unfinished model's number is a progress reading, not a result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import CHECKPOINT, load_checkpoint
from .config import require
from .metrics import importance_sampled_log_likelihood, mean_and_sem
from .runner import CHECKPOINTS, _cached_dataset, build_method
from .study import RunConfig, Study


@dataclass(frozen=True)
class Reading:
    """One cell's log p(x) by importance sampling at its latest checkpoint."""

    cell_id: str
    epoch: int
    epochs: int | None  # the cell's training budget in epochs (None when it is given in steps)
    step: int
    n: int
    is_samples: int
    log_likelihood_is: float
    sem: float  # the standard error of the mean over images
    seconds: float

    @property
    def finished(self) -> bool:
        return self.epochs is not None and self.epoch >= self.epochs

    def line(self) -> str:
        budget = f"epoch {self.epoch:,} of {self.epochs:,}" if self.epochs else f"step {self.step:,}"
        state = "finished" if self.finished else "interim"
        return (f"{self.cell_id}  {budget} ({state}): log p(x) IS-{self.is_samples:,} on the first "
                f"{self.n:,} test images {self.log_likelihood_is:.3f} ± {self.sem:.3f} (one SE over images), "
                f"{self.seconds:.0f} s")


def default_settings(study: Study) -> tuple[int | None, int]:
    """(test images, IS samples) of the study's own importance-sampling column: the full test set
    with ``full_test_is_samples`` when it has one, else ``eval.examples`` with ``is_samples``."""
    if study.eval.full_test_is_samples:
        return None, study.eval.full_test_is_samples
    return study.eval.examples, study.eval.is_samples


def peek_cell(run: RunConfig, results_dir: Path, *, examples: int | None, is_samples: int, batch_size: int,
              device: torch.device, seed: int = 0) -> Reading | None:
    """The reading of ``run``'s latest checkpoint in ``results_dir``, or None if it has none yet.

    ``examples``: the first this many test images (None: all); draws from ``seed``.
    """
    require(is_samples > 0, f"is_samples must be positive, got {is_samples}")
    folder = Path(results_dir) / CHECKPOINTS / run.cell_id
    if not (folder / CHECKPOINT).exists():
        return None
    state = load_checkpoint(folder, map_location=device)
    if state is None:
        return None
    tic = time.perf_counter()
    data = _cached_dataset(run.dataset, run.data)  # the runner's: test images binarised as its evaluation's
    require(examples is None or 0 < examples <= len(data.test),
            f"examples must lie in 1 … {len(data.test):,} (the test images of {run.dataset}), got {examples}")
    method = build_method(run, data).to(device)
    require(method.has_density, f"{run.cell_id}: {run.method} has no density q(z|x) to importance-sample with")
    method.load_state_dict(state["model"])
    method.eval()
    x = data.test[:examples].to(device)
    generator_state = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        with torch.no_grad():
            values = torch.cat([importance_sampled_log_likelihood(method, chunk, is_samples)
                                for chunk in x.split(batch_size)])
    finally:
        torch.set_rng_state(generator_state)
    summary = mean_and_sem({"ll": values})
    history = state.get("history") or [{}]
    return Reading(cell_id=run.cell_id, epoch=int(state["epoch"]), epochs=run.train.epochs,
                   step=int(history[-1].get("step", 0)), n=len(x), is_samples=is_samples,
                   log_likelihood_is=summary["ll"], sem=summary["ll_sem"],
                   seconds=time.perf_counter() - tic)
