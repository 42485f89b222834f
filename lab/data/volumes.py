"""Volumes from files: NIfTI (``.nii``, ``.nii.gz``, with nibabel) and NumPy (``.npy``) arrays.

:func:`load_volume` reads a file into a :class:`Volume`: the guide as (C, *spatial) float32 in the file's own
units (Hounsfield units for CT, arbitrary units for MRI; NIfTI's scaling slope and intercept applied), the
voxel spacing per axis and, for NIfTI, the affine and header so that a label volume can be written in the same
space. :func:`volume_shape` reads the size from the header only, so that an oversized volume is refused before
its data is read.

Layouts. NIfTI: the array's axes as stored (i, j, k), the spacing from ``header.get_zooms()``; a 4-D image
(X, Y, Z, C) is C channels (e.g. several MRI contrasts), and a 5-D one with a singleton 4th axis (the NIfTI
way to store vectors) too. ``.npy``: 2-D (H, W) is a one-channel image, 3-D (D, H, W) a one-channel volume,
4-D (C, D, H, W) a volume with C channels; the spacing is 1 per axis unless the caller gives one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lab.errors import Unavailable

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".npy")
NIFTI_SUFFIXES = (".nii.gz", ".nii")
# what the label volumes crf-lab writes carry in their NIfTI header's descrip field
NIFTI_TAG = "crf-lab refine"


class VolumesUnavailable(Unavailable):
    """NIfTI files need nibabel, the ``volumes`` extra."""


@dataclass(frozen=True)
class Volume:
    """A guide read from a file.

    Attributes:
        data: (C, *spatial) float32, finite, in the file's units; 1 to 3 spatial axes.
        spacing: the voxel size per spatial axis, in the tensor's axis order (NIfTI: its zooms, usually mm).
        affine: NIfTI's 4 × 4 voxel-to-world matrix, or None for ``.npy``.
        header: the NIfTI header (copied into the label volume written beside it), or None.
        name: what messages call the file.
    """

    data: np.ndarray
    spacing: tuple[float, ...]
    affine: np.ndarray | None
    header: object | None
    name: str

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """The spatial axes' sizes, (D, H, W) for a 3-D volume."""
        return tuple(self.data.shape[1:])

    @property
    def channels(self) -> int:
        """C, the number of channels."""
        return int(self.data.shape[0])


def volume_suffix(path: str | os.PathLike) -> str | None:
    """The volume suffix of ``path`` (".nii.gz", ".nii", ".npy"; any case), or None."""
    name = os.fspath(path).lower()
    return next((s for s in VOLUME_SUFFIXES if name.endswith(s)), None)


def volume_stem(path: str | os.PathLike) -> str:
    """The file name without its volume suffix: ``"ct.nii.gz"`` → ``"ct"`` (``Path.stem`` would give ``"ct.nii"``).

    Example:
        >>> volume_stem("scans/ct.nii.gz"), volume_stem("a.b.npy"), volume_stem("x.png")
        ('ct', 'a.b', 'x')
    """
    name = Path(path).name
    suffix = volume_suffix(name)
    return name[: -len(suffix)] if suffix else Path(name).stem


def _nibabel():
    try:
        import nibabel
    except ImportError:
        raise VolumesUnavailable(
            "reading NIfTI (.nii, .nii.gz) needs nibabel: pip install 'crf-rnn-lab[volumes]' (or save the volume "
            "as .npy)"
        ) from None
    return nibabel


def _nifti_layout(shape: tuple[int, ...], name: str) -> tuple[tuple[int, ...], int]:
    """A NIfTI image's spatial shape and channel count from its array shape; a ValueError if it is neither."""
    if len(shape) == 5 and shape[3] == 1:
        shape = (*shape[:3], shape[4])
    if len(shape) in (2, 3):
        return tuple(shape), 1
    if len(shape) == 4:
        return tuple(shape[:3]), int(shape[3])
    raise ValueError(f"{name}: expected a 2-D, 3-D or 4-D (X, Y, Z, channels) NIfTI image, got shape {shape}")


def _npy_layout(shape: tuple[int, ...], name: str) -> tuple[tuple[int, ...], int]:
    if len(shape) in (2, 3):
        return tuple(shape), 1
    if len(shape) == 4:
        return tuple(shape[1:]), int(shape[0])
    raise ValueError(
        f"{name}: expected a 2-D (H, W), 3-D (D, H, W) or 4-D (C, D, H, W) array, got shape {tuple(shape)}"
    )


def _check_path(path: str | os.PathLike, name: str) -> str:
    suffix = volume_suffix(path)
    if suffix is None:
        raise ValueError(f"{name}: not a volume file (expected one of {', '.join(VOLUME_SUFFIXES)})")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{name}: no such file")
    if os.path.isdir(path):
        raise ValueError(f"{name}: a folder, not a volume file")
    return suffix


def volume_shape(path: str | os.PathLike, name: str | None = None) -> tuple[tuple[int, ...], int]:
    """(spatial shape, channels) of a volume file, from its header: no voxel data is read."""
    name = os.fspath(path) if name is None else name
    suffix = _check_path(path, name)
    if suffix in NIFTI_SUFFIXES:
        nib = _nibabel()
        try:
            shape = tuple(int(s) for s in nib.load(os.fspath(path)).shape)
        except Exception as exc:  # nibabel raises ImageFileError, EOFError, OSError, ... for a bad file
            raise ValueError(f"{name}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
        return _nifti_layout(shape, name)
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # a corrupt header, pickled objects, ...
        raise ValueError(f"{name}: not a readable .npy file ({type(exc).__name__}: {exc})") from None
    return _npy_layout(tuple(arr.shape), name)


def load_volume(
    path: str | os.PathLike,
    *,
    max_voxels: int | None = None,
    spacing: float | tuple[float, ...] | None = None,
    name: str | None = None,
) -> Volume:
    """Read a NIfTI or ``.npy`` volume (see the module's layouts) as a guide for ``lab.mean_field``.

    Args:
        path: a ``.nii``, ``.nii.gz`` or ``.npy`` file.
        max_voxels: refuse volumes with more voxels than this, checked from the header before reading;
            None: no cap.
        spacing: the voxel size per spatial axis (a number: the same on every axis); overrides the file's.
        name: what to call the file in messages; default the path.

    Returns:
        A :class:`Volume`; ``Volume.data`` is (C, *spatial) float32.

    Raises:
        FileNotFoundError: no such file.
        VolumesUnavailable: a NIfTI file without nibabel installed.
        ValueError: not a readable volume, a layout other than the module's, an integer or float dtype
            missing, NaN or Inf voxels, more than ``max_voxels`` voxels, or a spacing that is not one
            positive number per spatial axis. Every message starts with the file's name.

    Example:
        >>> import tempfile
        >>> f = os.path.join(tempfile.mkdtemp(), "v.npy"); np.save(f, np.zeros((4, 5, 6), np.int16))
        >>> v = load_volume(f, spacing=(2.0, 1.0, 1.0))
        >>> v.data.shape, v.data.dtype, v.spacing
        ((1, 4, 5, 6), dtype('float32'), (2.0, 1.0, 1.0))
    """
    name = os.fspath(path) if name is None else name
    spatial, channels = volume_shape(path, name)
    voxels = int(np.prod(spatial))
    if voxels == 0:
        raise ValueError(f"{name}: an empty volume (shape {spatial})")
    if max_voxels is not None and voxels > max_voxels:
        size = " × ".join(map(str, spatial))
        raise ValueError(
            f"{name}: {size} = {voxels:,} voxels, more than the cap of {max_voxels:,}; refused before reading"
        )
    affine = header = None
    if volume_suffix(path) in NIFTI_SUFFIXES:
        nib = _nibabel()
        try:
            img = nib.load(os.fspath(path))
            raw = np.asarray(img.dataobj)  # the stored values, scaled by the header's slope / intercept
        except Exception as exc:
            raise ValueError(f"{name}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
        raw = raw.reshape(*spatial, channels)
        data = np.moveaxis(raw, -1, 0)
        file_spacing = tuple(float(z) for z in img.header.get_zooms()[: len(spatial)])
        affine, header = np.asarray(img.affine, np.float64), img.header
    else:
        raw = np.load(path, allow_pickle=False)
        data = raw.reshape(channels, *spatial)
        file_spacing = (1.0,) * len(spatial)
    if not (np.issubdtype(data.dtype, np.floating) or np.issubdtype(data.dtype, np.integer)):
        raise ValueError(f"{name}: expected integer or float voxels, got dtype {data.dtype}")
    with np.errstate(over="ignore", invalid="ignore"):
        data = np.ascontiguousarray(data, dtype=np.float32)
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise ValueError(f"{name}: {bad:,} voxels are NaN or Inf (as float32); a guide must be finite")
    if spacing is None:
        spacing = file_spacing
    if not isinstance(spacing, tuple):
        spacing = (float(spacing),) * len(spatial)
    if len(spacing) != len(spatial) or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(
            f"{name}: spacing: expected {len(spatial)} positive numbers (one per spatial axis), got {spacing}"
        )
    return Volume(data, tuple(float(s) for s in spacing), affine, header, name)
