"""Declarations of per-example columns: what a number is, in one line, and which way is better.

A method declares the extra per-example numbers it reports (:attr:`vaebench.methods.Method.columns`)
and returns them from ``diagnostics``; the evaluation stores each value per test image and the
declaration itself in the cell's record (``record["columns"]``), so that the report shows the
column, with the same paired statistics as every other column, without knowing the method.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .config import require


@dataclass(frozen=True)
class Column:
    """One per-example column.

    ``name``: its key in records and per-example files (letters, digits and ``_``).
    ``heading``: its short table heading (default: ``name``). ``description``: one line saying
    what the number is; an estimate that is not a bound says so. ``higher_is_better``: True,
    False, or None for a diagnostic with no better direction.
    ``should_not_fall_below``: an optional (other column, tolerance in the column's units): the
    true quantity this column estimates is bounded below by ``other``, so a row whose mean lies
    more than ``tolerance`` under ``other``'s mean is flagged ⚠ in the report (for example an
    adversary's KL estimate against the Gaussian lower bound on that KL). ``digits``: decimals shown
    in tables (None: by the mean's size; 1 for a count, whose mean over seeds need not be whole).
    """

    name: str
    description: str
    higher_is_better: bool | None = None
    heading: str = ""
    should_not_fall_below: tuple[str, float] | None = None
    digits: int | None = None

    def __post_init__(self) -> None:
        require(self.name.replace("_", "").isalnum() and self.name.isascii(),
                f"a column name has letters, digits and '_' only, got {self.name!r}")
        require(bool(self.description.strip()), f"column {self.name!r} needs a one-line description")
        if not self.heading:
            object.__setattr__(self, "heading", self.name)

    def to_dict(self) -> dict[str, Any]:
        """The declaration as it is written into a record."""
        out = asdict(self)
        if self.digits is None:  # records written before the field existed stay as they were
            del out["digits"]
        if self.should_not_fall_below is not None:
            out["should_not_fall_below"] = list(self.should_not_fall_below)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Column:
        """The declaration as read back from a record."""
        bound = data.get("should_not_fall_below")
        return cls(name=data["name"], description=data["description"],
                   higher_is_better=data.get("higher_is_better"), heading=data.get("heading", ""),
                   should_not_fall_below=None if bound is None else (str(bound[0]), float(bound[1])),
                   digits=data.get("digits"))


#: the main table's columns, in its order: estimators of log p(x) and bounds on it, estimator
#: diagnostics, reconstruction and timings; every method may have them
TABLE_COLUMNS: tuple[Column, ...] = (
    Column("log_likelihood_ais", "annealed importance sampling estimate of log p(x), a stochastic lower bound "
           "(step sizes from a pilot run, then frozen)", True, "log p(x) AIS"),
    Column("log_likelihood_is", "importance-sampling estimate of log p(x) with q(z|x) as proposal (methods with "
           "a posterior density only)", True, "log p(x) IS"),
    Column("log_likelihood_is_full", "the same estimator over the whole test split, not only the N images of the "
           "other columns", True, "log p(x) IS, full test set"),
    Column("exact_log_likelihood", "log p(x) by numerical quadrature (2-D latent spaces)", True, "log p(x) exact"),
    Column("elbo", "Monte Carlo evidence lower bound E_q[log p(x,z) − log q(z|x)] (methods with a density)",
           True, "ELBO"),
    Column("elbo_upper_bound", "E_q[log p(x|z)] − KL(N(m,S) ‖ p(z)), with m, S the moments of posterior draws: "
           "an upper bound on the true ELBO of an implicit posterior", None, "ELBO upper bound"),
    Column("bdmc_gap", "reverse minus forward AIS on data simulated from the model: how far AIS is from exact "
           "(smaller is tighter)", False, "BDMC gap"),
    Column("recon_bernoulli_nll", "E_q[−log p(x|z)], averaged over the posterior draws (lower is better)", False,
           "recon NLL (nats)"),
    Column("recon_mse", "per-pixel squared error of E[x|z], averaged over the posterior draws", False, "recon MSE"),
    Column("recon_pixel_error", "fraction of pixels where the thresholded E[x|z] is wrong, averaged over the "
           "posterior draws", False, "pixel error"),
    Column("aggregate_kl", "KL of the aggregate posterior to the prior, by quadrature (2-D)", False,
           "KL(q(z) ‖ p(z))"),
    Column("train_seconds", "wall seconds of training", False, "train s"),
    Column("eval_seconds", "wall seconds of evaluation", False, "eval s"),
)
#: diagnostics of the posterior that the evaluation computes for every method, a table of their own
POSTERIOR_COLUMNS: tuple[Column, ...] = (
    Column("kl_gaussian_lower_bound", "KL(N(m,S) ‖ p(z)) from the moments of posterior draws: a lower bound on "
           "KL(q(z|x) ‖ p(z))", None, "KL lower bound"),
    Column("posterior_sd_median", "median over latent dimensions of the posterior's sd", None,
           "posterior sd (median)"),
    # one number per cell, not per image (vaebench.active_units); with one seed it has no ±
    Column("active_units", "latent units u with A_u = Var_x(E_q[z_u|x]) > 0.01 over the N test images (Burda et "
           "al. 2016); E_q[z_u|x] is exact where the posterior offers it, else the mean of the pass's posterior "
           "draws, whose Monte Carlo error adds about Var_q(z_u|x)/draws to A_u (the record says which)", None,
           "active units", digits=1),
    Column("active_units_uncertain", "of the active units, those whose A_u less its expected Monte Carlo "
           "inflation is not above 0.01: counted perhaps only through the draws' noise (0 for exact means)", None,
           "active units, uncertain", digits=1),
    Column("active_units_layer1", "active units of the first latent layer of z (models that declare layers)", None,
           "active units, layer 1", digits=1),
    Column("active_units_layer2", "active units of the second latent layer of z (models that declare layers)", None,
           "active units, layer 2", digits=1),
)
#: the columns every report knows; a method's own columns come with its declaration
BUILTIN_COLUMNS: tuple[Column, ...] = TABLE_COLUMNS + POSTERIOR_COLUMNS

__all__ = ["BUILTIN_COLUMNS", "Column", "POSTERIOR_COLUMNS", "TABLE_COLUMNS"]
