"""Staged learning-rate schedules: a list of (passes, scale) stages, run in order.

In stage j the optimizers' learning rates are their configured values times ``scale_j``,
for ``passes_j`` passes (epochs) over the training set. Stages change only at epoch
boundaries, so a checkpoint (written at the end of an epoch) resumes mid-stage exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

Stages = Sequence[tuple[int, float]]


def burda2016_stages(n_stages: int = 8) -> tuple[tuple[int, float], ...]:
    """Burda, Grosse & Salakhutdinov's (2016) schedule relative to their base rate 1e-3.

    Stage i = 1 … n runs 3^(i−1) passes at 1e-4 · round(10^(1 − (i−1)/7), 1), i.e.
    1e-3, 7.2e-4, 5.2e-4, 3.7e-4, 2.7e-4, 1.9e-4, 1.4e-4, 1e-4 for 1, 3, …, 2187 passes
    (3,280 in all); the scales returned are those rates divided by 1e-3.
    """
    return tuple((3 ** (i - 1), round(10.0 ** (1 - (i - 1) / 7), 1) / 10) for i in range(1, n_stages + 1))


def total_passes(stages: Stages) -> int:
    """Passes over the training set that all stages take together."""
    return sum(passes for passes, _ in stages)


def stage_index(stages: Stages, epoch: int) -> int:
    """The stage (0-based) that runs epoch ``epoch`` (1-based); epochs past the end stay in the last."""
    end = 0
    for index, (passes, _) in enumerate(stages):
        end += passes
        if epoch <= end:
            return index
    return len(stages) - 1


def lr_scale(stages: Stages, epoch: int) -> float:
    """The learning-rate scale of epoch ``epoch`` (1-based); 1 without stages."""
    return stages[stage_index(stages, epoch)][1] if stages else 1.0
