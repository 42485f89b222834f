"""Unaries for volumes and other non-RGB guides (B = 1, (C, *spatial) guides with 1 to 3 spatial axes).

:func:`intensity_clusters` is the volume counterpart of :func:`lab.unary.coarse_colour_clusters`: a blocky
unary from k-means on block-averaged intensities, whose edges mean field then moves onto the volume's.
:func:`load_volume_probabilities` reads a network's probability or score volume (``.npy`` / ``.npz`` or a 4-D
NIfTI) laid out (L, *spatial) or (*spatial, L).
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

from lab.unary.convert import unary_from_labels
from lab.unary.sources import MAX_LABELS, _kmeans, _read_array, _source_name, check_cluster_options

_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
_NPZ_KEYS = ("prob", "probs", "q", "unary", "logits")


def intensity_clusters(
    volume: np.ndarray, n_labels: int = 3, block: int = 4, confidence: float = 0.6, seed: int = 0
) -> tuple[torch.Tensor, np.ndarray]:
    """A blocky unary from intensity clusters of a (C, *spatial) guide.

    The guide is averaged over ``block``-sided tiles; the tiles' values (each channel divided by its spread
    over the tiles, so that channels in different units count alike) are clustered into ``n_labels`` groups
    (k-means, seeded); each voxel gets its tile's cluster with probability ``confidence`` and the others share
    the rest. Clusters are numbered from dark to bright (by their mean over channels).

    Args:
        volume: (C, *spatial) real values, 1 to 3 spatial axes, finite.
        n_labels: L ≥ 2 clusters.
        block: tile side in voxels, ≥ 1.
        confidence: the probability of the tile's cluster, in (1/L, 1).
        seed: k-means seed.

    Returns:
        U (1, L, *spatial) float32, and the blocky labels (*spatial) int64.

    Example:
        >>> v = np.zeros((1, 8, 8, 8), np.float32); v[:, :, :, 4:] = 100.0
        >>> u, labels = intensity_clusters(v, n_labels=2, block=2)
        >>> u.shape, labels[0, 0, 0].item(), labels[0, 0, 7].item()
        (torch.Size([1, 2, 8, 8, 8]), 0, 1)
    """
    volume = np.asarray(volume)
    if volume.ndim not in (2, 3, 4):
        raise ValueError(f"volume: expected (C, *spatial) with 1 to 3 spatial axes, got shape {volume.shape}")
    check_cluster_options(n_labels, block, confidence)
    x = torch.from_numpy(np.array(volume, dtype=np.float32))[None]  # (1, C, *spatial), a copy
    if not bool(torch.isfinite(x).all()):
        raise ValueError("volume: expected finite values, got NaN or Inf")
    spatial = tuple(x.shape[2:])
    n = len(spatial)
    tiles = _POOL[n](x, block, ceil_mode=True)
    values = tiles[0].reshape(x.shape[1], -1).T  # (tiles, C)
    spread = values.std(0).clamp_min(1e-6)
    centres = _kmeans(values / spread, n_labels, seed)
    centres = centres[centres.mean(1).argsort()]  # dark → bright
    tile_labels = torch.cdist(values / spread, centres).argmin(1).view(1, 1, *tiles.shape[2:]).float()
    up = F.interpolate(tile_labels, scale_factor=(block,) * n, mode="nearest")
    labels = up[(0, 0, *(slice(0, s) for s in spatial))].long()
    unary = unary_from_labels(labels.reshape(1, 1, -1), n_labels, gt_prob=confidence, zero_unsure=False)
    return unary.reshape(1, n_labels, *spatial).contiguous(), labels.numpy()


def load_volume_probabilities(
    source: str | os.PathLike, spatial_shape: tuple[int, ...], name: str | None = None
) -> tuple[torch.Tensor, list[str]]:
    """U from a probability or score volume on the guide's grid.

    Layout (L, *spatial) or (*spatial, L), recognised by which one matches ``spatial_shape`` exactly (a volume
    is never resampled: a map on another grid is refused, naming both shapes). Values that are probabilities
    (in 0..1, summing to 1 over L) become log p, anything else is taken as logits.

    Args:
        source: ``.npy``, ``.npz`` (one array or one named prob / probs / q / unary / logits), or a 4-D NIfTI
            (X, Y, Z, L), read with nibabel.
        spatial_shape: the guide's spatial shape.
        name: what messages call the file; default the path.

    Returns:
        U (1, L, *spatial) float32, and notes for the user (layout, interpretation).

    Example:
        >>> import io, tempfile
        >>> f = os.path.join(tempfile.mkdtemp(), "p.npy"); np.save(f, np.full((3, 4, 5, 2), 0.5))
        >>> u, notes = load_volume_probabilities(f, (3, 4, 5))
        >>> u.shape, notes
        (torch.Size([1, 2, 3, 4, 5]), ['read as (*spatial, L) with L = 2', 'values are probabilities: U = log p'])
    """
    from lab.data.volumes import NIFTI_SUFFIXES, _nibabel, volume_suffix

    name = _source_name(source, name)
    if not os.path.exists(source):
        raise FileNotFoundError(f"{name}: no such file")
    if volume_suffix(source) in NIFTI_SUFFIXES:
        nib = _nibabel()
        try:
            arr = np.asarray(nib.load(os.fspath(source)).dataobj)
        except Exception as exc:
            raise ValueError(f"{name}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    else:
        arr = _read_array(source, name, _NPZ_KEYS)
    spatial = tuple(spatial_shape)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name}: expected integer or float values, got dtype {arr.dtype}")
    if arr.ndim == len(spatial) + 1 and tuple(arr.shape[1:]) == spatial:
        notes = [f"read as (L, *spatial) with L = {arr.shape[0]}"]
    elif arr.ndim == len(spatial) + 1 and tuple(arr.shape[:-1]) == spatial:
        arr = np.moveaxis(arr, -1, 0)
        notes = [f"read as (*spatial, L) with L = {arr.shape[0]}"]
    else:
        raise ValueError(
            f"{name}: shape {tuple(arr.shape)} is neither (L, *spatial) nor (*spatial, L) for the guide's "
            f"spatial shape {spatial}; a volume's map must be on the same grid (it is not resampled)"
        )
    if not 2 <= arr.shape[0] <= MAX_LABELS:
        raise ValueError(f"{name}: expected 2 to {MAX_LABELS} labels, got {arr.shape[0]}")
    with np.errstate(over="ignore", invalid="ignore"):
        x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: expected finite values (as float32), got NaN or Inf")
    sums = x.sum(0)
    if float(x.min()) >= 0 and float(x.max()) <= 1 and bool(torch.allclose(sums, torch.ones_like(sums), atol=1e-3)):
        notes.append("values are probabilities: U = log p")
        x = torch.log(x.clamp_min(1e-5))
    else:
        notes.append("values are not probabilities: taken as logits (U = values)")
    return x[None].contiguous(), notes
