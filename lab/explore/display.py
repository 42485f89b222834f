"""What the app puts on screen, as arrays and bytes: label images, lossless and upscaled, legends, colour bars.

Label, arg-max and change images are ids, not photos: a JPEG's blocks and a smoothing upscale invent
colours that belong to no class (a two-colour mask served as JPEG arrives with hundreds). So every such
image is enlarged by whole pixels (:func:`upscale_nearest`) and encoded as PNG (:func:`png_bytes`); the
browser gets exactly the class colours. Continuous maps (Q_t of a class, entropy, the Algorithm-1 stages)
use a fixed colour scale, shared across iterations, with a colour bar (:func:`colorbar_png`).
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from collections.abc import Sequence

import numpy as np
import torch

from lab.explore.changes import flip_map
from lab.viz.palette import PALETTE

__all__ = [
    "DISPLAY_SIDE",
    "change_view",
    "class_colours",
    "colorbar_png",
    "flip_counts",
    "label_image",
    "legend_items",
    "png_bytes",
    "scalar_image",
    "upscale_nearest",
]

# label images are enlarged by a whole factor to about this many pixels on the longer side: the browser then
# shrinks them to the column instead of blowing up a 64-px map with smoothing (Streamlit itself only resizes
# images wider than 1460 px, bilinearly, which would mix the colours again)
DISPLAY_SIDE = 512


def _np(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def upscale_nearest(image: np.ndarray, side: int = DISPLAY_SIDE) -> np.ndarray:
    """Enlarge by the largest whole factor k with k · (longer side) ≤ ``side`` (k ≥ 1), each pixel a k × k block.

    Args:
        image: (H, W) or (H, W, C).
        side: the target longer side in pixels, ≥ 1.

    Returns:
        (k·H, k·W[, C]), the same dtype; no new values.

    Example:
        >>> upscale_nearest(np.array([[1, 2]]), side=4).tolist()
        [[1, 1, 2, 2], [1, 1, 2, 2]]
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3) or 0 in image.shape[:2]:
        raise ValueError(f"image: expected an (H, W) or (H, W, C) array, got shape {image.shape}")
    if isinstance(side, bool) or not isinstance(side, int) or side < 1:
        raise ValueError(f"side: expected a positive int, got {side!r}")
    k = max(1, side // max(image.shape[:2]))
    return image if k == 1 else np.repeat(np.repeat(image, k, axis=0), k, axis=1)


_PNG_COLOUR_TYPES = {1: 0, 3: 2, 4: 6}  # channels → PNG colour type: grey, RGB, RGBA (8 bits each)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(image: np.ndarray, compress_level: int = 1) -> bytes:
    """An (H, W) or (H, W, 3 or 4) uint8 image as PNG bytes: lossless, about twice as fast as Pillow's encoder.

    Every row is stored with PNG's "Sub" filter (each byte minus the byte one pixel to its left, modulo 256),
    then deflated at ``compress_level`` (1: fastest; the app encodes several images per rerun). At 512² an RGB
    photo blend takes ≈ 10 ms here against ≈ 19 ms with Pillow's adaptive filters at level 1, for a file
    about 6 % larger (``benchmarks/display.py``); a flat label map compresses to a few KB either way.

    Example:
        >>> from PIL import Image
        >>> a = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
        >>> np.array_equal(np.asarray(Image.open(io.BytesIO(png_bytes(a)))), a)
        True
    """
    image = np.asarray(image)
    channels = 1 if image.ndim == 2 else (image.shape[2] if image.ndim == 3 else 0)
    if image.dtype != np.uint8 or channels not in _PNG_COLOUR_TYPES or 0 in image.shape[:2]:
        raise ValueError(f"image: expected an (H, W) or (H, W, 3) uint8 array, got {image.shape} {image.dtype}")
    if isinstance(compress_level, bool) or compress_level not in range(10):
        raise ValueError(f"compress_level: expected an int 0..9, got {compress_level!r}")
    h, w = image.shape[:2]
    flat = np.ascontiguousarray(image).reshape(h, w * channels)
    rows = np.empty((h, 1 + w * channels), np.uint8)
    rows[:, 0] = 1  # filter type Sub
    rows[:, 1 : 1 + channels] = flat[:, :channels]
    np.subtract(flat[:, channels:], flat[:, :-channels], out=rows[:, 1 + channels :])  # uint8: modulo 256
    header = struct.pack(">IIBBBBB", w, h, 8, _PNG_COLOUR_TYPES[channels], 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", zlib.compress(rows.data, compress_level)),
            _png_chunk(b"IEND", b""),
        )
    )


def class_colours(num_labels: int, source_colours: np.ndarray | None = None) -> np.ndarray:
    """The colour of each class: the unary source's own (an annotation's colours), else the lab's palette.

    Args:
        num_labels: L, 1..256.
        source_colours: (L, 3) uint8, or None.

    Returns:
        (L, 3) uint8, read-only.

    Example:
        >>> class_colours(2, np.array([[255, 0, 0], [0, 0, 255]], np.uint8)).tolist()
        [[255, 0, 0], [0, 0, 255]]
    """
    if isinstance(num_labels, bool) or not isinstance(num_labels, int | np.integer) or not 1 <= num_labels <= 256:
        raise ValueError(f"num_labels: expected an int in 1..256, got {num_labels!r}")
    if source_colours is None:
        out = PALETTE[:num_labels].copy()
    else:
        out = np.array(source_colours)
        if out.shape != (num_labels, 3) or out.dtype != np.uint8:
            raise ValueError(f"source_colours: expected ({num_labels}, 3) uint8 colours, got {out.shape} {out.dtype}")
    out.setflags(write=False)
    return out


def label_image(
    labels: np.ndarray | torch.Tensor,
    colours: np.ndarray,
    image: np.ndarray | None = None,
    alpha: float = 1.0,
) -> np.ndarray:
    """A label map in its class colours, optionally blended over the photo.

    With ``alpha`` = 1 (or no image) every pixel is exactly its class's colour: the picture holds no colour
    that the legend of the classes present lacks, whatever the labels are (an oscillating mean field too).

    Args:
        labels: (H, W) class ids 0..L−1.
        colours: (L, 3) uint8 (:func:`class_colours`).
        image: (H, W, 3) uint8 to blend over, or None.
        alpha: weight of the label colours, 0..1.

    Returns:
        (H, W, 3) uint8.

    Example:
        >>> label_image(np.array([[1, 0]]), np.array([[0, 0, 0], [250, 0, 0]], np.uint8)).tolist()
        [[[250, 0, 0], [0, 0, 0]]]
    """
    ids = _np(labels)
    colours = np.asarray(colours)
    if ids.ndim != 2:
        raise ValueError(f"labels: expected an (H, W) map, got shape {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= len(colours)):
        raise ValueError(f"labels: expected class ids in 0..{len(colours) - 1}, got {ids.min()}..{ids.max()}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha: expected a number in 0..1, got {alpha!r}")
    out = colours[ids.astype(np.int64)]
    if image is None or alpha == 1:
        return out
    if np.asarray(image).shape != out.shape:
        raise ValueError(f"image: expected shape {out.shape} like the labels, got {np.asarray(image).shape}")
    blend = (1 - alpha) * np.asarray(image, np.float64) + alpha * out.astype(np.float64)
    return np.clip(np.rint(blend), 0, 255).astype(np.uint8)


def legend_items(classes: Sequence[int], names: Sequence[str], colours: np.ndarray) -> list[tuple[int, str, tuple]]:
    """``(id, name, (r, g, b))`` for each class shown, in the given order (the classes present)."""
    return [(int(c), str(names[c]), tuple(int(v) for v in colours[c])) for c in classes]


def flip_counts(
    before: np.ndarray | torch.Tensor, after: np.ndarray | torch.Tensor, num_classes: int
) -> list[tuple[int, int, int]]:
    """The pixels that changed class, per old → new pair: ``(old, new, pixels)``, most pixels first.

    Ties are ordered by (old, new).

    Example:
        >>> flip_counts(np.array([[0, 1, 1, 2]]), np.array([[0, 0, 0, 1]]), 3)
        [(1, 0, 2), (2, 1, 1)]
    """
    ids = flip_map(before, after, num_classes=num_classes)  # old · L + new, −1 where unchanged
    pair_ids, counts = np.unique(ids[ids >= 0], return_counts=True)
    order = np.argsort(-counts, kind="stable")
    return [(*divmod(int(pair_ids[i]), num_classes), int(counts[i])) for i in order]


def change_view(
    image: np.ndarray,
    before: np.ndarray | torch.Tensor,
    after: np.ndarray | torch.Tensor,
    num_classes: int,
    colours: np.ndarray,
    dim: float = 0.3,
) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """The relabelled pixels in their new class's colour over the faded photo, and the flips per old → new pair.

    The view is :func:`lab.explore.voc_view.flip_view`'s and the pairs :func:`flip_counts`', computed on the
    changed pixels only (the app draws two of these every time t moves).

    Args:
        image: (H, W, 3) uint8 RGB.
        before: (H, W) class ids before (the unary's arg-max, or Q_{t−1}'s).
        after: (H, W) class ids after.
        num_classes: L, above every id.
        colours: (L, 3) uint8 class colours.
        dim: how much of the grey's contrast the unchanged pixels keep, 0..1.

    Returns:
        (view (H, W, 3) uint8, [(old, new, pixels), …] most pixels first).

    Example:
        >>> view, pairs = change_view(np.full((1, 2, 3), 155, np.uint8), np.array([[0, 1]]), np.array([[0, 0]]), 2,
        ...                           np.array([[10, 20, 30], [40, 50, 60]], np.uint8))
        >>> view.tolist(), pairs
        ([[[225, 225, 225], [10, 20, 30]]], [(1, 0, 1)])
    """
    from lab.explore.voc_view import faded_grey

    old, new, colours = _np(before), _np(after), np.asarray(colours)
    if old.shape != new.shape or old.shape != np.asarray(image).shape[:2]:
        raise ValueError(
            f"before, after: expected the image's shape {np.asarray(image).shape[:2]}, got {old.shape} and {new.shape}"
        )
    if not (np.issubdtype(old.dtype, np.integer) and np.issubdtype(new.dtype, np.integer)):
        raise TypeError(f"before, after: expected integer class ids, got {old.dtype} and {new.dtype}")
    if len(colours) < num_classes:
        raise ValueError(f"colours: expected ({num_classes}, 3) class colours, got {colours.shape}")
    if old.size and (min(old.min(), new.min()) < 0 or max(old.max(), new.max()) >= num_classes):
        raise ValueError(f"before, after: expected class ids in 0..{num_classes - 1}")
    changed = old != new  # only the changed pixels are read below: the few along edges, not all H·W
    out = faded_grey(image, dim)
    out[changed] = colours[new[changed]]
    pair_ids, counts = np.unique(old[changed].astype(np.int64) * num_classes + new[changed], return_counts=True)
    order = np.argsort(-counts, kind="stable")
    return out, [(*divmod(int(pair_ids[i]), num_classes), int(counts[i])) for i in order]


def scalar_image(values: np.ndarray | torch.Tensor, vmin: float, vmax: float, cmap: str = "viridis") -> np.ndarray:
    """A continuous map in a colormap on a fixed scale (the same ``vmin``..``vmax`` for every t), (H, W, 3) uint8."""
    from matplotlib import colormaps

    v = _np(values).astype(np.float64)
    if v.ndim != 2:
        raise ValueError(f"values: expected an (H, W) map, got shape {v.shape}")
    if not vmax > vmin:
        raise ValueError(f"vmax: expected a number above vmin = {vmin!r}, got {vmax!r}")
    scaled = np.clip((v - vmin) / (vmax - vmin), 0, 1)
    return (colormaps[cmap](scaled)[..., :3] * 255).round().astype(np.uint8)


@functools.lru_cache(maxsize=64)
def colorbar_png(vmin: float, vmax: float, label: str, cmap: str = "viridis") -> bytes:
    """A horizontal colour bar from ``vmin`` to ``vmax`` with its label, as PNG bytes (drawn once per scale)."""
    from matplotlib.colorbar import ColorbarBase
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.2, 0.62), dpi=100)
    ax = fig.add_axes((0.05, 0.55, 0.9, 0.3))
    ColorbarBase(ax, cmap=cmap, norm=Normalize(vmin, vmax), orientation="horizontal")
    ax.tick_params(labelsize=7)
    ax.set_title(label, fontsize=7, pad=2)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
