"""The fixed class palette: class l always has the same colour, in the notebooks, the app and the files.

:data:`PALETTE` is made to show labels on photos and to readers with a colour-vision deficiency:

- class 0 (the background in VOC, the synthetic scenes and the selfie segmenter) is a light neutral grey,
  never black, so the background neither hides dark image regions nor looks like "no label";
- classes 1–7 are Okabe & Ito's colour-blind-safe set without its black (vermillion, blue, bluish green,
  orange, reddish purple, sky blue, yellow), distinguishable under protanopia, deuteranopia and tritanopia;
- classes 8–15 are eight more saturated colours of Paul Tol's schemes (indigo, wine, teal, cyan, rose,
  green, purple, sand), distinct for normal vision, with no olive (it vanishes on photos);
- classes 16–255 are spread by the golden angle in hue over three lightness levels, all distinct, none
  black and none grey.

:func:`voc_palette` is the PASCAL VOC colour map (0 black, 1 dark red, 2 dark green, …): the colours of
VOC ``SegmentationClass`` annotations, for reading them back (:func:`lab.explore.voc_view.truth_from_image`).
"""

from __future__ import annotations

import colorsys

import numpy as np
import torch

__all__ = ["PALETTE", "VOC_PALETTE", "colorize", "palette", "voc_palette"]

# classes 0–15 (see the module docstring)
_BASE = (
    (204, 204, 204),  # 0: light neutral grey
    (213, 94, 0),  # Okabe–Ito vermillion
    (0, 114, 178),  # Okabe–Ito blue
    (0, 158, 115),  # Okabe–Ito bluish green
    (230, 159, 0),  # Okabe–Ito orange
    (204, 121, 167),  # Okabe–Ito reddish purple
    (86, 180, 233),  # Okabe–Ito sky blue
    (240, 228, 66),  # Okabe–Ito yellow
    (51, 34, 136),  # Tol indigo
    (136, 34, 85),  # Tol wine
    (68, 170, 153),  # Tol teal
    (136, 204, 238),  # Tol cyan
    (204, 102, 119),  # Tol rose
    (17, 119, 51),  # Tol green
    (170, 68, 153),  # Tol purple
    (221, 204, 119),  # Tol sand
)


def _generated(n: int, taken: set[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """``n`` more colours: golden-angle hues, saturation and value cycling over three levels, none in ``taken``."""
    out: list[tuple[int, int, int]] = []
    k = 0
    while len(out) < n:
        hue = (0.07 + k * 0.618033988749895) % 1.0
        sat, val = ((0.85, 0.95), (0.65, 0.75), (0.95, 0.6))[k % 3]
        rgb = tuple(round(255 * c) for c in colorsys.hsv_to_rgb(hue, sat, val))
        k += 1
        if rgb not in taken:
            taken.add(rgb)
            out.append(rgb)
    return out


def palette(n: int = 256) -> np.ndarray:
    """The first ``n`` palette colours, (n, 3) uint8.

    Example:
        >>> palette(4).tolist()
        [[204, 204, 204], [213, 94, 0], [0, 114, 178], [0, 158, 115]]
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or not 0 <= n <= 256:
        raise ValueError(f"n: expected an int in 0..256, got {n!r}")
    colours = list(_BASE) + _generated(256 - len(_BASE), set(_BASE))
    return np.array(colours[:n], dtype=np.uint8).reshape(n, 3)


def voc_palette(n: int = 256) -> np.ndarray:
    """The first ``n`` colours of the PASCAL VOC colour map, (n, 3) uint8 (class id bits spread over R, G, B).

    Example:
        >>> voc_palette(4).tolist()
        [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]
    """
    ids = np.arange(n)
    rgb = np.zeros((n, 3), dtype=np.int64)
    for shift in range(8):  # bit 3k+c of the id goes to bit 7−k of channel c
        for c in range(3):
            rgb[:, c] |= ((ids >> (3 * shift + c)) & 1) << (7 - shift)
    return rgb.astype(np.uint8)


PALETTE = palette(256)
PALETTE.setflags(write=False)
VOC_PALETTE = voc_palette(256)
VOC_PALETTE.setflags(write=False)


def colorize(labels: np.ndarray | torch.Tensor) -> np.ndarray:
    """Class ids → colours.

    Args:
        labels: (..., H, W) integer class ids in 0..255.

    Returns:
        (..., H, W, 3) uint8 RGB.

    Example:
        >>> colorize(np.array([[0, 2]])).tolist()
        [[[204, 204, 204], [0, 114, 178]]]
    """
    ids = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if ids.size and (ids.min() < 0 or ids.max() > 255):
        raise ValueError(f"labels: expected class ids in 0..255, got {ids.min()}..{ids.max()}")
    return PALETTE[ids.astype(np.int64)]
