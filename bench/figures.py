"""Figures: of a study, drawn from its run records alone, and of trained models (toy posteriors)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

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


def _settings(frame: pd.DataFrame) -> pd.Series:
    """One facet name per data set and latent size: ``mnist, z=32``."""
    return frame["dataset"].astype(str) + ", z=" + frame["latent_dim"].astype(str)


def log_likelihood_plot(frame: pd.DataFrame, path: Path) -> Path | None:
    """Test log-likelihood per method, mean ± standard error over seeds, one colour per method and
    one panel per data set and latent size: exact (quadrature) where present, else AIS, else
    importance sampling."""
    labels = {"exact_log_likelihood": "log p(x), exact", "log_likelihood_ais": "log p(x), AIS",
              "log_likelihood_is": "log p(x), importance sampling"}
    metric = next((m for m in labels if m in frame and frame[m].notna().any()), None)
    if metric is None:
        return None
    frame = frame.assign(setting=_settings(frame))
    order = list(dict.fromkeys(frame["method"]))  # the frame's (the study's) order
    palette = dict(zip(order, sns.color_palette("tab10" if len(order) <= 10 else "husl", len(order))))
    grid = sns.catplot(data=frame, x="method", y=metric, hue="method", col="setting", kind="point",
                       order=order, hue_order=order, palette=palette, errorbar="se", capsize=0.25,
                       err_kws={"linewidth": 1.5}, markersize=7, linestyle="none", legend=False,
                       sharey=False, height=3.5, aspect=1.3, col_wrap=min(3, frame["setting"].nunique()))
    seeds = frame.groupby(["setting", "method"])["seed"].nunique()
    grid.set_axis_labels("", f"{labels[metric]} (nats, higher is better)")
    grid.set_titles("{col_name}")
    for ax in grid.axes.flat:
        ax.tick_params(axis="x", rotation=30)
        ax.grid(axis="y", alpha=0.3)
    low, high = seeds.min(), seeds.max()
    caption = ("one seed: no error bars" if high == 1 else
               f"mean ± standard error over {low if low == high else f'{low} to {high}'} seeds")
    grid.figure.suptitle(caption, y=1.02, fontsize=9)
    return _save(grid.figure, path)


MAX_MARKED_EPOCHS = 50
LOG_EPOCHS_FROM = 1000
#: history keys of a validation objective: ``valid_<name>`` (``valid_elbo``, ``valid_iwae_bound``, ...)
VALID_PREFIX = "valid_"


def _objective(key: str, record: dict[str, Any]) -> str:
    """The name of the validation objective logged under ``key``, as a legend says it: "" for an
    ELBO (the usual case, the method's name alone), else the objective's name. Records written
    before objectives had their own names log every method's as ``valid_elbo``: for a method
    without an ``elbo`` metric (no posterior density) that number was its own estimate, no bound."""
    name = key[len(VALID_PREFIX):]
    if name == "elbo":
        return "" if "elbo" in record.get("metrics", {}) else "own estimate, not a bound"
    return name.replace("_", " ")


def training_curves(records: list[dict[str, Any]], path: Path, order: list[str] | None = None) -> Path | None:
    """The validation objective per epoch for each method (mean and 95% CI over seeds), each
    ``valid_<name>`` of the records' history labelled by its name. Up to ``MAX_MARKED_EPOCHS``
    evaluated epochs are each marked, so a run of one epoch is a point rather than an invisible
    line; from ``LOG_EPOCHS_FROM`` epochs on, the epoch axis is logarithmic. ``order``: the
    methods' order (the study's)."""

    def label(r: dict[str, Any], key: str) -> str:
        objective = _objective(key, r)
        return r["config"]["label"] + (f" ({objective})" if objective else "")

    rows = [{"method": label(r, key), "dataset": r["config"]["dataset"], "objective": key,
             "latent_dim": r["config"]["latent_dim"], "seed": r["config"]["seed"],
             "epoch": h["epoch"], "value": value}
            for r in records if r.get("status") == "ok" for h in r.get("history", [])
            for key, value in h.items() if key.startswith(VALID_PREFIX) and isinstance(value, (int, float))]
    if not rows:
        return None
    frame = pd.DataFrame(rows)
    frame["setting"] = _settings(frame)
    epochs = sorted(frame["epoch"].unique())
    rank = {m: i for i, m in enumerate(order or [])}
    hue_order = sorted(frame["method"].unique(), key=lambda m: (rank.get(m.split(" (")[0], len(rank)), m))
    # thousands of markers would merge into a smear: mark epochs only where they can be told apart
    marks = {"marker": "o", "markersize": 5} if len(epochs) <= MAX_MARKED_EPOCHS else {}
    grid = sns.relplot(data=frame, x="epoch", y="value", hue="method", hue_order=hue_order, col="setting",
                       kind="line", **marks, errorbar=("ci", 95), seed=0, facet_kws={"sharey": False},
                       err_style="band" if len(epochs) > 1 else "bars", height=3.2, aspect=1.3)
    # a long run (burda2016: stages of 1, 3, 9, ... 2,187 passes) shows its early epochs on a log axis
    logarithmic = epochs[0] >= 1 and epochs[-1] >= LOG_EPOCHS_FROM
    objectives = sorted(frame["objective"].unique())
    what = ("validation ELBO" if objectives == [f"{VALID_PREFIX}elbo"] else
            f"validation {objectives[0][len(VALID_PREFIX):].replace('_', ' ')}" if len(objectives) == 1 else
            "validation objective")
    grid.set_axis_labels("epoch (log scale)" if logarithmic else "epoch", f"{what} (nats)")
    grid.set_titles("{col_name}")
    for (setting, ax) in zip(grid.col_names or [None], grid.axes.flat):
        if logarithmic:
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
        else:
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins=6, integer=True))
            ax.xaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.0f}"))
        if len(epochs) == 1:  # else matplotlib spans ±5% of one epoch, with fractional ticks
            ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
        values = frame["value"] if setting is None else frame.loc[frame["setting"] == setting, "value"]
        _clip_far_low(ax, values.to_numpy(dtype=float))
    return _save(grid.figure, path)


def _clip_far_low(ax: matplotlib.axes.Axes, values: np.ndarray) -> None:
    """Keep one diverged epoch (an ELBO of −10⁴ among values near −100) from flattening every
    curve: values more than ten interquartile ranges below the first quartile fall below the
    axis, which says how many and how low. (A first epoch far below the rest, as usual, stays.)"""
    finite = values[np.isfinite(values)]
    if len(finite) < 4:
        return
    q1, q3 = np.percentile(finite, [25, 75])
    fence = q1 - 10 * max(q3 - q1, 1e-9)
    below = finite[finite < fence]
    if len(below) == 0:
        return
    bottom = finite[finite >= fence].min()
    top = finite.max()
    ax.set_ylim(bottom - 0.05 * (top - bottom), top + 0.05 * (top - bottom))
    ax.text(0.02, 0.02, f"{len(below)} below the axis (lowest {below.min():,.0f})", transform=ax.transAxes,
            fontsize=8, color="0.3", va="bottom")


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
    """Model samples, and test images over their reconstructions, one labelled row per method
    (first seed): the method and setting on the left, which row is data and which is
    reconstruction on the right."""
    chosen: dict[tuple, dict[str, Any]] = {}
    for r in sorted(records, key=lambda r: r["config"]["seed"]):
        key = (r["config"]["dataset"], r["config"]["latent_dim"], r["config"]["label"])
        if r.get("status") == "ok" and r.get("images") and key not in chosen:
            chosen[key] = r
    if not chosen:
        return []
    keys = sorted(chosen)
    paths = []
    for path, rows, draw in (
            (samples_path, ("samples",), lambda im: _tile(decode(im["samples"])[:16], 16)),
            (reconstructions_path, ("data", "reconstruction"), lambda im: np.vstack([
                _tile(decode(im["originals"]), 8), _tile(decode(im["reconstructions"]), 8)]))):
        fig, axes = plt.subplots(len(keys), 1, figsize=(10, 0.3 + 1.1 * len(keys) * len(rows)), squeeze=False)
        for ax, key in zip(axes[:, 0], keys):
            ax.imshow(draw(chosen[key]["images"]), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
            ax.set_axis_off()
            ax.text(-0.02, 0.5, f"{key[2]}\n{key[0]}, z={key[1]}", transform=ax.transAxes, ha="right",
                    va="center", fontsize=10)
            for i, row in enumerate(rows):
                ax.text(1.02, 1 - (i + 0.5) / len(rows), row, transform=ax.transAxes, ha="left", va="center",
                        fontsize=9, color="dimgrey")
        paths.append(_save(fig, path))
    return paths


#: inputs whose posteriors one figure shows: beyond ten, colours repeat and the cloud is unreadable
MAX_POSTERIOR_POINTS = 10


def plot_toy_posteriors(method: Method, points: torch.Tensor, path: Path, *, samples: int = 1000,
                        limit: float = 3.5, title: str | None = None) -> Path:
    """Scatter ``samples`` draws of q(z|x) for each of the first :data:`MAX_POSTERIOR_POINTS` rows x
    of ``points``, one colour per point, over the prior's typical region; saved as a PNG at ``path``."""
    if method.latent_dim != 2:
        raise ValueError(f"posterior figures need a 2-D latent space, got latent_dim={method.latent_dim}")
    shown = points[:MAX_POSTERIOR_POINTS]
    with torch.no_grad():
        z = method.posterior(shown, samples).z.cpu()  # (samples, points, 2)
    colours = sns.color_palette("tab10", len(shown))
    fig, ax = plt.subplots(figsize=(4.8, 4), dpi=120)
    for i, colour in enumerate(colours):
        ax.scatter(z[:, i, 0], z[:, i, 1], s=2, alpha=0.4, color=colour, edgecolors="none", label=f"x{i + 1}")
    ax.add_patch(plt.Circle((0, 0), 2.0, fill=False, ls="--", lw=0.8, color="grey"))  # 2σ of the prior
    heading = title or method.name
    if len(points) > len(shown):
        heading += f" (first {len(shown)} of {len(points)} test points)"
    ax.set(xlim=(-limit, limit), ylim=(-limit, limit), aspect="equal", xlabel="z₁", ylabel="z₂")
    ax.set_title(heading, fontsize=9)
    legend = ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7, markerscale=4, frameon=False,
                       title="x", title_fontsize=7)
    for handle in legend.legend_handles:
        handle.set_alpha(1)
    return _save(fig, Path(path))
