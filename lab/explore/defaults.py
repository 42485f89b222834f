"""The defaults that the app, the command line and the library share, each read from one place.

θα, θβ, θγ and the kernel weights are :class:`lab.crf.CRFParams`'s field defaults (:data:`DEFAULT_PARAMS`);
the mean-field iterations T are :func:`lab.crf.mean_field`'s default (:data:`DEFAULT_ITERATIONS`); the working
size, the longer side in pixels that an image is downscaled to before inference, is
:data:`DEFAULT_WORKING_SIZE` for the command line. The app's knobs start at these values, except its working
size: :data:`APP_WORKING_SIZE`, smaller, so that a knob change answers while the knob moves. ``crf-lab refine``
uses them where neither ``--params`` nor a flag says otherwise, and its ``--help`` prints them; the app's
parameters download carries the working size it ran at, which ``--params`` then uses.

Example:
    >>> DEFAULT_PARAMS.theta_alpha, DEFAULT_PARAMS.w_bilateral, DEFAULT_ITERATIONS, DEFAULT_WORKING_SIZE
    (80.0, 10.0, 5, 1024)
    >>> APP_WORKING_SIZE
    256
"""

from __future__ import annotations

import inspect

from lab.crf import CRFParams, mean_field

__all__ = ["APP_WORKING_SIZE", "DEFAULT_ITERATIONS", "DEFAULT_PARAMS", "DEFAULT_WORKING_SIZE"]

DEFAULT_PARAMS = CRFParams()
DEFAULT_ITERATIONS: int = inspect.signature(mean_field).parameters["iterations"].default
# mean field on a 1024 × 683 photo (L = 4, T = 5) took 3.4 s on the 2-core dev machine (no GPU, shared, measured
# 2026-12-03); a larger image is refined at this size and crf-lab refine brings the result back to its size
DEFAULT_WORKING_SIZE = 1024
# the app's slider starts here: about 0.07 MP for a 4:3 photo, where a knob change is interactive on 2 cores
APP_WORKING_SIZE = 256
