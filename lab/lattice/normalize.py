"""The three normalisations of a Gaussian filter, written once for every filter in the lab.

With K the (unnormalised) kernel matrix and D = K·1 its row sums:

* ``"none"``: K x, divided by the filter's kernel scale (1 for the exact and window filters; the lattice's
  blur makes K a scaled Gaussian, see ``docs/lattice.md``);
* ``"after"``: K x / K 1, the CRF-RNN paper's normalisation (each pixel's messages are a weighted mean);
* ``"symmetric"``: D^−½ K D^−½ x, pydensecrf's default (the operator stays symmetric).

Every normalised filter is ``post · K(pre · x)``: :func:`scales` gives (pre, post), :func:`normalized`
applies them around any ``apply_k``. The lattice, exact, window and fused multi-lattice filters all go
through here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["EPS", "NORMALIZATIONS", "normalized", "scales"]

NORMALIZATIONS = ("none", "after", "symmetric")
EPS = (
    1e-20  # as densecrf: 1 / (K1 + 1e-20); with the self term K1 ≥ 1 for the exact filter, so it changes nothing there
)


def scales(k1: torch.Tensor, normalize: str, kernel_scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-point scales around K: ``filter(x) == post * K(pre * x)``.

    Args:
        k1: (M, 1) row sums K·1.
        normalize: "none", "after" or "symmetric".
        kernel_scale: what "none" divides K x by.

    Returns:
        pre, post, each (M, 1): "symmetric": D^−½, D^−½; "after": 1, 1 / (K1 + ε); "none": 1, 1 / kernel_scale.

    Example:
        >>> pre, post = scales(torch.tensor([[4.0]]), "symmetric")
        >>> pre.item(), post.item()
        (0.5, 0.5)
    """
    ones = torch.ones_like(k1)
    if normalize == "symmetric":
        inv_sqrt = torch.rsqrt(k1 + EPS)
        return inv_sqrt, inv_sqrt
    if normalize == "after":
        return ones, 1.0 / (k1 + EPS)
    return ones, ones / kernel_scale


def normalized(
    apply_k: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    normalize: str,
    k1: torch.Tensor | None = None,
    kernel_scale: float = 1.0,
) -> torch.Tensor:
    """The normalised filter of ``x``: K x / kernel_scale, K x / (K 1 + ε), or D^−½ K (D^−½ x).

    Differentiable in ``x`` and, through ``apply_k`` and ``k1``, in whatever they depend on.

    Args:
        apply_k: x ↦ K x on values of the layout of ``x`` (the points along the first axes, channels last).
        x: the values.
        normalize: "none", "after" or "symmetric".
        k1: K·1 in the layout of ``x`` with one channel; needed unless ``normalize`` is "none".
        kernel_scale: what "none" divides K x by.

    Returns:
        The filtered values, the shape of ``x``.

    Example:
        >>> k = torch.tensor([[1.0, 0.5], [0.5, 1.0]])
        >>> x = torch.tensor([[2.0], [0.0]])
        >>> normalized(lambda v: k @ v, x, "after", k1=k @ torch.ones(2, 1)).flatten().tolist()
        [1.3333333730697632, 0.6666666865348816]
    """
    if normalize == "none":
        return apply_k(x) / kernel_scale
    if k1 is None:
        raise ValueError(f"k1: needed for normalize={normalize!r}")
    if normalize == "after":
        return apply_k(x) / (k1 + EPS)
    inv_sqrt = torch.rsqrt(k1 + EPS)
    return inv_sqrt * apply_k(inv_sqrt * x)
