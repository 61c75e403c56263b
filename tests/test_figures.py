"""Figures drawn from tiny synthetic records: each says what it should, for one epoch, one seed or many."""

from __future__ import annotations

import matplotlib.colors
import numpy as np
import pytest
import torch

from vaebench import figures
from vaebench.images import encode
from vaebench.methods import create_method
from vaebench.report import records_frame

METHODS = {"vae": -95.0, "avb": -92.0, "iwae-k5": -94.0}


def record(label: str, latent_dim: int, seed: int, epochs: int) -> dict:
    images = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    ll = METHODS[label] + seed
    return {"status": "ok", "cell_id": f"{label}-mnist-z{latent_dim}-s{seed}",
            "config": {"label": label, "dataset": "mnist", "latent_dim": latent_dim, "seed": seed},
            "metrics": {"log_likelihood_ais": ll, "elbo": ll - 5},
            "history": [{"epoch": e + 1, "valid_elbo": ll - 10 / (e + 1)} for e in range(epochs)],
            "images": {"samples": encode(images), "originals": encode(images[:8]),
                       "reconstructions": encode(images[8:])}}


def records(seeds: int = 3, epochs: int = 1, latent_dims: tuple[int, ...] = (8,)) -> list[dict]:
    return [record(m, z, s, epochs) for m in METHODS for z in latent_dims for s in range(seeds)]


@pytest.fixture
def drawn(monkeypatch):
    """The matplotlib figures the functions save, kept open for inspection."""
    kept = []
    save = figures._save

    def keep(fig, path):
        kept.append(fig)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=40)
        return path

    monkeypatch.setattr(figures, "_save", keep)
    yield kept
    monkeypatch.setattr(figures, "_save", save)
    for fig in kept:
        figures.plt.close(fig)


def test_training_curves_of_one_epoch_show_a_marker_per_method(tmp_path, drawn):
    assert figures.training_curves(records(epochs=1), tmp_path / "curves.png").stat().st_size > 1000
    ax = drawn[0].axes[0]
    marked = [line for line in ax.lines if line.get_marker() == "o" and len(line.get_xdata()) == 1]
    assert len(marked) >= len(METHODS)
    assert ax.get_xlim()[0] < 1 < ax.get_xlim()[1]


def test_log_likelihood_has_a_colour_per_method_and_standard_error_bars(tmp_path, drawn):
    frame = records_frame(records(seeds=3, latent_dims=(8, 32)))
    figures.log_likelihood_plot(frame, tmp_path / "ll.png")
    fig = drawn[0]
    assert len(fig.axes) == 2  # one panel per latent size
    ax = fig.axes[0]
    points = [line for line in ax.lines if line.get_marker() == "o"]
    assert len({matplotlib.colors.to_hex(line.get_color()) for line in points}) == len(METHODS)
    # an error bar with caps is one line: cap, nan, bar, nan, cap; seaborn leaves other x positions nan
    bars = [line.get_ydata()[3:5] for line in ax.lines if line.get_marker() in (None, "None", "")
            and not np.isnan(line.get_ydata()).all()]
    assert len(bars) == len(METHODS)
    # seeds 0, 1, 2 give values v, v + 1, v + 2: a standard error of 1/sqrt(3)
    assert all(abs((hi - lo) / 2 - 3 ** -0.5) < 1e-9 for lo, hi in bars), bars
    assert "standard error over 3 seeds" in fig._suptitle.get_text()


def test_reconstruction_rows_are_labelled_with_methods(tmp_path, drawn):
    figures.image_grids(records(seeds=1), tmp_path / "samples.png", tmp_path / "recon.png")
    texts = [t.get_text() for ax in drawn[1].axes for t in ax.texts]
    for label in METHODS:
        assert any(t.startswith(label + "\n") for t in texts)
    assert texts.count("reconstruction") == len(METHODS) and texts.count("data") == len(METHODS)


def test_posterior_figure_of_many_points_has_a_short_legend(tmp_path, drawn):
    method = create_method("vae", {}, data_shape=(4,), latent_dim=2, architecture=None)
    points = torch.bernoulli(torch.full((100, 4), 0.5))
    figures.plot_toy_posteriors(method, points, tmp_path / "post.png", samples=20, title="vae")
    ax = drawn[0].axes[0]
    assert len(ax.get_legend().get_texts()) == figures.MAX_POSTERIOR_POINTS
    assert "first 10 of 100" in ax.get_title()


def test_one_diverged_epoch_falls_below_the_axis_and_is_counted(tmp_path):
    import matplotlib.pyplot as plt

    rs = records(seeds=1, epochs=10)
    rs[1]["history"][4]["valid_elbo"] = -10_550.0  # one epoch of one method blew up
    path = figures.training_curves(rs, tmp_path / "curves.png")
    assert path is not None and path.exists()
    fig, ax = plt.subplots()
    figures._clip_far_low(ax, np.array([h["valid_elbo"] for r in rs for h in r["history"]]))
    bottom, top = ax.get_ylim()
    assert -200 < bottom < -100 and top > -95  # every other value stays in view
    assert [t.get_text() for t in ax.texts] == ["1 below the axis (lowest -10,550)"]
    fig2, ax2 = plt.subplots()  # regular curves: matplotlib's own limits, no note
    figures._clip_far_low(ax2, np.array([h["valid_elbo"] for r in records(seeds=1, epochs=10) for h in r["history"]]))
    assert not ax2.texts
    plt.close("all")


@pytest.mark.parametrize("epochs, marked, scale", [(20, True, "linear"), (1200, False, "log")])
def test_long_runs_have_a_log_epoch_axis_and_no_markers(tmp_path, drawn, epochs, marked, scale):
    figures.training_curves(records(seeds=1, epochs=epochs), tmp_path / "curves.png")
    ax = drawn[0].axes[0]
    curves = [line for line in ax.lines if len(line.get_xdata()) == epochs]
    assert len(curves) == len(METHODS)
    assert all((line.get_marker() == "o") == marked for line in curves)
    assert ax.get_xscale() == scale and ax.get_xlabel().startswith("epoch")


def test_training_curves_label_each_validation_objective_by_its_name(tmp_path, drawn):
    vae = record("vae", 8, 0, epochs=2)  # an ELBO under its own name: the method's name alone
    iwae = record("iwae-k5", 8, 0, epochs=2)
    iwae["history"] = [{"epoch": h["epoch"], "valid_iwae_bound": h["valid_elbo"]} for h in iwae["history"]]
    legacy = record("avb", 8, 0, epochs=2)  # written before objectives had names: no ELBO, its own estimate
    del legacy["metrics"]["elbo"]
    figures.training_curves([vae, iwae, legacy], tmp_path / "curves.png", order=["vae", "iwae-k5", "avb"])
    fig = drawn[0]
    labels = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert labels == ["vae", "iwae-k5 (iwae bound)", "avb (own estimate, not a bound)"]
    assert fig.axes[0].get_ylabel() == "validation objective (nats)"
    # the curves are the logged values: iwae's second epoch is its valid_iwae_bound
    ys = sorted(float(y) for line in fig.axes[0].lines for y in line.get_ydata() if np.isfinite(y))
    assert iwae["history"][1]["valid_iwae_bound"] in ys


def test_training_curves_of_one_objective_name_it_on_the_axis(tmp_path, drawn):
    rows = records(seeds=1, epochs=2)
    for r in rows:
        r["history"] = [{"epoch": h["epoch"], "valid_iwae_bound": h["valid_elbo"]} for h in r["history"]]
    figures.training_curves(rows, tmp_path / "curves.png")
    assert drawn[0].axes[0].get_ylabel() == "validation iwae bound (nats)"
