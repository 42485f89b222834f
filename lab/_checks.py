"""Input checks shared by the public functions: one place, one message format.

Each check raises ``ValueError`` (or ``TypeError`` for a wrong type) whose message names the argument,
says what it got and what was expected. Messages are only formatted when a check fails.

Checks of shapes, dtypes and numbers given by the caller cost nothing on the device and always run. Checks
that read tensor *values* (finiteness, colour ranges, a finite result) copy a number to the host: on CUDA a
synchronisation per check. They run by default; :func:`set_data_checks` (or ``LAB_DATA_CHECKS=0`` in the
environment) turns them off, and they are skipped while ``torch.compile`` traces, as kornia does.
"""

from __future__ import annotations

import contextlib
import numbers
import os
from collections.abc import Iterator, Sequence

import torch

__all__ = [
    "check_choice",
    "check_finite",
    "check_int",
    "check_number",
    "check_positive",
    "check_shape",
    "check_tensor",
    "data_checks",
    "data_checks_enabled",
    "set_data_checks",
]

_DATA_CHECKS = os.environ.get("LAB_DATA_CHECKS", "1") != "0"


def set_data_checks(enabled: bool) -> None:
    """Turn the checks that read tensor values (NaN/Inf, value ranges, a finite result) on or off, process-wide.

    Off, bad values give bad results instead of errors: for trusted inputs on a GPU, where each check is a
    device → host synchronisation.

    Example:
        >>> set_data_checks(False); data_checks_enabled()
        False
        >>> set_data_checks(True); data_checks_enabled()
        True
    """
    global _DATA_CHECKS
    _DATA_CHECKS = bool(enabled)


def data_checks_enabled() -> bool:
    """Whether value checks run now: on (default), off by :func:`set_data_checks`, and off while compiling."""
    return _DATA_CHECKS and not torch.compiler.is_compiling()


@contextlib.contextmanager
def data_checks(enabled: bool) -> Iterator[None]:
    """Value checks on or off within a ``with`` block (the previous setting is restored after).

    Example:
        >>> with data_checks(False):
        ...     check_finite(torch.tensor([float("nan")]), "x")  # not checked
    """
    previous = _DATA_CHECKS
    set_data_checks(enabled)
    try:
        yield
    finally:
        set_data_checks(previous)


def check_tensor(x: object, name: str) -> torch.Tensor:
    """Raise ``TypeError`` unless ``x`` is a tensor; return it."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    return x


def check_shape(x: torch.Tensor, name: str, dims: Sequence[str | int]) -> None:
    """Check the rank of ``x`` and any dimension given as an int.

    Args:
        x: the tensor to check.
        name: the argument's name, used in the message.
        dims: one entry per dimension: a letter (any size, e.g. ``"B"``) or an int (that exact size).

    Example:
        >>> check_shape(torch.zeros(2, 3, 4, 5), "image", ["B", 3, "H", "W"])
    """
    check_tensor(x, name)
    ok = x.dim() == len(dims) and all(
        not isinstance(want, int) or got == want for got, want in zip(x.shape, dims, strict=False)
    )
    if not ok:
        want = "(" + ", ".join(str(d) for d in dims) + ")"
        raise ValueError(f"{name}: expected shape {want}, got {tuple(x.shape)}")


def check_choice(value: object, name: str, choices: Sequence[object]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name}: expected one of {list(choices)}, got {value!r}")


def check_number(value: object, name: str) -> float:
    """``value`` as a float: a real number or a 0-d real tensor (not a bool), else ``TypeError`` naming it."""
    if isinstance(value, torch.Tensor):
        if value.dim() != 0 or value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{name}: expected a number or a 0-d real tensor, got {value.dtype} {tuple(value.shape)}")
        return float(value.detach())
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__} {value!r}")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(
            f"{name}: expected a number within float range, got an integer of {len(str(value))} digits"
        ) from None


def check_int(value: object, name: str, minimum: int = 0) -> int:
    """``value`` as an int ≥ ``minimum``: an integer (not a bool, not a float such as 11.0)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an integer >= {minimum}, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def check_positive(value: float, name: str) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number > 0 (``TypeError`` if it is not a number)."""
    v = check_number(value, name)
    if not (v > 0 and v != float("inf")):
        raise ValueError(f"{name}: expected a finite number > 0, got {value!r}")


def all_finite(x: torch.Tensor) -> bool:
    """Whether a tensor holds no NaN and no ±Inf: one pass (min and max propagate NaN), no (N,) mask allocated.

    Example:
        >>> all_finite(torch.tensor([1.0, 2.0])), all_finite(torch.tensor([1.0, float("nan")]))
        (True, False)
    """
    if not x.is_floating_point() or x.numel() == 0:
        return True
    lo, hi = torch.aminmax(x.detach())
    return bool(torch.isfinite(lo) & torch.isfinite(hi))


def check_finite(x: torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` if ``x`` holds NaN or Inf (a value check: skipped while data checks are off)."""
    if x.is_floating_point() and data_checks_enabled() and not all_finite(x):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name}: expected finite values, got {bad} NaN/Inf entries")
