"""Approximations q(z) of a target density: each module fits one kind to a :class:`~vaebench.posterior.targets.Target`.

``avb`` (AVB and AVB-AC: implicit q, an adversary), ``gaussian`` (mean-field Gaussian VI) and
``flow`` (a normalising flow). :data:`FITTERS` finds them by the name a preset uses.
"""

from __future__ import annotations

from .avb import fit_avb, fit_avb_ac
from .base import Fit, Fitter, FITTERS
from .flow import fit_flow
from .gaussian import fit_meanfield

FITTERS.update({"avb": fit_avb, "avb-ac": fit_avb_ac, "meanfield": fit_meanfield, "flow": fit_flow})

__all__ = ["FITTERS", "Fit", "Fitter", "fit_avb", "fit_avb_ac", "fit_flow", "fit_meanfield"]
