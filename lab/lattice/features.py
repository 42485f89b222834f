"""Feature images for the two dense-CRF kernels, already divided by their bandwidths.

Pixel positions are in pixels (x = column, y = row, as pydensecrf), colours in 0..255. Features are
computed in float64 and rounded once to the requested dtype; a bandwidth so small that a feature would
not fit that dtype is refused, never returned as Inf or NaN.
"""

from __future__ import annotations

import numbers

import torch

from lab._checks import check_finite, check_shape, data_checks_enabled

__all__ = ["bilateral_features", "spatial_features"]

_IMAGE_SLACK = 0.5  # as lab.crf.kernels.check_image: colours are 0..255, resampled images overshoot by a fraction


def _grid(batch: int, height: int, width: int, device) -> torch.Tensor:
    """(B, 2, H, W) float64 pixel coordinates: channel 0 is x (column), channel 1 is y (row)."""
    y, x = torch.meshgrid(
        torch.arange(height, device=device, dtype=torch.float64),
        torch.arange(width, device=device, dtype=torch.float64),
        indexing="ij",
    )
    return torch.stack([x, y]).expand(batch, 2, height, width)


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


def _float_dtype(dtype: object) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype: expected a floating-point torch.dtype, got {dtype!r}")
    return dtype


def _scaled(unit: torch.Tensor, theta: float | torch.Tensor, largest: float, name: str, dtype: torch.dtype):
    """``unit`` (float64) / θ rounded to ``dtype``; refuses a θ for which ``largest`` / θ would not fit."""
    limit = torch.finfo(dtype).max
    value = float(theta.detach()) if isinstance(theta, torch.Tensor) else theta
    top = largest / value  # Python float: inf when it overflows float64, no exception
    if top > limit:
        raise ValueError(
            f"{name}: {value:.3g} is too small for {dtype}: features reach {top:.3g} (largest {dtype} is {limit:.3g})"
        )
    if isinstance(theta, torch.Tensor):
        theta = theta.to(device=unit.device, dtype=torch.float64)  # keeps the graph: features differentiable in θ
    return (unit / theta).to(dtype)


def _count(value: object, name: str) -> int:
    """A positive integer (an int, or a float with an integer value); bools and other types refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a positive integer, got {type(value).__name__}")
    if not float(value).is_integer() or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


def bilateral_features(
    image: torch.Tensor,
    theta_alpha: float | torch.Tensor,
    theta_beta: float | torch.Tensor,
    *,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Appearance-kernel features (x/θα, y/θα, r/θβ, g/θβ, b/θβ).

    pydensecrf's ``addPairwiseBilateral(sxy=θα, srgb=θβ, rgbim=image)`` uses the same features.
    Computed in float64, rounded once to ``dtype``. A bandwidth given as a 0-d tensor keeps its graph:
    the features are differentiable in θ (learnable bandwidths); so are they in a float image.

    Refuses (naming the argument): a non-tensor image (e.g. a numpy array: use ``torch.from_numpy``),
    a shape other than (B, 3, H, W), an empty image, bool or complex dtypes (``TypeError``), NaN/Inf or
    colours outside 0..255 (±0.5, as :func:`lab.mean_field`); a bandwidth that is not a real number or a
    0-d real tensor (``TypeError``: None, arrays, strings, bools), not finite and > 0, or so small that
    a feature overflows ``dtype``; a ``dtype`` that is not a floating-point torch dtype.

    Args:
        image: (B, 3, H, W) colour image in 0..255, uint8, another integer type, or float.
        theta_alpha: spatial bandwidth θα in pixels, > 0: a number or a 0-d tensor.
        theta_beta: colour bandwidth θβ in 0..255 intensity units, > 0: a number or a 0-d tensor.
        dtype: float dtype of the result.

    Returns:
        (B, 5, H, W) features on the image's device.

    Example:
        >>> img = torch.zeros(1, 3, 4, 6, dtype=torch.uint8)
        >>> bilateral_features(img, 80.0, 13.0).shape
        torch.Size([1, 5, 4, 6])
        >>> theta = torch.tensor(2.0, requires_grad=True)
        >>> bilateral_features(img, theta, 13.0).requires_grad
        True
    """
    check_shape(image, "image", ["B", 3, "H", "W"])
    if image.dtype == torch.bool or image.is_complex():
        raise TypeError(f"image: expected a real (uint8, integer or float) tensor, got {image.dtype}")
    if image.numel() == 0:
        raise ValueError(f"image: expected at least one pixel, got shape {tuple(image.shape)}")
    check_finite(image, "image")
    ta = _bandwidth(theta_alpha, "theta_alpha")
    tb = _bandwidth(theta_beta, "theta_beta")
    dtype = _float_dtype(dtype)
    lo, hi = 0.0, 255.0  # with the value checks off (lab._checks.set_data_checks), the caller vouches for 0..255
    if data_checks_enabled():
        lo, hi = float(image.detach().min()), float(image.detach().max())
        if lo < -_IMAGE_SLACK or hi > 255 + _IMAGE_SLACK:
            raise ValueError(f"image: expected colours in 0..255, got values in {lo:.4g}..{hi:.4g}")
    b, _, h, w = image.shape
    xy = _scaled(_grid(b, h, w, image.device), ta, max(h, w) - 1, "theta_alpha", dtype)
    rgb = _scaled(image.to(torch.float64), tb, max(abs(lo), abs(hi)), "theta_beta", dtype)
    return torch.cat([xy, rgb], 1)


def spatial_features(
    batch: int | torch.Tensor,
    height: int | None = None,
    width: int | None = None,
    theta_gamma: float | torch.Tensor = 3.0,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Smoothness-kernel features (x/θγ, y/θγ).

    pydensecrf's ``addPairwiseGaussian(sxy=θγ)`` uses the same features. Computed in float64, rounded once
    to ``dtype``; a 0-d tensor θγ keeps its graph (the features are differentiable in it).

    Refuses (naming the argument): ``batch`` that is neither a positive integer nor a (B, C, H, W) tensor;
    ``height``/``width`` missing with an int ``batch`` or given with an image; sizes that are not positive
    integers (bools, None, strings: ``TypeError``; 0, 2.5: ``ValueError``); θγ that is not a real number or
    a 0-d real tensor, not finite and > 0, or so small that a feature overflows ``dtype``; a ``dtype``
    that is not a floating-point torch dtype.

    Args:
        batch: the batch size B, or an image (B, C, H, W) whose shape and device are used.
        height: H, when ``batch`` is an int.
        width: W, when ``batch`` is an int.
        theta_gamma: spatial bandwidth θγ in pixels, > 0: a number or a 0-d tensor.
        device: device of the result (default: the image's, else the CPU).
        dtype: float dtype of the result.

    Returns:
        (B, 2, H, W) features.

    Example:
        >>> spatial_features(2, 4, 6, theta_gamma=3.0).shape
        torch.Size([2, 2, 4, 6])
        >>> spatial_features(torch.zeros(1, 3, 5, 5), theta_gamma=1.0)[0, :, 1, 2].tolist()
        [2.0, 1.0]
    """
    if isinstance(batch, torch.Tensor):
        check_shape(batch, "batch", ["B", "C", "H", "W"])
        if height is not None or width is not None:
            raise ValueError("height/width: give them only when batch is an int, not an image")
        device = device or batch.device
        batch, _, height, width = batch.shape
    elif height is None or width is None:
        raise ValueError("height/width: required when batch is an int")
    b, h, w = _count(batch, "batch"), _count(height, "height"), _count(width, "width")
    tg = _bandwidth(theta_gamma, "theta_gamma")
    dtype = _float_dtype(dtype)
    return _scaled(_grid(b, h, w, device), tg, max(h, w) - 1, "theta_gamma", dtype)
