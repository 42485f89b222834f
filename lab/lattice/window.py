"""The exact Gaussian truncated to a k × k window around each pixel (as ConvCRF): O(N·k²), for images.

Differences of features in the window, never the expansion |a|² + |b|² − 2ab, as the exact filter does.
Pixels outside the image contribute nothing; the self term is included, so K·1 ≥ 1.
"""

from __future__ import annotations

import torch

from lab.lattice.normalize import normalized

__all__ = ["WindowGaussian", "window_filter"]


def window_filter(x: torch.Tensor, features: torch.Tensor, radius: int) -> torch.Tensor:
    """Σ_{j in the (2r+1)² window of i} exp(−|f_i − f_j|²/2) x_j, unnormalised.

    Args:
        x: (B, H, W, C) values, channels last.
        features: (B, H, W, d) features, channels last, divided by the bandwidths.
        radius: r, the window's half width in pixels (the window is (2r+1) × (2r+1)).

    Returns:
        (B, H, W, C).

    Example:
        >>> window_filter(torch.ones(1, 1, 3, 1), torch.zeros(1, 1, 3, 1), 1).flatten().tolist()
        [2.0, 3.0, 2.0]
    """
    _, h, w, _ = x.shape
    out = torch.zeros_like(x)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            ty, tx = slice(max(0, -dy), h - max(0, dy)), slice(max(0, -dx), w - max(0, dx))  # targets i
            sy, sx = slice(max(0, dy), h + min(0, dy)), slice(max(0, dx), w + min(0, dx))  # sources j = i + δ
            if ty.start >= ty.stop or tx.start >= tx.stop:
                continue
            k = torch.exp(-0.5 * (features[:, ty, tx] - features[:, sy, sx]).square().sum(-1, keepdim=True))
            out[:, ty, tx] = out[:, ty, tx] + k * x[:, sy, sx]
    return out


class WindowGaussian:
    """The window filter over one batch of feature images, K·1 computed once.

    Args:
        features: (B, d, H, W) features divided by the bandwidths (differentiable: the filter then is too).
        window_size: k, odd, ≥ 1.

    Example:
        >>> g = WindowGaussian(torch.rand(1, 2, 5, 6), 3)
        >>> bool(torch.allclose(g.filter_points(torch.ones(30, 1), "after"), torch.ones(30, 1)))
        True
    """

    def __init__(self, features: torch.Tensor, window_size: int) -> None:
        b, _, h, w = features.shape
        self.shape = (b, h, w)
        self.features = features
        self.radius = window_size // 2
        self._f = features.permute(0, 2, 3, 1)  # (B, H, W, d)
        self._k1 = window_filter(
            torch.ones(b, h, w, 1, dtype=features.dtype, device=features.device), self._f, self.radius
        )

    @property
    def requires_grad(self) -> bool:
        """Whether the features (hence the filter) carry a graph."""
        return self.features.requires_grad

    def filter_points(self, x: torch.Tensor, normalize: str = "after") -> torch.Tensor:
        """The normalised window filter of (M, C) point-layout values, M = B·H·W, rows ordered (b, y, x)."""
        b, h, w = self.shape
        out = normalized(lambda v: window_filter(v, self._f, self.radius), x.view(b, h, w, -1), normalize, self._k1)
        return out.reshape(b * h * w, -1)
