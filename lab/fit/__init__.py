"""Fitting the CRF to labelled images: ``fit_crf`` learns θ, the kernel weights and µ (the unaries stay fixed).

:mod:`~lab.fit.inputs` checks and converts what the caller gives, :mod:`~lab.fit.space` holds the
parameters in the spaces they are moved in (log θ, bounded weights, µ), :mod:`~lab.fit.fitting` runs the
steps, early stopping and the before / after mIoU, :mod:`~lab.fit.progress` the bar or the callback.
``crf-lab fit`` (:mod:`lab.cli.fit`) is the command line; docs/fit.md the guide.
"""

from lab.fit.fitting import MONITORS, STOP_REASONS, FitResult, fit_crf
from lab.fit.space import LEARNABLE, THETA_BOUNDS, W_MAX

__all__ = ["LEARNABLE", "MONITORS", "STOP_REASONS", "THETA_BOUNDS", "W_MAX", "FitResult", "fit_crf"]
