"""A unary from a few strokes per class: a colour model learned from the scribbled pixels.

The user marks some pixels of each class (the app's scribble mode draws them). :func:`scribble_unary` learns
p(colour | class) from the marked pixels, a colour histogram per class (``bins`` levels per RGB channel)
smoothed with a Gaussian of ``bandwidth`` bins and floored so that no colour is impossible, and gives every
pixel U = log p(class | colour) under a uniform prior, softened by a temperature T (U = log softmax(log p / T):
T > 1 is less sure, T < 1 surer). A marked pixel keeps its class with probability ``stroke_prob``.
The CRF then spreads the strokes' labels along the image's edges. :func:`strokes_from_canvas` turns an RGBA
drawing (a stroke colour per class on a transparent background) into the stroke map.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from lab._checks import check_number

__all__ = ["scribble_unary", "strokes_from_canvas"]

_FLOOR = 1e-6  # of a class's colour density per cell, before renormalising: no colour is impossible


def _real(value: object, name: str) -> float:
    value = check_number(value, name)
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return value


def _check_image(image: object) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise ValueError(f"image: expected an (H, W, 3) RGB array, got shape {image.shape}")
    if not np.issubdtype(image.dtype, np.number) or np.issubdtype(image.dtype, np.complexfloating):
        raise TypeError(f"image: expected a numeric RGB array (uint8 0..255), got {image.dtype}")
    if not np.isfinite(image).all() or image.min() < 0 or image.max() > 255:
        raise ValueError("image: expected finite RGB values in 0..255")
    return image


def _smooth(hist: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian smoothing of (L, n, n, n) histograms along the three colour axes (zero padding)."""
    if sigma <= 0:
        return hist
    radius = max(1, math.ceil(3 * sigma))
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=hist.dtype) / sigma) ** 2)
    taps = taps / taps.sum()
    out = hist
    for axis in (1, 2, 3):
        moved = out.movedim(axis, -1)
        shape = moved.shape
        flat = torch.nn.functional.conv1d(moved.reshape(-1, 1, shape[-1]), taps.view(1, 1, -1), padding=radius)
        out = flat.reshape(shape).movedim(-1, axis)
    return out


def scribble_unary(
    image: np.ndarray,
    strokes: np.ndarray,
    n_labels: int | None = None,
    *,
    temperature: float = 1.0,
    bins: int = 16,
    bandwidth: float = 1.0,
    stroke_prob: float = 0.9,
) -> torch.Tensor:
    """U from strokes: each class's colour model, learned from its marked pixels.

    Args:
        image: (H, W, 3) RGB, 0..255.
        strokes: (H, W) integers, 0 = not marked, k = marked as class k − 1 (k = 1..L).
        n_labels: L (default: the largest stroke value); every class needs at least one marked pixel.
        temperature: T > 0; U = log softmax(log p(class | colour) / T).
        bins: histogram levels per RGB channel, 2..64.
        bandwidth: the histogram's Gaussian smoothing, in bins (≥ 0; 0 = none).
        stroke_prob: the probability a marked pixel keeps for its class, in [1/L, 1).

    Returns:
        (1, L, H, W) float32 U (log-probabilities summing to 1 over L).

    Example:
        >>> image = np.zeros((2, 4, 3), np.uint8); image[:, 2:] = 255
        >>> strokes = np.array([[1, 0, 0, 2], [0, 0, 0, 0]])
        >>> scribble_unary(image, strokes)[0].argmax(0).tolist()
        [[0, 0, 1, 1], [0, 0, 1, 1]]
    """
    image = _check_image(image)
    strokes = np.asarray(strokes)
    if strokes.shape != image.shape[:2]:
        raise ValueError(f"strokes: expected the image's (H, W) = {image.shape[:2]}, got shape {strokes.shape}")
    if not np.issubdtype(strokes.dtype, np.integer):
        raise TypeError(f"strokes: expected integers (0 = not marked, k = class k − 1), got {strokes.dtype}")
    top = int(strokes.max()) if strokes.size else 0
    if n_labels is None:
        n_labels = top
    if isinstance(n_labels, bool) or not isinstance(n_labels, numbers.Integral) or n_labels < 2:
        raise ValueError(f"n_labels: expected an integer >= 2 (strokes of at least two classes), got {n_labels!r}")
    if strokes.min() < 0 or top > n_labels:
        raise ValueError(f"strokes: expected values in 0..{n_labels}, got {int(strokes.min())}..{top}")
    counts = np.bincount(strokes.ravel(), minlength=n_labels + 1)[1:]
    unmarked = [k + 1 for k in range(n_labels) if counts[k] == 0]
    if unmarked:
        raise ValueError(f"strokes: every class needs marked pixels; none for stroke value(s) {unmarked}")
    temperature = _real(temperature, "temperature")
    if temperature <= 0:
        raise ValueError(f"temperature: expected a number > 0, got {temperature!r}")
    if isinstance(bins, bool) or not isinstance(bins, numbers.Integral) or not 2 <= bins <= 64:
        raise ValueError(f"bins: expected an integer in 2..64, got {bins!r}")
    bandwidth = _real(bandwidth, "bandwidth")
    if bandwidth < 0:
        raise ValueError(f"bandwidth: expected a number >= 0 (bins), got {bandwidth!r}")
    stroke_prob = _real(stroke_prob, "stroke_prob")
    if not 1 / n_labels <= stroke_prob < 1:
        raise ValueError(f"stroke_prob: expected a number in [1/L, 1) = [{1 / n_labels:.3g}, 1), got {stroke_prob!r}")

    height, width = strokes.shape
    cells = np.minimum((image.astype(np.float64) * bins / 256.0).astype(np.int64), bins - 1)
    index = torch.from_numpy((cells[..., 0] * bins + cells[..., 1]) * bins + cells[..., 2]).reshape(-1)
    marked = torch.from_numpy(strokes.reshape(-1).astype(np.int64))
    hist = torch.zeros(n_labels, bins**3, dtype=torch.float64)
    sel = marked > 0
    hist.index_put_((marked[sel] - 1, index[sel]), torch.ones(int(sel.sum()), dtype=torch.float64), accumulate=True)
    hist = _smooth(hist.view(n_labels, bins, bins, bins), bandwidth).reshape(n_labels, -1)
    density = hist / hist.sum(1, keepdim=True)  # p(cell | class)
    density = (density + _FLOOR) / (1 + _FLOOR * bins**3)
    log_p = density.log()[:, index]  # (L, N): log p(colour | class) per pixel
    u = torch.log_softmax(log_p / temperature, 0)
    if sel.any():
        rest = math.log((1 - stroke_prob) / (n_labels - 1))
        given = torch.full((n_labels, int(sel.sum())), rest, dtype=torch.float64)
        given[marked[sel] - 1, torch.arange(int(sel.sum()))] = math.log(stroke_prob)
        u[:, sel] = given
    return u.reshape(1, n_labels, height, width).to(torch.float32)


def strokes_from_canvas(rgba: np.ndarray, class_colours: list[tuple[int, int, int]], tolerance: float = 40.0):
    """The stroke map of an RGBA drawing: each opaque pixel gets the class whose stroke colour is nearest.

    Args:
        rgba: (H, W, 4) drawing, 0..255, transparent (alpha 0) where nothing was drawn.
        class_colours: the RGB stroke colour of class 0, 1, ….
        tolerance: the largest RGB distance from a stroke colour still counted (anti-aliased edges blend).

    Returns:
        (H, W) int64 strokes: 0 not marked, k = class k − 1 (the input of :func:`scribble_unary`).

    Example:
        >>> canvas = np.zeros((1, 3, 4), np.uint8); canvas[0, 0] = (255, 0, 0, 255); canvas[0, 2] = (0, 0, 250, 255)
        >>> strokes_from_canvas(canvas, [(255, 0, 0), (0, 0, 255)]).tolist()
        [[1, 0, 2]]
    """
    rgba = np.asarray(rgba)
    if rgba.ndim != 3 or rgba.shape[2] != 4:
        raise ValueError(f"rgba: expected an (H, W, 4) RGBA drawing, got shape {rgba.shape}")
    colours = np.asarray(class_colours, dtype=np.float64)
    if colours.ndim != 2 or colours.shape[1] != 3 or len(colours) < 1:
        raise ValueError(f"class_colours: expected one (r, g, b) per class, got shape {colours.shape}")
    tolerance = _real(tolerance, "tolerance")
    distance = np.linalg.norm(rgba[..., None, :3].astype(np.float64) - colours, axis=-1)  # (H, W, L)
    nearest = distance.argmin(-1)
    drawn = (rgba[..., 3] > 0) & (distance.min(-1) <= tolerance)
    return np.where(drawn, nearest + 1, 0).astype(np.int64)
