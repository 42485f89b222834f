"""``crf-lab refine --volume``: NIfTI and ``.npy`` volumes refined by mean field in 3-D (or 2-D) at once.

:func:`volume_params` fills in what a volume's CRF needs beyond the photo defaults (the spacing, θ in physical
units, θβ in the guide's own units when the user gave none); :func:`refine_volume` reads one volume, makes its
unary (intensity clusters, or ``--prob-dir``) and runs mean field; :func:`encode_volume_outputs` gives the
files: the label volume (NIfTI in the input's space, tagged in its ``descrip`` field, or ``.npy``), Q as
``.npy`` and the orthogonal slices as a PNG.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import io

import numpy as np

from lab.cli.writing import SOFTWARE_TAG

# θα and θγ for volumes when neither --params nor the flag gives them, in spacing units (mm for NIfTI): a
# photo's θα = 80 px is most of a photo, 80 mm most of a brain
VOLUME_THETA_ALPHA = 10.0
VOLUME_THETA_GAMMA = 3.0
# θβ, when not given: this fraction of each channel's 1–99 % intensity range (its units differ per file)
THETA_BETA_FRACTION = 0.1


def _channel_theta_beta(data: np.ndarray) -> tuple[float, ...]:
    """One θβ per channel of a (C, *spatial) guide: :data:`THETA_BETA_FRACTION` of its 1–99 % range."""
    flat = data.reshape(data.shape[0], -1)
    if flat.shape[1] > 1_000_000:  # the percentiles of a strided sample are as good and far cheaper
        flat = flat[:, :: flat.shape[1] // 1_000_000]
    lo, hi = np.percentile(flat, [1.0, 99.0], axis=1)
    return tuple(float(max(THETA_BETA_FRACTION * (h - lo_), 1e-3)) for lo_, h in zip(lo, hi, strict=True))


def volume_params(args: argparse.Namespace, params, volume) -> tuple[object, list[str]]:
    """The CRF parameters for ``volume``: ``params`` with the spacing, and volume defaults where nothing was given.

    With ``--params`` every value comes from the file (and the flags); without, θα and θγ default to
    :data:`VOLUME_THETA_ALPHA` / :data:`VOLUME_THETA_GAMMA` spacing units and θβ to a tenth of each
    channel's 1–99 % range. A θ given per axis / channel must match the volume's axes / channels.
    """
    from lab.crf.params import format_bandwidth

    changes: dict = {"spacing": volume.spacing}
    if not args.params:
        if args.theta_alpha is None:
            changes["theta_alpha"] = VOLUME_THETA_ALPHA
        if args.theta_gamma is None:
            changes["theta_gamma"] = VOLUME_THETA_GAMMA
        if args.theta_beta is None:
            beta = _channel_theta_beta(volume.data)
            changes["theta_beta"] = beta[0] if len(beta) == 1 else beta
    params = dataclasses.replace(params, **changes)
    n, c = len(volume.spatial_shape), volume.channels
    for name, count, what in (
        ("theta_alpha", n, "spatial axes"),
        ("theta_gamma", n, "spatial axes"),
        ("theta_beta", c, "channels"),
    ):
        value = getattr(params, name)
        if isinstance(value, tuple) and len(value) != count:
            raise ValueError(
                f"--{name.replace('_', '-')}: {len(value)} values, but the volume has {count} {what} "
                f"(shape {volume.spatial_shape}, {c} channel(s)); give one number or {count}"
            )
    spacing = " × ".join(f"{s:g}" for s in volume.spacing)
    note = (
        f"spacing {spacing}; θα {format_bandwidth(params.theta_alpha)}, θβ {format_bandwidth(params.theta_beta)}, "
        f"θγ {format_bandwidth(params.theta_gamma)}"
    )
    return params, [note]


def refine_volume(args: argparse.Namespace, path, params, iterations: int, summary):
    """One volume refined: (volume, labels, Q (L, *spatial), notes, ``summary(unary)``'s lines, share relabelled).

    ``summary`` is :func:`lab.cli.report.unary_summary`, handed down (it reads a (1, L, H, W) view of U).

    A ValueError (or FileNotFoundError, MemoryError) for what the user can fix, as for photos.
    """
    import torch

    from lab.cli.args import EXACT_MAX_PIXELS
    from lab.cli.params import mean_field_q
    from lab.cli.plan import companions, find_companion, input_stem
    from lab.data.volumes import load_volume
    from lab.unary.volumes import intensity_clusters, load_volume_probabilities

    volume = load_volume(path, max_voxels=args.max_pixels, spacing=args.spacing)
    voxels = int(np.prod(volume.spatial_shape))
    if args.message_passing == "exact" and voxels > EXACT_MAX_PIXELS:
        raise ValueError(
            f"{voxels:,} voxels is more than the {EXACT_MAX_PIXELS:,} that --message-passing exact allows "
            "(it is O(N²)); use --message-passing lattice (the default)"
        )
    if args.prob_dir:
        where = companions(args)
        source = find_companion(where[0], input_stem(path, args), *where[1:])
        unary, notes = load_volume_probabilities(source, volume.spatial_shape, name=str(source))
    else:
        block = 4 if args.block is None else args.block
        unary, _ = intensity_clusters(volume.data, n_labels=args.labels, block=block, confidence=args.confidence)
        notes = [f"intensity-cluster unary, block {block}"]
    params, more = volume_params(args, params, volume)
    checked = summary(unary.reshape(1, unary.shape[1], -1, volume.spatial_shape[-1]))
    q, labels, changed = mean_field_q(args, unary, torch.from_numpy(volume.data)[None], params, iterations)
    return volume, labels, q, notes + more, checked, changed


def _nifti_bytes(volume, labels: np.ndarray, gz: bool) -> bytes:
    """The label volume as a NIfTI-1 file in the input's space (its affine, zooms and units)."""
    import nibabel as nib

    dtype = np.uint8 if labels.max(initial=0) < 256 else np.uint16
    img = nib.Nifti1Image(labels.astype(dtype), volume.affine)
    src = volume.header
    img.header.set_zooms(tuple(src.get_zooms()[: labels.ndim]))
    img.header.set_xyzt_units(*src.get_xyzt_units())
    for get, put in ((src.get_qform, img.set_qform), (src.get_sform, img.set_sform)):
        matrix, code = get(coded=True)
        if matrix is not None:
            put(matrix, int(code))
    img.header["descrip"] = SOFTWARE_TAG.encode()
    data = img.to_bytes()
    return gzip.compress(data, mtime=0) if gz else data


def encode_volume_outputs(targets: dict, volume, labels: np.ndarray, q: np.ndarray) -> dict:
    """Each target file's contents for a volume: "labels" (NIfTI or .npy), "q" (.npy), "overlay" (PNG)."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from lab.viz import grey_window, orthogonal_slices, overlay

    payloads = {}
    target = targets["labels"]
    if target.name.endswith((".nii", ".nii.gz")):
        payloads[target] = _nifti_bytes(volume, labels, gz=target.name.endswith(".gz"))
    else:
        buf = io.BytesIO()
        np.save(buf, labels.astype(np.uint8 if labels.max(initial=0) < 256 else np.uint16))
        payloads[target] = buf.getvalue()
    if "q" in targets:
        buf = io.BytesIO()
        np.save(buf, q.astype(np.float32))
        payloads[targets["q"]] = buf.getvalue()
    if "overlay" in targets:
        if labels.ndim == 3:
            page = orthogonal_slices(volume.data, labels, spacing=volume.spacing, min_height=256)
        elif labels.ndim == 2:
            page = overlay(np.repeat(grey_window(volume.data[0])[..., None], 3, axis=2), labels)
        else:  # a 1-D signal: one row, stretched to be visible
            page = np.repeat(overlay(np.repeat(grey_window(volume.data[0])[None, :, None], 3, 2), labels[None]), 16, 0)
        info = PngInfo()
        info.add_text("Software", SOFTWARE_TAG)
        buf = io.BytesIO()
        Image.fromarray(page).save(buf, format="PNG", pnginfo=info)
        payloads[targets["overlay"]] = buf.getvalue()
    return payloads
