"""The exact O(N²) Gaussian filter: the oracle every approximation in the lab is measured against."""

from __future__ import annotations

import torch

from lab._checks import check_choice, check_tensor

__all__ = ["exact_gaussian_filter"]

_EPS = 1e-20


def _points(x: torch.Tensor, name: str) -> tuple[torch.Tensor, tuple[int, ...] | None]:
    """(N, K) stays; (B, K, H, W) → (B, H·W, K)."""
    check_tensor(x, name)
    if x.dim() == 2:
        return x[None], None
    if x.dim() == 4:
        b, k, h, w = x.shape
        return x.permute(0, 2, 3, 1).reshape(b, h * w, k), (b, h, w)
    raise ValueError(f"{name}: expected shape (N, K) or (B, K, H, W), got {tuple(x.shape)}")


def _apply_kernel(f: torch.Tensor, rhs: torch.Tensor, chunk: int) -> torch.Tensor:
    """K @ rhs for (B, N, d) features and (B, N, C) values, computed chunk rows at a time."""
    sq = (f * f).sum(2)  # (B, N)
    outs = []
    for start in range(0, f.shape[1], chunk):
        fi = f[:, start : start + chunk]
        d2 = sq[:, start : start + chunk, None] + sq[:, None, :] - 2 * fi @ f.transpose(1, 2)
        outs.append(torch.exp(-0.5 * d2.clamp_min(0)) @ rhs)  # (B, chunk, N) @ (B, N, C)
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

    Args:
        values: (N, C) or (B, C, H, W).
        features: (N, d) or (B, d, H, W), divided by the bandwidths.
        normalize: "none" (K v), "after" (K v / K 1) or "symmetric" (D^−½ K D^−½ v, D = K 1).
        chunk_size: rows per chunk (default: about 2^24 kernel entries per chunk).

    Returns:
        The filtered values in the shape and dtype of ``values``.

    Example:
        >>> f = torch.tensor([[0.0], [1.0]])
        >>> exact_gaussian_filter(torch.tensor([[1.0], [0.0]]), f, normalize="none")
        tensor([[1.0000],
                [0.6065]])
    """
    check_choice(normalize, "normalize", ("none", "after", "symmetric"))
    v, shape = _points(values, "values")
    f, _ = _points(features, "features")
    if v.shape[:2] != f.shape[:2]:
        raise ValueError(f"values: shape {tuple(values.shape)} does not match features {tuple(features.shape)}")
    b, n, _ = f.shape
    f64 = f.to(torch.float64)
    f64 = f64 - f64.mean(1, keepdim=True).detach()  # centring keeps |f|² small: the expansion stays exact
    v64 = v.to(torch.float64)
    ones = torch.ones(b, n, 1, dtype=torch.float64, device=v.device)
    chunk = chunk_size or max(1, (1 << 24) // max(n, 1))
    if normalize == "none":
        out = _apply_kernel(f64, v64, chunk)
    elif normalize == "after":
        res = _apply_kernel(f64, torch.cat([v64, ones], 2), chunk)  # [K v, K 1] in one pass
        out = res[..., :-1] / (res[..., -1:] + _EPS)
    else:
        inv_sqrt = torch.rsqrt(_apply_kernel(f64, ones, chunk) + _EPS)
        out = inv_sqrt * _apply_kernel(f64, inv_sqrt * v64, chunk)
    out = out.to(values.dtype)
    if shape is None:
        return out[0]
    bb, h, w = shape
    return out.reshape(bb, h, w, -1).permute(0, 3, 1, 2)
