"""Figures of a posterior study, from its records and the draws beside them: contours of each
target per method (like the AVB paper's Figure 5 and the authors' notebook) and training curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy import stats  # noqa: E402

from .reference import grid_reference  # noqa: E402
from .targets import Target  # noqa: E402

#: KDE and grid resolution of a panel
_RESOLUTION = 120


def stamp(records: list[dict[str, Any]]) -> str:
    """What produced the figure: the code's commit, the machine and the date, from the records."""
    provenance = [r.get("provenance") or {} for r in records]
    commits = sorted({(p.get("environment") or {}).get("commit") or "?" for p in provenance})
    dirty = any((p.get("environment") or {}).get("dirty") for p in provenance)
    machines = sorted({f"{p.get('device', '?')} ({(p.get('environment') or {}).get('cores', '?')}-core CPU, "
                       f"{p.get('threads', '?')} thread)" for p in provenance})
    dates = sorted({str(p.get("finished", "?"))[:10] for p in provenance})
    return (f"commit {', '.join(c[:7] for c in commits)}{' (with local changes)' if dirty else ''}; "
            f"{'; '.join(machines)}; {' to '.join(dict.fromkeys([dates[0], dates[-1]]))}")


def _box(reference: np.ndarray, pair: tuple[int, int]) -> tuple[float, float, float, float]:
    """The notebook's view: mean ± 4 standard deviations of the reference on each axis."""
    a, b = reference[:, pair[0]], reference[:, pair[1]]
    return a.mean() - 4 * a.std(), a.mean() + 4 * a.std(), b.mean() - 4 * b.std(), b.mean() + 4 * b.std()


def _kde(draws: np.ndarray, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    kernel = stats.gaussian_kde(draws.T)
    return kernel(np.vstack([xx.ravel(), yy.ravel()])).reshape(xx.shape)


def contour_figure(target: Target, reference: np.ndarray, panels: list[tuple[str, np.ndarray]], path: Path,
                   caption: str) -> Path:
    """One panel per method (filled contours of a KDE of its draws, the target's pair of
    coordinates), after a panel of the reference itself; the reference's contour lines on every
    panel. A 2-D target's reference is its exact density on the grid, else a KDE of its draws."""
    pair = target.pair
    x0, x1, y0, y1 = _box(reference, pair)
    xx, yy = np.meshgrid(np.linspace(x0, x1, _RESOLUTION), np.linspace(y0, y1, _RESOLUTION), indexing="ij")
    if target.box is not None:
        grid = torch.from_numpy(np.stack([xx.ravel(), yy.ravel()], 1))
        log_p = target.log_density(grid).numpy() - grid_reference(target).log_normaliser
        reference_density, label = np.exp(log_p).reshape(xx.shape), "exact (grid)"
    else:
        reference_density, label = _kde(reference[:, list(pair)], xx, yy), "NUTS"
    columns = 1 + len(panels)
    fig, axes = plt.subplots(1, columns, figsize=(2.8 * columns, 3.0), sharex=True, sharey=True, squeeze=False)
    levels = np.linspace(0, reference_density.max(), 8)[1:]
    for ax, (name, density) in zip(axes[0], [(label, reference_density)]
                                   + [(n, _kde(d[:, list(pair)], xx, yy)) for n, d in panels]):
        ax.contourf(xx, yy, density, levels=8, cmap="Blues")
        ax.contour(xx, yy, reference_density, levels=levels, colors="k", linewidths=0.5, alpha=0.6)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(target.parameters[pair[0]])
    axes[0][0].set_ylabel(target.parameters[pair[1]])
    fig.suptitle(f"{target.name}: filled, each method's q (KDE of its draws); lines, the reference", fontsize=10,
                 y=1.06)
    fig.text(0.5, -0.1, caption, ha="center", fontsize=7)
    return _save(fig, path)


def curves_figure(target: Target, records: list[dict[str, Any]], methods: list[str], path: Path, caption: str) -> Path:
    """Each method's training loss against steps, every seed: E_q[log q − log p] for the methods with a
    density (a negative ELBO estimate), and for AVB its adversary's estimate of it (no bound)."""
    methods = [m for m in methods if any(r["config"]["label"] == m for r in records)]
    fig, axes = plt.subplots(1, len(methods), figsize=(3.0 * len(methods), 2.8), squeeze=False)
    for ax, method in zip(axes[0], methods):
        for r in records:
            if r["config"]["label"] == method:
                ax.plot(r["history"]["step"], r["history"]["loss"], linewidth=0.8, label=f"seed {r['config']['seed']}")
        ax.set_title(method, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        low, high = np.percentile(np.concatenate([r["history"]["loss"] for r in records
                                                  if r["config"]["label"] == method]), [2, 98])
        ax.set_ylim(low - 0.1 * (high - low + 1e-9), high + 0.1 * (high - low + 1e-9))
    axes[0][0].set_ylabel("loss")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{target.name}: training loss, E_q[log q − log p] (AVB, AVB-AC: the adversary's "
                 "estimate of log q, not a bound)", fontsize=9, y=1.04)
    fig.text(0.5, -0.12, caption, ha="center", fontsize=7)
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
