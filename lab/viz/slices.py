"""Volumes on a page: the three orthogonal slices through a point, grey guide with the labels over it."""

from __future__ import annotations

import numpy as np

from lab.viz.maps import overlay

__all__ = ["grey_window", "orthogonal_slices"]


def grey_window(values: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """``values`` mapped to 0..255 uint8 between their ``low`` and ``high`` percentiles (clipped outside).

    Example:
        >>> grey_window(np.arange(101.0), 0, 100)[[0, 20, 100]].tolist()
        [0, 51, 255]
    """
    v = np.asarray(values, dtype=np.float64)
    lo, hi = np.percentile(v, [low, high])
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return np.clip(np.rint((v - lo) * scale), 0, 255).astype(np.uint8)


def _stretch(panel: np.ndarray, rows: float, cols: float) -> np.ndarray:
    """Nearest-neighbour resampling so that one output pixel is the same physical length on both axes."""
    h, w = panel.shape[:2]
    out_h, out_w = max(1, round(h * rows)), max(1, round(w * cols))
    ri = np.minimum((np.arange(out_h) / rows).astype(int), h - 1)
    ci = np.minimum((np.arange(out_w) / cols).astype(int), w - 1)
    return panel[ri][:, ci]


def orthogonal_slices(
    guide: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    at: tuple[int, int, int] | None = None,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    alpha: float = 0.45,
    gap: int = 4,
    min_height: int = 0,
) -> np.ndarray:
    """The slices through ``at`` along each axis of a (D, H, W) volume, side by side, labels blended over.

    Each panel is the plane normal to one axis (axis 0, then 1, then 2), the guide in grey (1–99 % window
    over the whole volume), resampled (nearest) so that the voxel spacing is respected, and the panels are
    aligned at the top on a white background.

    Args:
        guide: (D, H, W) real values, or (C, D, H, W) (the first channel is shown).
        labels: (D, H, W) integer labels or None (the guide alone).
        at: the voxel the slices pass through; default the centre.
        spacing: voxel size per axis; the smallest maps to one pixel.
        alpha: weight of the label colours.
        gap: white pixels between panels.
        min_height: enlarge (nearest, by a whole factor) until the tallest panel is at least this tall.

    Returns:
        (H', W', 3) uint8.

    Example:
        >>> orthogonal_slices(np.zeros((4, 5, 6)), np.zeros((4, 5, 6), int), gap=1).shape
        (5, 19, 3)
    """
    g = np.asarray(guide)
    if g.ndim == 4:
        g = g[0]
    if g.ndim != 3:
        raise ValueError(f"guide: expected (D, H, W) or (C, D, H, W), got shape {np.asarray(guide).shape}")
    if labels is not None and np.asarray(labels).shape != g.shape:
        raise ValueError(f"labels: expected shape {g.shape} (the guide's), got {np.asarray(labels).shape}")
    at = tuple(s // 2 for s in g.shape) if at is None else tuple(int(a) for a in at)
    if len(at) != 3 or not all(0 <= a < s for a, s in zip(at, g.shape, strict=True)):
        raise ValueError(f"at: expected a voxel index inside {g.shape}, got {at}")
    grey = grey_window(g)
    unit = min(spacing)
    tallest = max(g.shape[a] * spacing[a] / unit for a in range(3))
    unit /= max(1, -(-min_height // round(tallest)))  # a whole enlargement factor
    panels = []
    for axis in range(3):
        index = [slice(None)] * 3
        index[axis] = at[axis]
        rgb = np.repeat(grey[tuple(index)][..., None], 3, axis=2)
        if labels is not None:
            rgb = overlay(rgb, np.asarray(labels)[tuple(index)], alpha)
        rows, cols = (spacing[a] / unit for a in range(3) if a != axis)
        panels.append(_stretch(rgb, rows, cols))
    height = max(p.shape[0] for p in panels)
    width = sum(p.shape[1] for p in panels) + gap * (len(panels) - 1)
    page = np.full((height, width, 3), 255, np.uint8)
    x = 0
    for p in panels:
        page[: p.shape[0], x : x + p.shape[1]] = p
        x += p.shape[1] + gap
    return page
