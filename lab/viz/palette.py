"""The fixed class palette: class l always has the same colour, in the notebooks, the app and the files.

Colours follow the PASCAL VOC convention (class id bits spread over the high bits of R, G and B), so a
label PNG written by the lab looks like a VOC annotation: 0 black, 1 dark red, 2 dark green, ...
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["PALETTE", "colorize", "palette"]


def palette(n: int = 256) -> np.ndarray:
    """The first ``n`` palette colours, (n, 3) uint8.

    Example:
        >>> palette(4).tolist()
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


def colorize(labels: np.ndarray | torch.Tensor) -> np.ndarray:
    """Class ids → colours.

    Args:
        labels: (..., H, W) integer class ids in 0..255.

    Returns:
        (..., H, W, 3) uint8 RGB.

    Example:
        >>> colorize(np.array([[0, 2]])).tolist()
        [[[0, 0, 0], [0, 128, 0]]]
    """
    ids = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if ids.size and (ids.min() < 0 or ids.max() > 255):
        raise ValueError(f"labels: expected class ids in 0..255, got {ids.min()}..{ids.max()}")
    return PALETTE[ids.astype(np.int64)]
