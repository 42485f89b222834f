"""The CRF's result at the input's size: Q upsampled bilinearly, labels its arg-max, in bounded memory.

``crf-lab refine`` runs mean field at the working size (``--working-size``) and, by default
(``--output-size input``), writes the label map, the overlay and Q at the input's size. Q is upsampled
bilinearly (the same weights as ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``:
pixel centres at half-integers, edges clamped) and the labels are its arg-max, rather than the working-size
labels upscaled by nearest neighbour: a boundary then falls where the two classes' probabilities cross between
working pixels instead of on a staircase of (input / working)-pixel steps, and the labels written are always
the arg-max of the Q written. Each upsampled pixel's Q is a convex combination of four working pixels' Q, so
it still sums to 1. Away from boundaries the two ways agree: :func:`upscale_labels` changes only pixels within
a working pixel of a label change.

:func:`upscale_labels` works through the output in bands of rows (at most :data:`BAND_VALUES` values at a
time), so a 6000 × 6000 label map from a 21-label Q never holds the full-size Q (3 GB in float32);
:func:`upscale_q` returns that full Q, for ``--save-q``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BAND_VALUES", "bilinear_weights", "upscale_labels", "upscale_q"]

# values (labels × rows × columns) of the upsampled Q held at once by upscale_labels: 64 MB in float32
BAND_VALUES = 1 << 24


def bilinear_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights along one axis: out[i] = (1 − f[i]) · in[i0[i]] + f[i] · in[i1[i]].

    Half-pixel centres (``align_corners=False``): output pixel i samples the input at
    (i + 0.5) · n_in / n_out − 0.5, clamped to the first and last input pixel.

    Example:
        >>> i0, i1, f = bilinear_weights(2, 4)
        >>> i0.tolist(), i1.tolist(), f.tolist()
        ([0, 0, 0, 1], [1, 1, 1, 1], [0.0, 0.25, 0.75, 0.0])
    """
    if n_in < 1 or n_out < 1:
        raise ValueError(f"sizes: expected n_in, n_out >= 1, got {n_in}, {n_out}")
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0, n_in - 1)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, src - i0


def _band(q: np.ndarray, rows: tuple, cols: tuple) -> np.ndarray:
    """Q (L, h, w) upsampled at the output rows ``rows`` and all output columns ``cols``: (L, rows, W) float32."""
    r0, r1, fr = rows
    c0, c1, fc = cols
    fr = fr.astype(np.float32)[None, :, None]
    fc = fc.astype(np.float32)[None, None, :]
    top = q[:, r0][:, :, c0] * (1 - fc) + q[:, r0][:, :, c1] * fc
    bottom = q[:, r1][:, :, c0] * (1 - fc) + q[:, r1][:, :, c1] * fc
    return top * (1 - fr) + bottom * fr


def _bands(q: np.ndarray, size: tuple[int, int]):
    """(first row, upsampled band) over the output, each band at most :data:`BAND_VALUES` values."""
    num_labels, h, w = q.shape
    height, width = size
    rows = bilinear_weights(h, height)
    cols = bilinear_weights(w, width)
    step = max(1, BAND_VALUES // max(1, num_labels * width))
    for start in range(0, height, step):
        stop = min(height, start + step)
        yield start, _band(q, tuple(a[start:stop] for a in rows), cols)


def _check(q: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    q = np.asarray(q, dtype=np.float32)
    if q.ndim != 3 or 0 in q.shape:
        raise ValueError(f"q: expected a non-empty (L, H, W) array, got shape {q.shape}")
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size: expected (height, width) >= 1, got {size}")
    return q


def upscale_labels(q: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The arg-max of Q (L, h, w) upsampled bilinearly to ``size`` = (H, W): (H, W) int64 labels.

    Example:
        >>> q = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])  # (2, 1, 2): label 0 on the left, 1 on the right
        >>> upscale_labels(q, (1, 4)).tolist()
        [[0, 0, 1, 1]]
    """
    q = _check(q, size)
    labels = np.empty(size, dtype=np.int64)
    for start, band in _bands(q, size):
        labels[start : start + band.shape[1]] = band.argmax(0)
    return labels


def upscale_q(q: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Q (L, h, w) upsampled bilinearly to ``size`` = (H, W): (L, H, W) float32, each pixel still summing to 1.

    Example:
        >>> upscale_q(np.array([[[1.0, 0.0]], [[0.0, 1.0]]]), (1, 4))[0].tolist()
        [[1.0, 0.75, 0.25, 0.0]]
    """
    q = _check(q, size)
    out = np.empty((q.shape[0], *size), dtype=np.float32)
    for start, band in _bands(q, size):
        out[:, start : start + band.shape[1]] = band
    return out
