"""The exact O(N²) Gaussian filter: the oracle every approximation in the lab is measured against.

Kernel entries come from direct differences f_i − f_j in float64, never from the expansion
|a|² + |b|² − 2ab: that expansion cancels catastrophically for features far from the origin or spread
widely (points spread over 1e9 lost the self term), while a difference of two float64 numbers is
correctly rounded wherever they lie, and exactly 0 for the self term.
"""

from __future__ import annotations

import numbers

import torch
from torch.utils.checkpoint import checkpoint

from lab._checks import check_choice, check_finite, check_tensor
from lab.lattice.normalize import NORMALIZATIONS, normalized

__all__ = ["ExactGaussian", "exact_gaussian_filter"]

# Default chunk: B·rows·N·d ≤ 2^22, so the d float64 (B, rows, N) difference blocks of one chunk take ≤ 32 MiB.
_CHUNK_ENTRIES = 1 << 22
# Largest accepted |feature|: below 2^1020 every difference f_i − f_j is finite in float64 (its square may
# overflow to inf, which gives the exact kernel value 0 and a zero gradient; an infinite difference would not).
_MAX_FEATURE = 2.0**1020


def _check_points(x: object, name: str) -> torch.Tensor:
    """A real tensor of shape (N, K) or (B, K, *spatial), 1–3 spatial axes."""
    check_tensor(x, name)
    if not 2 <= x.dim() <= 5:
        raise ValueError(
            f"{name}: expected shape (N, K) or (B, K, *spatial) with 1–3 spatial axes, got {tuple(x.shape)}"
        )
    if x.is_complex():
        raise TypeError(f"{name}: expected real values, got {x.dtype}")
    return x


def _points(x: torch.Tensor) -> torch.Tensor:
    """(N, K) → (1, N, K); (B, K, *spatial) → (B, N, K), N the number of pixels or voxels, rows in C order.

    Always contiguous: the kernel product's BLAS call then sees the same layout whatever the caller's strides,
    so a non-contiguous view filters to the same bits as its contiguous copy.
    """
    if x.dim() == 2:
        return x[None].contiguous()
    return x.movedim(1, -1).reshape(x.shape[0], -1, x.shape[1]).contiguous()


def _kernel_rows(fi: torch.Tensor, f: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Σ_j exp(−|f_i − f_j|²/2) rhs_j for the rows ``fi`` (B, r, d) against all ``f`` (B, N, d); rhs (B, N, C)."""
    d2 = fi.new_zeros(fi.shape[0], fi.shape[1], f.shape[1])  # (B, r, N)
    for k in range(f.shape[2]):
        d2 = d2 + (fi[:, :, k, None] - f[:, None, :, k]).square()  # exactly 0 for i = j, so exp(0) = 1
    return torch.exp(-0.5 * d2) @ rhs  # (B, r, N) @ (B, N, C)


def _apply_kernel(f: torch.Tensor, rhs: torch.Tensor, chunk: int) -> torch.Tensor:
    """K @ rhs for (B, N, d) features and (B, N, C) values, ``chunk`` rows at a time.

    When a graph is being recorded each chunk is checkpointed: backward recomputes the chunk's kernel
    rows instead of storing them, so memory stays one chunk's worth in both directions.
    """
    record = torch.is_grad_enabled() and (f.requires_grad or rhs.requires_grad)
    outs = []
    for start in range(0, f.shape[1], chunk):
        fi = f[:, start : start + chunk]
        if record:
            outs.append(checkpoint(_kernel_rows, fi, f, rhs, use_reentrant=False))
        else:
            outs.append(_kernel_rows(fi, f, rhs))
    if not outs:  # N = 0
        return rhs.new_zeros(rhs.shape)
    return torch.cat(outs, 1)


def exact_gaussian_filter(
    values: torch.Tensor,
    features: torch.Tensor,
    normalize: str = "after",
    *,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Σ_j exp(−|f_i − f_j|²/2) v_j over all pairs, computed in float64, in row chunks.

    Same semantics as :func:`lab.gaussian_filter` (self term included); differentiable with respect to
    both the values and the features by plain autograd. Cost O(N²·(d + C)): use it on small inputs.

    Accuracy: each kernel entry is exp(−½ Σ_k (f_ik − f_jk)²) from direct float64 differences, so the
    self term is exactly exp(0) = 1 and the result does not depend on where the features lie (a common
    offset of 1e12 changes nothing: the differences are the same numbers). It agrees with a float64
    double loop to rounding, about N·(d + 2)·2⁻⁵³·max|v| (tested to 1e-12 for N ≤ 23, d ≤ 5). With the
    self term, K 1 ≥ 1: "after" and "symmetric" never divide by less than 1.

    Accepts:
        values: float of any precision; integer and bool values are promoted to float64 (exactly, up to
        2^53) and the result is float64.
        features: float of any precision; converted to float64 exactly.
        Empty inputs (N = 0, C = 0 or d = 0; d = 0 means every pair has kernel 1) give what the sum says.

    Refuses (naming the argument): non-tensors; complex dtypes; integer or bool ``features``
    (``TypeError``); shapes other than (N, K) / (B, K, *spatial), layouts or sizes that differ between
    ``values`` and ``features``, tensors on different devices, NaN/Inf in either, |features| ≥ 2^1020,
    an unknown ``normalize``, a ``chunk_size`` that is not an integer ≥ 1, and a result that overflows
    the output dtype (``ValueError``).

    Args:
        values: (N, C) or (B, C, *spatial) (1–3 spatial axes).
        features: (N, d) or (B, d, *spatial) in the layout of ``values``, divided by the bandwidths.
        normalize: "none" (K v), "after" (K v / K 1) or "symmetric" (D^−½ K D^−½ v, D = K 1).
        chunk_size: rows per chunk (default: B·rows·N·d about 2^22, 32 MiB of float64 differences).

    Returns:
        The filtered values in the shape of ``values`` and its dtype (float64 for integer or bool values).

    Example:
        >>> f = torch.tensor([[0.0], [1.0]])
        >>> exact_gaussian_filter(torch.tensor([[1.0], [0.0]]), f, normalize="none")
        tensor([[1.0000],
                [0.6065]])
    """
    _check_points(values, "values")
    _check_points(features, "features")
    if not features.is_floating_point():
        raise TypeError(f"features: expected a floating-point tensor, got {features.dtype}")
    if values.dim() != features.dim():
        raise ValueError(
            f"values: expected the layout of features {tuple(features.shape)} ((N, C) with (N, d), "
            f"(B, C, *spatial) with (B, d, *spatial)), got {tuple(values.shape)}"
        )
    same = values.shape[0] == features.shape[0] and values.shape[2:] == features.shape[2:]
    if not same:
        raise ValueError(
            f"values: expected the shape of features {tuple(features.shape)} but C, got {tuple(values.shape)}"
        )
    if values.device != features.device:
        raise ValueError(f"values: on {values.device}, but features are on {features.device}")
    check_choice(normalize, "normalize", NORMALIZATIONS)
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or chunk_size < 1
    ):
        raise ValueError(f"chunk_size: expected None or an integer >= 1, got {chunk_size!r}")
    check_finite(values, "values")
    check_finite(features, "features")
    top = float(features.detach().abs().max()) if features.numel() else 0.0
    if top >= _MAX_FEATURE:
        raise ValueError(f"features: expected magnitudes below 2^1020, got up to {top:.3g}")

    v64 = _points(values).to(torch.float64)
    f64 = _points(features).to(torch.float64)
    b, n, d = f64.shape
    chunk = int(chunk_size) if chunk_size is not None else max(1, _CHUNK_ENTRIES // max(b * n * max(d, 1), 1))
    ones = torch.ones(b, n, 1, dtype=torch.float64, device=v64.device)
    if normalize == "after":
        res = _apply_kernel(f64, torch.cat([v64, ones], 2), chunk)  # [K v, K 1] in one pass
        out = normalized(lambda _: res[..., :-1], v64, normalize, res[..., -1:])
    else:
        k1 = None if normalize == "none" else _apply_kernel(f64, ones, chunk)
        out = normalized(lambda v: _apply_kernel(f64, v, chunk), v64, normalize, k1)
    out = out.to(values.dtype if values.is_floating_point() else torch.float64)
    if not bool(torch.isfinite(out).all()):
        top = float(values.detach().abs().max())
        raise ValueError(
            f"values: the filtered result overflows {out.dtype} (|values| up to {top:.3g}, N = {n}); "
            "filter values.double() or smaller values"
        )
    if values.dim() == 2:
        return out[0]
    return out.reshape(b, *values.shape[2:], values.shape[1]).movedim(-1, 1)


class ExactGaussian:
    """The exact filter over one batch of feature images, as an object with the lattice's ``filter_points``.

    Args:
        features: (B, d, *spatial) features divided by the bandwidths, 1–3 spatial axes (differentiable:
            the filter then is too).

    Example:
        >>> g = ExactGaussian(torch.rand(1, 2, 3, 4))
        >>> bool(torch.allclose(g.filter_points(torch.ones(12, 1), "after"), torch.ones(12, 1)))
        True
    """

    def __init__(self, features: torch.Tensor) -> None:
        b, _, *spatial = features.shape
        self.shape = (b, *spatial)
        self.features = features

    @property
    def requires_grad(self) -> bool:
        """Whether the features (hence the filter) carry a graph."""
        return self.features.requires_grad

    def filter_points(self, x: torch.Tensor, normalize: str = "after") -> torch.Tensor:
        """:func:`exact_gaussian_filter` of (M, C) point-layout values, M = B·(pixels or voxels), rows in C order."""
        image = x.view(*self.shape, -1).movedim(-1, 1)
        out = exact_gaussian_filter(image, self.features, normalize)
        return out.movedim(1, -1).reshape(x.shape[0], -1)
