"""Unary sources that need no trained model, each returning U = log p as (1, L, H, W) float32.

* :func:`coarse_colour_clusters` — k-means on a block-averaged copy of the image, upsampled blocky: works
  on any image and shows at once what the CRF does to blocky boundaries.
* :func:`unary_from_annotation` — an annotation image (one colour per label, black = unknown), as
  pydensecrf's ``unary_from_labels`` examples.
* :func:`load_probability_map` — a saved (H, W, L) or (L, H, W) array of probabilities or scores.
"""

from __future__ import annotations

import io
import os
import re

import numpy as np
import torch
import torch.nn.functional as F

from lab.unary.convert import unary_from_labels, unary_from_softmax

__all__ = [
    "MAX_LABELS",
    "coarse_colour_clusters",
    "load_compat",
    "load_probability_map",
    "unary_from_annotation",
    "unary_from_coarse_labels",
]

_NPZ_KEYS = ("prob", "probs", "probabilities", "q", "unary", "logits", "scores")

MAX_LABELS = 256
"""The most labels a source gives unless told otherwise: label maps are written as palette PNGs, whose
pixel values are 0..255, and the lab's palette has 256 colours."""


def _check_rgb(image: np.ndarray, name: str = "image") -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{name}: expected an (H, W, 3) RGB array, got shape {image.shape}")
    return image


def _kmeans(x: torch.Tensor, k: int, seed: int, iterations: int = 25) -> torch.Tensor:
    """Cluster centres of (n, c) points: k-means++ seeding, then Lloyd iterations. Deterministic."""
    g = torch.Generator().manual_seed(seed)
    centres = [x[torch.randint(len(x), (1,), generator=g)].squeeze(0)]
    for _ in range(1, k):
        d2 = torch.cdist(x, torch.stack(centres)).square().min(1).values
        if float(d2.sum()) == 0:  # fewer distinct colours than k: repeat one
            centres.append(centres[-1])
            continue
        centres.append(x[torch.multinomial(d2, 1, generator=g)].squeeze(0))
    c = torch.stack(centres)
    for _ in range(iterations):
        assign = torch.cdist(x, c).argmin(1)
        for j in range(k):
            members = x[assign == j]
            if len(members):
                c[j] = members.mean(0)
    return c


def check_cluster_options(n_labels: int, block: int, confidence: float) -> None:
    """The cluster unaries' options: L an integer ≥ 2, a block ≥ 1, a confidence in (1/L, 1)."""
    if int(n_labels) != n_labels or n_labels < 2:
        raise ValueError(f"n_labels: expected an integer >= 2, got {n_labels!r}")
    if int(block) != block or block < 1:
        raise ValueError(f"block: expected an integer >= 1, got {block!r}")
    if not 1.0 / n_labels < confidence < 1:
        raise ValueError(f"confidence: expected a number in (1/L, 1) = ({1 / n_labels:.3f}, 1), got {confidence!r}")


def coarse_colour_clusters(
    image: np.ndarray, n_labels: int = 4, block: int = 16, confidence: float = 0.6, seed: int = 0
) -> tuple[torch.Tensor, np.ndarray]:
    """A blocky unary from colour clusters: the CRF's job is then to move the block edges onto the image's.

    The image is averaged over ``block`` × ``block`` tiles; the tile colours are clustered into ``n_labels``
    groups (k-means, seeded); each pixel gets its tile's cluster with probability ``confidence``, the
    others share the rest. Clusters are numbered from dark to bright, so the colours stay stable.

    Args:
        image: (H, W, 3) uint8 RGB.
        n_labels: L ≥ 2 clusters.
        block: tile size in pixels, ≥ 1.
        confidence: probability of the tile's cluster, in (1/L, 1).
        seed: k-means seed.

    Returns:
        U (1, L, H, W) float32, and the (H, W) int64 blocky labels.

    Example:
        >>> img = np.zeros((32, 32, 3), np.uint8); img[:, 16:] = 255
        >>> u, labels = coarse_colour_clusters(img, n_labels=2, block=8)
        >>> u.shape, labels[0, 0].item(), labels[0, 31].item()
        (torch.Size([1, 2, 32, 32]), 0, 1)
    """
    image = _check_rgb(image)
    check_cluster_options(n_labels, block, confidence)
    h, w, _ = image.shape
    x = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1)[None]  # (1, 3, H, W), a copy
    tiles = F.avg_pool2d(x, block, ceil_mode=True)  # (1, 3, h', w')
    colours = tiles[0].permute(1, 2, 0).reshape(-1, 3)
    centres = _kmeans(colours, n_labels, seed)
    centres = centres[centres.sum(1).argsort()]  # dark → bright
    tile_labels = torch.cdist(colours, centres).argmin(1).view(1, 1, *tiles.shape[2:]).float()
    labels = F.interpolate(tile_labels, scale_factor=block, mode="nearest")[0, 0, :h, :w].long()
    unary = unary_from_labels(labels[None], n_labels, gt_prob=confidence, zero_unsure=False)
    return unary, labels.numpy()


def unary_from_coarse_labels(
    labels: torch.Tensor, n_labels: int, stride: int = 8, confidence: float = 0.8
) -> torch.Tensor:
    """A stand-in for a stride-``stride`` CNN: the true labels seen at 1/stride resolution, upsampled.

    One-hot labels are averaged over stride × stride tiles (what an output-stride-8 network can resolve at
    best), upsampled bilinearly (blurry, boundary-poor), and mixed with the uniform distribution so the
    most confident label has at most ``confidence``: a unary with exactly the failure the CRF fixes.

    Args:
        labels: (B, H, W) int64 class ids in 0..L−1.
        n_labels: L.
        stride: tile size, ≥ 1.
        confidence: weight of the tiled labels against the uniform distribution, in (0, 1].

    Returns:
        (B, L, H, W) U = log p.

    Example:
        >>> u = unary_from_coarse_labels(torch.zeros(1, 16, 16, dtype=torch.long), 2, stride=8, confidence=0.8)
        >>> u.exp()[0, :, 0, 0]
        tensor([0.9000, 0.1000])
    """
    if labels.dim() != 3 or labels.is_floating_point():
        raise ValueError(f"labels: expected a (B, H, W) integer tensor, got {labels.dtype} {tuple(labels.shape)}")
    if int(stride) != stride or stride < 1:
        raise ValueError(f"stride: expected an integer >= 1, got {stride!r}")
    onehot = F.one_hot(labels.long(), n_labels).permute(0, 3, 1, 2).float()
    tiles = F.avg_pool2d(onehot, stride, ceil_mode=True)
    prob = F.interpolate(tiles, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    return unary_from_softmax(prob, scale=confidence)


def unary_from_annotation(
    annotation: np.ndarray,
    confidence: float = 0.7,
    shape: tuple[int, int] | None = None,
    *,
    name: str = "annotation",
    max_labels: int | None = MAX_LABELS,
) -> tuple[torch.Tensor, np.ndarray]:
    """U from an annotation image: each distinct non-black colour is a label, black means unknown.

    As in pydensecrf's examples: annotated pixels get their label with probability ``confidence``; unknown
    pixels get a uniform distribution and are left to the CRF.

    Args:
        annotation: (H, W, 3) uint8, drawn over (or beside) the image.
        confidence: probability of the annotated label, in (0, 1).
        shape: the image's (H, W); the annotation must match it.
        name: what to call the annotation in messages (e.g. its file name).
        max_labels: refuse annotations with more colours than this (:data:`MAX_LABELS`, 256: what a palette
            PNG label map holds); ``None`` allows any number.

    Returns:
        U (1, L, H, W) float32 and the (L, 3) uint8 colours of labels 0..L−1 (sorted by colour value).

    Example:
        >>> ann = np.zeros((2, 3, 3), np.uint8); ann[0, 0] = (255, 0, 0); ann[1, 2] = (0, 0, 255)
        >>> u, colours = unary_from_annotation(ann)
        >>> u.shape, colours.tolist()
        (torch.Size([1, 2, 2, 3]), [[0, 0, 255], [255, 0, 0]])
    """
    annotation = _check_rgb(annotation, name)
    if annotation.dtype != np.uint8 and not (
        np.issubdtype(annotation.dtype, np.integer) and annotation.min() >= 0 and annotation.max() <= 255
    ):
        raise ValueError(f"{name}: expected uint8 colours 0..255, got {annotation.dtype}")
    if shape is not None and tuple(annotation.shape[:2]) != tuple(shape):
        raise ValueError(f"{name}: expected size {tuple(shape)} (H, W) like the image, got {annotation.shape[:2]}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: expected a number in (0, 1), got {confidence!r}")
    flat = annotation.reshape(-1, 3).astype(np.int64)
    code = (flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2]
    values, inverse = np.unique(code, return_inverse=True)
    known = values != 0  # black = unknown
    n_colours = int(known.sum())
    if n_colours < 2:
        raise ValueError(f"{name}: expected at least two label colours besides black, got {n_colours}")
    if max_labels is not None and n_colours > max_labels:
        raise ValueError(
            f"{name}: {n_colours} colours besides black, more than the {max_labels}-label limit (label maps are "
            "palette PNGs, values 0..255); an annotation is drawn in a few flat colours, while a photo or a "
            "JPEG-compressed annotation has thousands"
        )
    # labels: 0 = unknown, 1..L = the colours in sorted order
    index = np.cumsum(known) * known
    labels = index[inverse].reshape(annotation.shape[:2])
    colours = values[known]
    rgb = np.stack([(colours >> 16) & 255, (colours >> 8) & 255, colours & 255], 1).astype(np.uint8)
    unary = unary_from_labels(torch.from_numpy(labels)[None], len(colours), gt_prob=confidence, zero_unsure=True)
    return unary, rgb


def _source_name(source: object, name: str | None) -> str:
    if name is not None:
        return name
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "the uploaded bytes"
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    raise TypeError(f"source: expected a path or bytes, got {type(source).__name__}")


def _load_failure(exc: BaseException) -> str:
    """Why numpy refused a file, in a user's words."""
    text = re.sub(r"<([\w.]+) object at 0x[0-9a-fA-F]+>", r"\1", str(exc))  # no reprs of numpy's internals
    if "allow_pickle" in text or "pickle" in type(exc).__name__.lower():
        return "it holds pickled Python objects, which are never loaded because they can run code; save a numeric array"
    if "malformed node" in text or "header" in text.lower():
        return f"its .npy header is corrupt ({type(exc).__name__}: {text})"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _read_array(source: str | os.PathLike | bytes, name: str, keys: tuple[str, ...]) -> np.ndarray:
    """The array in a .npy, or the one (or the named one) in an .npz; a ``ValueError`` naming ``name`` otherwise."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ValueError(f"{name}: not a readable .npy/.npz file (empty: 0 bytes)")
        target: io.BytesIO | str | os.PathLike = io.BytesIO(bytes(source))
    elif isinstance(source, (str, os.PathLike)):
        if not os.path.exists(source):
            raise FileNotFoundError(f"{name}: no such file")
        if os.path.isdir(source):
            raise ValueError(f"{name}: a folder, not a .npy/.npz file")
        target = source
    else:
        raise TypeError(f"source: expected a path or bytes, got {type(source).__name__}")
    try:
        loaded = np.load(target, allow_pickle=False)
    except Exception as exc:  # numpy raises many types for a bad file (ValueError, EOFError, BadZipFile, OSError)
        raise ValueError(f"{name}: not a readable .npy/.npz file ({_load_failure(exc)})") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        return loaded
    with loaded:
        names = list(loaded.files)
        if not names:
            raise ValueError(f"{name}: an .npz with no arrays in it")
        key = next((k for k in keys if k in names), names[0] if len(names) == 1 else None)
        if key is None:
            raise ValueError(f"{name}: an .npz with several arrays {names}; name one of them {list(keys)}")
        try:
            return loaded[key]  # read and decompressed here: a corrupt member fails now
        except Exception as exc:  # zlib.error, BadZipFile, EOFError, ValueError, ...
            raise ValueError(f"{name}: array {key!r} of the .npz is not readable ({_load_failure(exc)})") from None


def _check_numeric(arr: np.ndarray, name: str, expected: str) -> None:
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name}: expected {expected} of integers or floats, got dtype {arr.dtype} {arr.shape}")


def load_probability_map(
    source: str | os.PathLike | bytes,
    shape: tuple[int, int],
    name: str | None = None,
    *,
    max_labels: int | None = MAX_LABELS,
) -> tuple[torch.Tensor, list[str]]:
    """U from a saved probability or score map, resized to the image.

    Layout (H, W, L) or (L, H, W) is recognised by the axis that matches the image's aspect (else the
    smallest axis is L). Values that are probabilities (in 0..1, summing to 1 over L) become log p;
    anything else is taken as logits.

    Args:
        source: a path or the file's bytes (.npy, or .npz with one array or a key among prob/probs/q/unary/logits).
        shape: the image's (H, W).
        name: what to call the file in messages; default the path, or "the uploaded bytes".
        max_labels: refuse maps with more labels (:data:`MAX_LABELS`, 256: what a palette PNG label map
            holds); ``None`` allows any number.

    Returns:
        U (1, L, H, W) float32, and notes for the user (layout, interpretation, resizing).

    Raises:
        FileNotFoundError: the path does not exist.
        TypeError: ``source`` is neither a path nor bytes.
        ValueError: the file is not a readable .npy/.npz (truncated, corrupt, pickled objects, an .npz member
            missing or corrupt), or its array is not a 3-D map of finite integers or floats with 2 to
            ``max_labels`` labels. Every message starts with the file's name.

    Example:
        >>> buf = io.BytesIO(); np.save(buf, np.full((4, 5, 2), 0.5))
        >>> u, notes = load_probability_map(buf.getvalue(), (4, 5), name="p.npy")
        >>> u.shape, notes[0]
        (torch.Size([1, 2, 4, 5]), 'read as (H, W, L) with L = 2')
    """
    name = _source_name(source, name)
    arr = _read_array(source, name, _NPZ_KEYS)
    if arr.ndim != 3:
        raise ValueError(f"{name}: expected a 3-D numeric array (H, W, L) or (L, H, W), got {arr.dtype} {arr.shape}")
    _check_numeric(arr, name, "a 3-D array (H, W, L) or (L, H, W)")
    if 0 in arr.shape:
        raise ValueError(f"{name}: expected a non-empty array, got shape {arr.shape}")
    h, w = shape
    notes = []
    aspect = h / w
    hwl = arr.shape[0] / arr.shape[1]
    lhw = arr.shape[1] / arr.shape[2]
    if arr.shape[:2] == (h, w) or (arr.shape[1:] != (h, w) and abs(np.log(hwl / aspect)) < abs(np.log(lhw / aspect))):
        arr = np.moveaxis(arr, 2, 0)
        notes.append(f"read as (H, W, L) with L = {arr.shape[0]}")
    else:
        notes.append(f"read as (L, H, W) with L = {arr.shape[0]}")
    if arr.shape[0] < 2:
        raise ValueError(f"{name}: expected at least 2 labels, got {arr.shape[0]}")
    if max_labels is not None and arr.shape[0] > max_labels:
        raise ValueError(
            f"{name}: {arr.shape[0]} labels ({notes[0][5:]}), more than the {max_labels}-label limit "
            "(label maps are palette PNGs, values 0..255)"
        )
    with np.errstate(over="ignore", invalid="ignore"):  # Inf and NaN after the cast are refused just below
        x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: expected finite values (as float32), got NaN or Inf")
    sums = x.sum(0)
    if float(x.min()) >= 0 and float(x.max()) <= 1 and bool(torch.allclose(sums, torch.ones_like(sums), atol=1e-3)):
        unary = torch.log(x.clamp_min(1e-5))
        notes.append("values are probabilities: U = log p")
    else:
        unary = x
        notes.append("values are not probabilities: taken as logits (U = values)")
    if tuple(unary.shape[1:]) != (h, w):
        notes.append(f"resized from {tuple(unary.shape[1:])} to the image's {(h, w)}")
        unary = F.interpolate(unary[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    return unary[None].contiguous(), notes


def load_compat(source: str | os.PathLike | bytes, num_labels: int, name: str | None = None) -> torch.Tensor:
    """An (L, L) compatibility matrix µ from a .npy/.npz file (row l: the penalty of l against each l').

    Args:
        source: a path or the file's bytes (.npy, or .npz with one array or one named compat or mu).
        num_labels: L.
        name: what to call the file in messages; default the path, or "the uploaded bytes".

    Returns:
        µ (L, L) float32.

    Raises:
        FileNotFoundError: the path does not exist.
        TypeError: ``source`` is neither a path nor bytes.
        ValueError: the file is unreadable or its array is not (L, L) finite integers or floats; the message
            starts with the file's name.

    Example:
        >>> buf = io.BytesIO(); np.save(buf, 1 - np.eye(3)); load_compat(buf.getvalue(), 3).shape
        torch.Size([3, 3])
    """
    name = _source_name(source, name)
    arr = _read_array(source, name, ("compat", "mu"))
    if arr.shape != (num_labels, num_labels):
        raise ValueError(f"{name}: expected an ({num_labels}, {num_labels}) numeric array, got {arr.dtype} {arr.shape}")
    _check_numeric(arr, name, f"an ({num_labels}, {num_labels}) array")
    with np.errstate(over="ignore", invalid="ignore"):
        mu = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    if not bool(torch.isfinite(mu).all()):
        raise ValueError(f"{name}: expected finite values (as float32), got NaN or Inf")
    return mu
