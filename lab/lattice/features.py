"""Feature images for the two dense-CRF kernels, already divided by their bandwidths.

Pixel positions are in pixels (x = column, y = row, as pydensecrf), colours in 0..255.
"""

from __future__ import annotations

import torch

from lab._checks import check_positive, check_shape, check_tensor

__all__ = ["bilateral_features", "spatial_features"]


def _grid(batch: int, height: int, width: int, device, dtype) -> torch.Tensor:
    """(B, 2, H, W) pixel coordinates: channel 0 is x (column), channel 1 is y (row)."""
    y, x = torch.meshgrid(
        torch.arange(height, device=device, dtype=dtype),
        torch.arange(width, device=device, dtype=dtype),
        indexing="ij",
    )
    return torch.stack([x, y]).expand(batch, 2, height, width)


def bilateral_features(
    image: torch.Tensor, theta_alpha: float, theta_beta: float, *, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Appearance-kernel features (x/θα, y/θα, r/θβ, g/θβ, b/θβ).

    pydensecrf's ``addPairwiseBilateral(sxy=θα, srgb=θβ, rgbim=image)`` uses the same features.

    Args:
        image: (B, 3, H, W) colour image in 0..255, uint8 or float.
        theta_alpha: spatial bandwidth θα in pixels, > 0.
        theta_beta: colour bandwidth θβ in 0..255 intensity units, > 0.
        dtype: float dtype of the result.

    Returns:
        (B, 5, H, W) features.

    Example:
        >>> img = torch.zeros(1, 3, 4, 6, dtype=torch.uint8)
        >>> bilateral_features(img, 80.0, 13.0).shape
        torch.Size([1, 5, 4, 6])
    """
    check_shape(image, "image", ["B", 3, "H", "W"])
    check_positive(theta_alpha, "theta_alpha")
    check_positive(theta_beta, "theta_beta")
    b, _, h, w = image.shape
    xy = _grid(b, h, w, image.device, dtype) / float(theta_alpha)
    rgb = image.to(dtype) / float(theta_beta)
    return torch.cat([xy, rgb], 1)


def spatial_features(
    batch: int | torch.Tensor,
    height: int | None = None,
    width: int | None = None,
    theta_gamma: float = 3.0,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Smoothness-kernel features (x/θγ, y/θγ).

    pydensecrf's ``addPairwiseGaussian(sxy=θγ)`` uses the same features.

    Args:
        batch: the batch size B, or an image (B, C, H, W) whose shape and device are used.
        height: H, when ``batch`` is an int.
        width: W, when ``batch`` is an int.
        theta_gamma: spatial bandwidth θγ in pixels, > 0.
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
        check_tensor(batch, "batch")
        check_shape(batch, "batch", ["B", "C", "H", "W"])
        if height is not None or width is not None:
            raise ValueError("height/width: give them only when batch is an int, not an image")
        device = device or batch.device
        batch, _, height, width = batch.shape
    if height is None or width is None:
        raise ValueError("height/width: required when batch is an int")
    for name, v in (("batch", batch), ("height", height), ("width", width)):
        if int(v) != v or v < 1:
            raise ValueError(f"{name}: expected a positive integer, got {v!r}")
    check_positive(theta_gamma, "theta_gamma")
    return _grid(int(batch), int(height), int(width), device, dtype) / float(theta_gamma)
