"""Feature images for the two dense-CRF kernels, already divided by their bandwidths, in 1, 2 or 3 dimensions.

A guide is (B, C, *spatial) with 1 (W), 2 (H, W) or 3 (D, H, W) spatial axes and any C ≥ 1 channels. The
position features come first, one per spatial axis in *reversed* axis order (x = the last axis, then y, then
z: pydensecrf's x = column, y = row for photos), then the C channels. Positions are in voxels, or in physical
units when a ``spacing`` (units per voxel, one per spatial axis in the tensor's axis order) is given.
Per-axis bandwidths are given in the tensor's axis order too ((θ_y, θ_x) for (H, W), (θ_z, θ_y, θ_x) for
(D, H, W)); per-channel ones in channel order.

Channel values are in their own units: a (B, 3, H, W) guide is an RGB photo in 0..255 (checked: the
pydensecrf convention θβ is tuned for); any other guide (grayscale, multispectral, a CT in Hounsfield units,
an MRI in arbitrary units, a volume) is only required to be finite. Features are computed in float64 and
rounded once to the requested dtype; a bandwidth so small that a feature would not fit that dtype is
refused, never returned as Inf or NaN.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch

from lab._checks import check_finite, check_tensor, data_checks_enabled

__all__ = ["SPATIAL_AXES", "bilateral_features", "check_guide", "is_rgb", "spatial_features"]

_IMAGE_SLACK = 0.5  # colours are 0..255; allow rounding (resampled images overshoot by a fraction)
SPATIAL_AXES = {1: "W", 2: "H, W", 3: "D, H, W"}  # the spatial shapes a guide may have, by number of axes
_GUIDE_SHAPES = "(B, C, W), (B, C, H, W) or (B, C, D, H, W)"
_SIZE_NAMES = {1: ("width",), 2: ("height", "width"), 3: ("depth", "height", "width")}

Bandwidth = float | torch.Tensor | Sequence[float]


def is_rgb(image: torch.Tensor) -> bool:
    """Whether a guide is what the lab treats as an RGB photo: (B, 3, H, W), colours in 0..255.

    Example:
        >>> is_rgb(torch.zeros(1, 3, 4, 4)), is_rgb(torch.zeros(1, 1, 4, 4)), is_rgb(torch.zeros(1, 3, 2, 4, 4))
        (True, False, False)
    """
    return image.dim() == 4 and image.shape[1] == 3


def check_guide(image: object, name: str = "image") -> tuple[float, float] | None:
    """Check a guide (B, C, *spatial), 1–3 spatial axes, C ≥ 1, real; return its value range when it was read.

    Refuses (naming the argument): a non-tensor, another rank, no channels, an empty guide, a shape that looks
    channels-last (a last axis of 3 or 4 and more than 4 channels: (B, H, W, 3) passed for (B, 3, H, W)), bool
    or complex dtypes (``TypeError``); with the value checks on (:func:`lab.set_data_checks`): NaN/Inf, and
    for an RGB photo (:func:`is_rgb`) colours outside 0..255 (±0.5).

    Returns:
        (lo, hi), the guide's smallest and largest value, when the value checks read them; else None
        (value checks off, or a uint8 photo, whose range is known).

    Example:
        >>> check_guide(torch.full((1, 1, 2, 3, 4), -1000.0))  # a CT volume in Hounsfield units
        (-1000.0, -1000.0)
    """
    check_tensor(image, name)
    if image.dim() - 2 not in SPATIAL_AXES:
        raise ValueError(f"{name}: expected shape {_GUIDE_SHAPES}, got {tuple(image.shape)}")
    if image.dtype == torch.bool or image.is_complex():
        what = "uint8 or real colours in 0..255" if is_rgb(image) else "a real (integer or float) tensor"
        raise TypeError(f"{name}: expected {what}, got {image.dtype}")
    if image.numel() == 0:
        raise ValueError(f"{name}: expected at least one channel and one pixel, got shape {tuple(image.shape)}")
    if image.dim() >= 4 and image.shape[-1] in (3, 4) and image.shape[1] > 4:
        raise ValueError(
            f"{name}: shape {tuple(image.shape)} looks channels-last ((B, H, W, C)): expected channels first, "
            f"(B, C, *spatial); use image.movedim(-1, 1)"
        )
    if not data_checks_enabled() or (image.dtype == torch.uint8 and is_rgb(image)):
        return None
    check_finite(image, name)
    lo, hi = (float(v) for v in torch.aminmax(image.detach()))
    if is_rgb(image) and (lo < -_IMAGE_SLACK or hi > 255 + _IMAGE_SLACK):
        raise ValueError(f"{name}: expected colours in 0..255, got values in {lo:.4g}..{hi:.4g}")
    return lo, hi


def _grid(batch: int, spatial: Sequence[int], spacing: tuple[float, ...] | None, device) -> torch.Tensor:
    """(B, n, *spatial) float64 positions: channel k is the coordinate along axis n−1−k (x, then y, then z).

    Times the axis' spacing when one is given.
    """
    n = len(spatial)
    axes = torch.meshgrid(*(torch.arange(s, device=device, dtype=torch.float64) for s in spatial), indexing="ij")
    coords = [axes[n - 1 - k] if spacing is None else axes[n - 1 - k] * spacing[n - 1 - k] for k in range(n)]
    return torch.stack(coords).expand(batch, n, *spatial)


def _bandwidth(theta: object, name: str) -> float | torch.Tensor:
    """A bandwidth > 0: a real number (returned as float) or a 0-d real tensor (returned as is, graph kept)."""
    if isinstance(theta, torch.Tensor):
        if theta.dim() != 0:
            raise ValueError(f"{name}: expected a number or a 0-d tensor, got a tensor of shape {tuple(theta.shape)}")
        if theta.is_complex() or theta.dtype == torch.bool:
            raise TypeError(f"{name}: expected a real tensor, got {theta.dtype}")
        value = float(theta.detach())
    elif isinstance(theta, numbers.Real) and not isinstance(theta, bool):
        value = float(theta)
    else:
        raise TypeError(f"{name}: expected a number > 0 or a 0-d tensor, got {type(theta).__name__}")
    if not (value > 0 and value != float("inf")):  # False for NaN too
        raise ValueError(f"{name}: expected a finite number > 0, got {value!r}")
    return theta if isinstance(theta, torch.Tensor) else value


def _bandwidths(theta: object, name: str, count: int, what: str) -> float | torch.Tensor:
    """One bandwidth for all ``count`` axes / channels, or one each, in channel-layout order of the caller.

    A number → float; a 0-d tensor → as is; a tuple / list of ``count`` numbers → a (count,) float64 tensor;
    a (count,) real tensor → as is (graph kept: learnable per-axis θ). Every value finite and > 0.
    """
    if isinstance(theta, (tuple, list)):
        if len(theta) != count:
            raise ValueError(f"{name}: expected a number or {count} values (one per {what}), got {len(theta)}")
        values = [_bandwidth(t, f"{name}[{i}]") for i, t in enumerate(theta)]
        if any(isinstance(v, torch.Tensor) for v in values):
            return torch.stack([torch.as_tensor(v, dtype=torch.float64) for v in values])
        return torch.tensor(values, dtype=torch.float64)
    if isinstance(theta, torch.Tensor) and theta.dim() == 1:
        if theta.is_complex() or theta.dtype == torch.bool:
            raise TypeError(f"{name}: expected a real tensor, got {theta.dtype}")
        if theta.shape[0] != count:
            raise ValueError(
                f"{name}: expected a number or {count} values (one per {what}), got a tensor of shape "
                f"{tuple(theta.shape)}"
            )
        values = theta.detach().double().cpu()
        if not bool(((values > 0) & (values < float("inf"))).all()):
            raise ValueError(f"{name}: expected finite numbers > 0, got {values.tolist()!r}")
        return theta
    return _bandwidth(theta, name)


def _spacing(spacing: object, count: int) -> tuple[float, ...] | None:
    """None, or one physical size per voxel for each of ``count`` spatial axes (a number: the same for all)."""
    if spacing is None:
        return None
    values = [spacing] * count if isinstance(spacing, numbers.Real) and not isinstance(spacing, bool) else spacing
    if not isinstance(values, (tuple, list)) or len(values) != count:
        raise ValueError(f"spacing: expected None, a number or {count} numbers (one per spatial axis), got {spacing!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (0 < float(v) < float("inf")):
            raise ValueError(f"spacing: expected finite numbers > 0 (units per voxel), got {spacing!r}")
        out.append(float(v))
    return tuple(out)


def _float_dtype(dtype: object) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype: expected a floating-point torch.dtype, got {dtype!r}")
    return dtype


def _reversed_axes(theta: float | torch.Tensor) -> float | torch.Tensor:
    """Per-axis θ in the tensor's axis order → the position channels' order (x first)."""
    return theta.flip(0) if isinstance(theta, torch.Tensor) and theta.dim() == 1 else theta


def _scaled(
    unit: torch.Tensor, theta: float | torch.Tensor, largest: Sequence[float], name: str, dtype: torch.dtype
) -> torch.Tensor:
    """``unit`` (B, k, *spatial) float64 / θ (one, or one per channel k) rounded to ``dtype``.

    Refuses a θ for which a channel's ``largest`` |value| / θ would not fit ``dtype``.
    """
    limit = torch.finfo(dtype).max
    k = unit.shape[1]
    if isinstance(theta, torch.Tensor):
        values = theta.detach().double().cpu().expand(k).tolist()
    else:
        values = [theta] * k
    tops = [big / v for big, v in zip(largest, values, strict=True)]  # Python floats: inf on overflow, no exception
    worst = max(range(k), key=tops.__getitem__)
    if tops[worst] > limit:
        raise ValueError(
            f"{name}: {values[worst]:.3g} is too small for {dtype}: features reach {tops[worst]:.3g} "
            f"(largest {dtype} is {limit:.3g})"
        )
    if isinstance(theta, torch.Tensor):
        theta = theta.to(device=unit.device, dtype=torch.float64)  # keeps the graph: features differentiable in θ
        if theta.dim() == 1:
            theta = theta.view(k, *([1] * (unit.dim() - 2)))  # one per channel
    return (unit / theta).to(dtype)


def _count(value: object, name: str) -> int:
    """A positive integer (an int, or a float with an integer value); bools and other types refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a positive integer, got {type(value).__name__}")
    if not float(value).is_integer() or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


def _positions(
    batch: int, spatial: Sequence[int], theta: object, name: str, spacing: object, device, dtype: torch.dtype
) -> torch.Tensor:
    """(B, n, *spatial) positions / θ (per axis or one for all), x first; spacing in units per voxel."""
    n = len(spatial)
    steps = _spacing(spacing, n)
    t = _reversed_axes(_bandwidths(theta, name, n, "spatial axis"))
    sizes = [(spatial[n - 1 - k] - 1) * (1.0 if steps is None else steps[n - 1 - k]) for k in range(n)]
    return _scaled(_grid(batch, spatial, steps, device), t, sizes, name, _float_dtype(dtype))


def bilateral_features(
    image: torch.Tensor,
    theta_alpha: Bandwidth,
    theta_beta: Bandwidth,
    *,
    spacing: float | Sequence[float] | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Appearance-kernel features: positions / θα (x first), then channels / θβ.

    For an RGB photo (B, 3, H, W) these are (x/θα, y/θα, r/θβ, g/θβ, b/θβ), the features of pydensecrf's
    ``addPairwiseBilateral(sxy=θα, srgb=θβ, rgbim=image)``. For a volume (B, C, D, H, W) they are
    (x/θα_x, y/θα_y, z/θα_z, I_1/θβ_1, …, I_C/θβ_C): d = 3 + C. Computed in float64, rounded once to
    ``dtype``. A bandwidth given as a tensor keeps its graph: the features are differentiable in θ
    (learnable bandwidths); so are they in a float image.

    Refuses (naming the argument): a non-tensor image (e.g. a numpy array: use ``torch.from_numpy``), a shape
    other than (B, C, *spatial) with 1–3 spatial axes, an empty image, bool or complex dtypes (``TypeError``),
    NaN/Inf, and for an RGB photo colours outside 0..255 (±0.5, as :func:`lab.mean_field`); a bandwidth that
    is not a real number, a 0-d real tensor or one value per axis / channel (``TypeError``: None, arrays,
    strings, bools), not finite and > 0, or so small that a feature overflows ``dtype``; a ``spacing`` that is
    not positive numbers, one per spatial axis; a ``dtype`` that is not a floating-point torch dtype.

    Args:
        image: (B, C, *spatial) guide, 1 (W), 2 (H, W) or 3 (D, H, W) spatial axes, any C ≥ 1: an RGB photo
            (C = 3, 2-D) in 0..255, or any finite values in their own units (uint8, other integers, float).
        theta_alpha: spatial bandwidth θα > 0, in voxels (or in the units of ``spacing``): a number, a 0-d
            tensor, or one per spatial axis in the tensor's axis order (a tuple, or a (n,) tensor).
        theta_beta: channel bandwidth θβ > 0 in the guide's units (0..255 for photos): a number, a 0-d
            tensor, or one per channel (a tuple, or a (C,) tensor).
        spacing: physical size of a voxel along each spatial axis (axis order; e.g. millimetres from a
            NIfTI header), or None (1 voxel). Positions are index × spacing.
        dtype: float dtype of the result.

    Returns:
        (B, n + C, *spatial) features on the image's device, n = the number of spatial axes.

    Example:
        >>> img = torch.zeros(1, 3, 4, 6, dtype=torch.uint8)
        >>> bilateral_features(img, 80.0, 13.0).shape
        torch.Size([1, 5, 4, 6])
        >>> theta = torch.tensor(2.0, requires_grad=True)
        >>> bilateral_features(img, theta, 13.0).requires_grad
        True
        >>> ct = torch.full((1, 1, 5, 6, 7), -1000.0)  # (B, C, D, H, W), Hounsfield units
        >>> f = bilateral_features(ct, (4.0, 2.0, 2.0), 40.0, spacing=(2.0, 0.5, 0.5))  # θα in mm, θβ in HU
        >>> f.shape, f[0, :, 1, 2, 3].tolist()  # voxel (z, y, x) = (1, 2, 3): (x, y, z) in mm / θα, then HU / θβ
        (torch.Size([1, 4, 5, 6, 7]), [0.75, 0.5, 0.5, -25.0])
    """
    bounds = check_guide(image)
    n = image.dim() - 2
    b, c = image.shape[:2]
    ta = _bandwidths(theta_alpha, "theta_alpha", n, "spatial axis")
    tb = _bandwidths(theta_beta, "theta_beta", c, "channel")
    dtype = _float_dtype(dtype)
    if bounds is None and data_checks_enabled():  # a uint8 photo: not read by the check
        bounds = tuple(float(v) for v in torch.aminmax(image.detach()))
    elif bounds is None:  # value checks off: the caller vouches for 0..255 photos and finite features
        bounds = (0.0, 255.0) if is_rgb(image) else (0.0, 0.0)
    positions = _positions(b, image.shape[2:], ta, "theta_alpha", spacing, image.device, dtype)
    top = max(abs(bounds[0]), abs(bounds[1]))
    channels = _scaled(image.to(torch.float64), tb, [top] * c, "theta_beta", dtype)
    return torch.cat([positions, channels], 1)


def spatial_features(
    batch: int | torch.Tensor,
    height: int | None = None,
    width: int | None = None,
    theta_gamma: Bandwidth = 3.0,
    *,
    size: Sequence[int] | None = None,
    spacing: float | Sequence[float] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Smoothness-kernel features: positions / θγ, x first ((x/θγ, y/θγ) for a photo).

    pydensecrf's ``addPairwiseGaussian(sxy=θγ)`` uses the same features. Computed in float64, rounded once
    to ``dtype``; a tensor θγ keeps its graph (the features are differentiable in it).

    Refuses (naming the argument): ``batch`` that is neither a positive integer nor a (B, C, *spatial) guide;
    sizes missing with an int ``batch`` (``height``/``width``, or ``size``) or given with a guide; sizes that
    are not positive integers (bools, None, strings: ``TypeError``; 0, 2.5: ``ValueError``); θγ that is not a
    real number, a 0-d real tensor or one per spatial axis, not finite and > 0, or so small that a feature
    overflows ``dtype``; a bad ``spacing``; a ``dtype`` that is not a floating-point torch dtype.

    Args:
        batch: the batch size B, or a guide (B, C, *spatial) whose shape and device are used.
        height: H of a 2-D image, when ``batch`` is an int.
        width: W of a 2-D image, when ``batch`` is an int.
        theta_gamma: spatial bandwidth θγ > 0 in voxels (or ``spacing`` units): a number, a 0-d tensor, or one
            per spatial axis in axis order.
        size: the spatial shape, 1–3 axes (e.g. (D, H, W)), instead of ``height`` and ``width``.
        spacing: physical size of a voxel along each spatial axis (axis order), or None (1 voxel).
        device: device of the result (default: the guide's, else the CPU).
        dtype: float dtype of the result.

    Returns:
        (B, n, *spatial) features, n = the number of spatial axes.

    Example:
        >>> spatial_features(2, 4, 6, theta_gamma=3.0).shape
        torch.Size([2, 2, 4, 6])
        >>> spatial_features(torch.zeros(1, 3, 5, 5), theta_gamma=1.0)[0, :, 1, 2].tolist()
        [2.0, 1.0]
        >>> spatial_features(1, size=(3, 4, 5), theta_gamma=2.0)[0, :, 2, 1, 4].tolist()  # (x, y, z) / θγ
        [2.0, 0.5, 1.0]
    """
    if isinstance(batch, torch.Tensor):
        if batch.dim() - 2 not in SPATIAL_AXES:
            raise ValueError(f"batch: expected an int or a guide of shape {_GUIDE_SHAPES}, got {tuple(batch.shape)}")
        if height is not None or width is not None or size is not None:
            raise ValueError("height/width: give them (or size) only when batch is an int, not an image")
        device = device or batch.device
        batch, spatial = (
            batch.shape[0],
            tuple(_count(s, n) for s, n in zip(batch.shape[2:], _SIZE_NAMES[batch.dim() - 2], strict=True)),
        )
    elif size is not None:
        if height is not None or width is not None:
            raise ValueError("height/width: give either height and width, or size, not both")
        if not isinstance(size, (tuple, list, torch.Size)) or len(size) not in SPATIAL_AXES:
            raise ValueError(f"size: expected 1, 2 or 3 sizes ({', '.join(SPATIAL_AXES.values())}), got {size!r}")
        spatial = tuple(_count(s, "size") for s in size)
    elif height is None or width is None:
        raise ValueError("height/width: required when batch is an int (or size, for 1-D and 3-D)")
    else:
        spatial = (_count(height, "height"), _count(width, "width"))
    return _positions(_count(batch, "batch"), spatial, theta_gamma, "theta_gamma", spacing, device, dtype)
