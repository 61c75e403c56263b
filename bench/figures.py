"""Figures: of a study, drawn from its run records alone, and of trained models (toy posteriors)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
import torch  # noqa: E402

from vaebench.methods import Method  # noqa: E402

from .images import decode  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def log_likelihood_plot(frame: pd.DataFrame, path: Path) -> Path | None:
    """Test log-likelihood per method, 95% CI over seeds: exact (quadrature) where present, else AIS,
    else importance sampling."""
    labels = {"exact_log_likelihood": "log p(x), exact", "log_likelihood_ais": "log p(x), AIS",
              "log_likelihood_is": "log p(x), importance sampling"}
    metric = next((m for m in labels if m in frame and frame[m].notna().any()), None)
    if metric is None:
        return None
    label = labels[metric]
    # seaborn divides the dodge among hue levels - 1: with one latent size there is nothing to dodge
    dodge = 0.3 if frame["latent_dim"].nunique() > 1 else False
    grid = sns.catplot(data=frame, x="method", y=metric, hue="latent_dim", col="dataset", kind="point",
                       errorbar=("ci", 95), seed=0, dodge=dodge, linestyle="none", sharey=False,
                       height=3.5, aspect=1.4)
    grid.set_axis_labels("", f"{label} (nats, higher is better)")
    for ax in grid.axes.flat:
        ax.tick_params(axis="x", rotation=30)
    return _save(grid.figure, path)


def training_curves(records: list[dict[str, Any]], path: Path) -> Path | None:
    """Validation ELBO per epoch for each method (mean and 95% CI over seeds)."""
    rows = [{"method": r["config"]["label"], "dataset": r["config"]["dataset"],
             "latent_dim": r["config"]["latent_dim"], "seed": r["config"]["seed"],
             "epoch": h["epoch"], "valid_elbo": h["valid_elbo"]}
            for r in records if r.get("status") == "ok" for h in r.get("history", []) if "valid_elbo" in h]
    if not rows:
        return None
    frame = pd.DataFrame(rows)
    frame["setting"] = frame["dataset"] + ", z=" + frame["latent_dim"].astype(str)
    grid = sns.relplot(data=frame, x="epoch", y="valid_elbo", hue="method", col="setting", kind="line",
                       errorbar=("ci", 95), seed=0, facet_kws={"sharey": False}, height=3.2, aspect=1.3)
    grid.set_axis_labels("epoch", "validation ELBO (nats)")
    return _save(grid.figure, path)


def _tile(images: np.ndarray, columns: int) -> np.ndarray:
    """(N, C, H, W) → one (rows·H, columns·W) mosaic of the first channel."""
    n, _, h, w = images.shape
    rows = -(-n // columns)
    canvas = np.ones((rows * h, columns * w), dtype=np.float32)
    for i, image in enumerate(images[:, 0]):
        r, c = divmod(i, columns)
        canvas[r * h:(r + 1) * h, c * w:(c + 1) * w] = image
    return canvas


def image_grids(records: list[dict[str, Any]], samples_path: Path, reconstructions_path: Path
                ) -> list[Path]:
    """Model samples, and test images over their reconstructions, one row per method (first seed)."""
    chosen: dict[tuple, dict[str, Any]] = {}
    for r in sorted(records, key=lambda r: r["config"]["seed"]):
        key = (r["config"]["dataset"], r["config"]["latent_dim"], r["config"]["label"])
        if r.get("status") == "ok" and r.get("images") and key not in chosen:
            chosen[key] = r
    if not chosen:
        return []
    keys = sorted(chosen)
    paths = []
    for path, draw in ((samples_path, lambda im: _tile(decode(im["samples"])[:16], 16)),
                       (reconstructions_path, lambda im: np.vstack([
                           _tile(decode(im["originals"]), 8), _tile(decode(im["reconstructions"]), 8)]))):
        fig, axes = plt.subplots(len(keys), 1, figsize=(10, 1.0 + 1.1 * len(keys) * (1 if path is samples_path
                                                                                       else 2)), squeeze=False)
        for ax, key in zip(axes[:, 0], keys):
            ax.imshow(draw(chosen[key]["images"]), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
            ax.set_axis_off()
            ax.set_title(f"{key[2]} ({key[0]}, z={key[1]})", fontsize=9, loc="left")
        paths.append(_save(fig, path))
    return paths


def plot_toy_posteriors(method: Method, points: torch.Tensor, path: Path, *, samples: int = 1000,
                        limit: float = 3.5, title: str | None = None) -> Path:
    """Scatter ``samples`` draws of q(z|x) for each row x of ``points``, one colour per point,
    over the prior's typical region; saved as a PNG at ``path``."""
    if method.latent_dim != 2:
        raise ValueError(f"posterior figures need a 2-D latent space, got latent_dim={method.latent_dim}")
    with torch.no_grad():
        z = method.sample_posterior(points, samples).cpu()  # (samples, points, 2)
    colours = sns.color_palette("tab10", len(points))
    fig, ax = plt.subplots(figsize=(4, 4), dpi=120)
    for i, colour in enumerate(colours):
        ax.scatter(z[:, i, 0], z[:, i, 1], s=2, alpha=0.4, color=colour, edgecolors="none", label=f"x{i + 1}")
    ax.add_patch(plt.Circle((0, 0), 2.0, fill=False, ls="--", lw=0.8, color="grey"))  # 2σ of the prior
    ax.set(xlim=(-limit, limit), ylim=(-limit, limit), aspect="equal", xlabel="z₁", ylabel="z₂",
           title=title or method.name)
    ax.legend(loc="upper right", fontsize=7, markerscale=4, frameon=False)
    fig.tight_layout()
    return _save(fig, Path(path))
