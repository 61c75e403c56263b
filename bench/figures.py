"""Figures of trained models: the learned posteriors of a 2-D latent space (the AVB paper's Figure 3)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on the benchmark machines

import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402
import torch  # noqa: E402

from vaebench.methods import Method  # noqa: E402


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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
