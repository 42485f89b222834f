"""The lab's own exceptions: one base class, so callers can catch everything the lab raises on purpose.

Argument checks raise the built-in ``TypeError`` / ``ValueError`` (``lab._checks``), as PyTorch does; the
classes here are for conditions that are not a bad argument: a piece that cannot run on this machine, a
command line that cannot be carried out.
"""

from __future__ import annotations

__all__ = ["LabError", "Unavailable"]


class LabError(Exception):
    """Base class of the exceptions the lab defines."""


class Unavailable(LabError, RuntimeError):
    """A source, model or backend that cannot run here; the message says why and what would fix it.

    Example:
        >>> try:
        ...     raise Unavailable("selfie segmenter: mediapipe is not installed")
        ... except RuntimeError as err:
        ...     print(err)
        selfie segmenter: mediapipe is not installed
    """
