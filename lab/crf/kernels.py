"""The CRF's two Gaussian kernels of one batch of images, built once per image and θ.

Kernel 0 is the bilateral (appearance) kernel over (x/θα, y/θα, rgb/θβ), kernel 1 the spatial (smoothness)
kernel over (x/θγ, y/θγ). Each is a filter object with one protocol, ``filter_points(x, normalize)`` on
(M, C) point-layout values and ``requires_grad``: a :class:`~lab.lattice.PermutohedralLattice` ("lattice",
O(N)), an :class:`~lab.lattice.exact.ExactGaussian` ("exact", the O(N²) oracle) or a
:class:`~lab.lattice.window.WindowGaussian` ("window", the exact Gaussian truncated to k × k, as ConvCRF).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence

import torch

from lab._checks import check_choice, check_finite, check_shape, data_checks_enabled
from lab.crf.params import MESSAGE_PASSING, CRFParams
from lab.lattice.backend import resolve_backend
from lab.lattice.exact import ExactGaussian
from lab.lattice.features import bilateral_features, spatial_features
from lab.lattice.lattice import PermutohedralLattice
from lab.lattice.multi import MultiLatticeFilter
from lab.lattice.window import WindowGaussian

__all__ = ["KERNELS", "CRFKernels", "check_image", "kernel_features"]

KERNELS = ("bilateral", "spatial")
_SPATIAL_CACHE_SIZE = 2
_IMAGE_SLACK = 0.5  # colours are 0..255; allow rounding (resampled images overshoot by a fraction)


def check_image(image: torch.Tensor) -> None:
    """(B, 3, H, W), finite, colours in 0..255 (the value checks are skipped while data checks are off)."""
    check_shape(image, "image", ["B", 3, "H", "W"])
    if image.dtype == torch.bool or image.is_complex():
        raise TypeError(f"image: expected uint8 or real colours in 0..255, got {image.dtype}")
    if image.numel() and image.dtype != torch.uint8 and data_checks_enabled():
        check_finite(image, "image")
        lo, hi = float(image.min()), float(image.max())
        if lo < -_IMAGE_SLACK or hi > 255 + _IMAGE_SLACK:
            raise ValueError(f"image: expected colours in 0..255, got values in {lo:.4g}..{hi:.4g}")


def kernel_features(
    image: torch.Tensor, params: CRFParams, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """The bilateral and spatial features of an image, differentiable in tensor-valued bandwidths.

    :func:`~lab.lattice.features.bilateral_features` and :func:`~lab.lattice.features.spatial_features` with
    ``params``' bandwidths: a 0-d tensor θ that requires grad carries its graph into the features.

    Args:
        image: (B, 3, H, W) in 0..255 (not differentiated).
        params: the bandwidths θα, θβ, θγ (numbers or 0-d tensors).
        dtype: float dtype of the features.

    Returns:
        (B, 5, H, W) bilateral features (x/θα, y/θα, r/θβ, g/θβ, b/θβ) and (B, 2, H, W) spatial ones (x/θγ, y/θγ).

    Example:
        >>> log_theta = torch.zeros((), requires_grad=True)  # θα = 1
        >>> bil, spa = kernel_features(torch.zeros(1, 3, 4, 4), CRFParams(theta_alpha=log_theta.exp()))
        >>> bil.shape, bil.requires_grad, spa.requires_grad
        (torch.Size([1, 5, 4, 4]), True, False)
    """
    image = image.detach()
    bil = bilateral_features(image, params.theta_alpha, params.theta_beta, dtype=dtype)
    return bil, spatial_features(image, theta_gamma=params.theta_gamma, dtype=dtype)


@functools.lru_cache(maxsize=_SPATIAL_CACHE_SIZE)
def _spatial_lattice(
    batch: int, height: int, width: int, theta_gamma: float, dtype: torch.dtype, device: torch.device, backend: str
) -> PermutohedralLattice:
    """The spatial kernel's lattice depends only on the image size and θγ: built once, reused (LRU).

    Only for a fixed θγ: a θγ that requires grad gets a fresh lattice holding its graph (see :class:`CRFKernels`).
    """
    features = spatial_features(batch, height, width, theta_gamma, device=device, dtype=dtype)
    return PermutohedralLattice(features, backend=backend)


@contextlib.contextmanager
def _naming(params: CRFParams, *names: str):
    """Prefix a lattice's refusal (features beyond what it builds) with the bandwidths that made the features."""
    try:
        yield
    except ValueError as err:
        t = params.bandwidth_values()
        raise ValueError(", ".join(f"{n}={t[n]:.3g}" for n in names) + f": {err}") from None


class CRFKernels:
    """The two Gaussian kernels of one batch of images, ready to filter Q maps with, built once.

    The kernels serve all T iterations and the backward pass. Bandwidths given as tensors that require grad
    (learnable θ) make the features differentiable: the filters then also return gradients with respect to θ
    (for the lattice, the analytic Gaussian gradient evaluated with the lattice filter,
    ``docs/feature_gradients.md``), and the spatial lattice is built fresh instead of taken from the θγ-keyed
    cache.

    Args:
        image: (B, 3, H, W) images in 0..255, uint8 or float (not differentiated).
        params: bandwidths (numbers, or 0-d tensors), normalisation and window size; kept as :attr:`params`.
        message_passing: "lattice" (permutohedral lattice, O(N)), "exact" (the O(N²) oracle) or "window"
            (the exact Gaussian truncated to a k × k window, as ConvCRF).
        backend: "auto", "torch" or "triton" (the lattice's backend).
        dtype: float dtype of the features and the filtering.

    Attributes:
        filters: (bilateral, spatial) filter objects.
        lattices: the same two when message_passing is "lattice", else ().

    Example:
        >>> kernels = CRFKernels(torch.rand(1, 3, 8, 8) * 255, CRFParams())
        >>> [m.shape for m in kernels.filter(torch.rand(64, 2))]
        [torch.Size([64, 2]), torch.Size([64, 2])]
    """

    def __init__(
        self,
        image: torch.Tensor,
        params: CRFParams,
        message_passing: str = "lattice",
        backend: str = "auto",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        check_image(image)
        check_choice(message_passing, "message_passing", MESSAGE_PASSING)
        b, _, h, w = image.shape
        self.shape = (b, h, w)
        self.num_points = b * h * w
        self.params = params
        self.normalize = params.normalize
        self.message_passing = message_passing
        self.dtype = dtype
        self.backend = resolve_backend(backend, image.device)
        image = image.detach()
        self._fused: dict[tuple, MultiLatticeFilter] = {}
        if message_passing == "lattice":
            self.filters = self._lattices(image, params)
        else:
            with _naming(params, "theta_alpha", "theta_beta", "theta_gamma"):
                features = kernel_features(image, params, dtype)
            if message_passing == "exact":
                self.filters = tuple(ExactGaussian(f) for f in features)
            else:
                self.filters = tuple(WindowGaussian(f, params.window_size) for f in features)
        self.lattices: tuple[PermutohedralLattice, ...] = self.filters if message_passing == "lattice" else ()

    def _lattices(self, image: torch.Tensor, params: CRFParams) -> tuple[PermutohedralLattice, PermutohedralLattice]:
        b, _, h, w = image.shape
        tg = params.theta_gamma
        with _naming(params, "theta_gamma"):
            if isinstance(tg, torch.Tensor) and tg.requires_grad and torch.is_grad_enabled():
                # learnable θγ: the lattice must hold this call's graph to θγ, so it is built fresh, never cached
                features = spatial_features(image, theta_gamma=tg, dtype=self.dtype)
                spatial = PermutohedralLattice(features, backend=self.backend)
            else:
                tg = params.bandwidth_values()["theta_gamma"]
                spatial = _spatial_lattice(b, h, w, tg, self.dtype, image.device, self.backend)
        with _naming(params, "theta_alpha", "theta_beta"):
            features = bilateral_features(image, params.theta_alpha, params.theta_beta, dtype=self.dtype)
            bilateral = PermutohedralLattice(features, backend=self.backend)
        return bilateral, spatial

    @property
    def requires_grad(self) -> bool:
        """Whether the kernels carry a gradient path to the bandwidths (features that require grad)."""
        return any(f.requires_grad for f in self.filters)

    def to_points(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) → (M, C), rows ordered (b, y, x)."""
        b, h, w = self.shape
        check_shape(x, "x", [b, "C", h, w])
        return x.permute(0, 2, 3, 1).reshape(self.num_points, x.shape[1])

    def to_image(self, x: torch.Tensor) -> torch.Tensor:
        """(M, C) → (B, C, H, W) (a view)."""
        b, h, w = self.shape
        return x.view(b, h, w, x.shape[1]).permute(0, 3, 1, 2)

    def fused_filter(self, weights: Sequence[float], dtype: torch.dtype) -> MultiLatticeFilter:
        """Q ↦ Σ_m w(m) k(m) ∗ Q as one block-sparse operator ("lattice" only; no autograd), cached per weights.

        Args:
            weights: one number per kernel (bilateral, spatial).
            dtype: float dtype of the operator.

        Returns:
            The :class:`~lab.lattice.multi.MultiLatticeFilter`.
        """
        if self.message_passing != "lattice":
            raise ValueError(f"fused_filter: needs message_passing='lattice', got {self.message_passing!r}")
        key = (tuple(float(w) for w in weights), dtype)
        if key not in self._fused:
            # one operator at a time: it holds copies of both lattices' matrices; new weights only rescale
            # the slice of an operator of the same dtype
            same = [op for (_, dt), op in self._fused.items() if dt == dtype]
            self._fused.clear()
            if same:
                self._fused[key] = same[0].with_weights(key[0])
            else:
                self._fused[key] = MultiLatticeFilter(self.lattices, key[0], self.normalize, dtype)
        return self._fused[key]

    def filter(self, q: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Filter a map with each kernel: (Q̃(bilateral), Q̃(spatial)).

        Args:
            q: (M, L) in point layout, or (B, L, H, W).

        Returns:
            One filtered map per kernel, in the layout of ``q``; differentiable with respect to ``q``.
        """
        if q.dim() == 4:
            return tuple(self.to_image(m) for m in self.filter(self.to_points(q)))
        check_shape(q, "q", [self.num_points, "L"])
        return tuple(f.filter_points(q, self.normalize) for f in self.filters)

    def __repr__(self) -> str:
        b, h, w = self.shape
        return f"CRFKernels(B={b}, H={h}, W={w}, message_passing={self.message_passing!r}, backend={self.backend!r})"
