"""The CRF's two Gaussian kernels of one batch of images (or volumes), built once per guide and θ.

Kernel 0 is the bilateral (appearance) kernel over (x/θα, y/θα, rgb/θβ), kernel 1 the spatial (smoothness)
kernel over (x/θγ, y/θγ); for a guide (B, C, *spatial) with 1–3 spatial axes, positions per axis (x first, in
voxels or ``params.spacing`` units) and the C channels (:mod:`lab.lattice.features`). Each is a filter object
with one protocol, ``filter_points(x, normalize)`` on (M, C) point-layout values and ``requires_grad``: a
:class:`~lab.lattice.PermutohedralLattice` ("lattice", O(N)), an :class:`~lab.lattice.exact.ExactGaussian`
("exact", the O(N²) oracle) or a :class:`~lab.lattice.window.WindowGaussian` ("window", the exact Gaussian
truncated to k × k, as ConvCRF; 2-D only).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence

import torch

from lab._checks import check_choice, check_shape
from lab.crf.params import MESSAGE_PASSING, CRFParams, format_bandwidth
from lab.lattice.backend import resolve_backend
from lab.lattice.exact import ExactGaussian
from lab.lattice.features import SPATIAL_AXES, bilateral_features, check_guide, spatial_features
from lab.lattice.lattice import PermutohedralLattice
from lab.lattice.limits import check_memory, estimate_kernel_bytes
from lab.lattice.multi import MultiLatticeFilter
from lab.lattice.window import WindowGaussian

__all__ = ["KERNELS", "CRFKernels", "check_image", "kernel_features"]

KERNELS = ("bilateral", "spatial")
_SPATIAL_CACHE_SIZE = 2


def check_image(image: torch.Tensor) -> None:
    """A guide (B, C, *spatial), 1–3 spatial axes, C ≥ 1: finite; an RGB photo (B, 3, H, W) in 0..255.

    :func:`lab.lattice.features.check_guide`; the value checks are skipped while data checks are off.
    """
    check_guide(image)


def kernel_features(
    image: torch.Tensor, params: CRFParams, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """The bilateral and spatial features of a guide, differentiable in tensor-valued bandwidths.

    :func:`~lab.lattice.features.bilateral_features` and :func:`~lab.lattice.features.spatial_features` with
    ``params``' bandwidths and spacing: a tensor θ that requires grad carries its graph into the features.

    Args:
        image: (B, C, *spatial) guide, 1–3 spatial axes: an RGB photo (B, 3, H, W) in 0..255, or any finite
            values in their own units (not differentiated).
        params: the bandwidths θα, θβ, θγ (numbers or tensors, per axis / channel where given) and spacing.
        dtype: float dtype of the features.

    Returns:
        (B, n + C, *spatial) bilateral features (positions / θα, x first, then channels / θβ: (x/θα, y/θα,
        r/θβ, g/θβ, b/θβ) for a photo) and (B, n, *spatial) spatial ones (positions / θγ), n spatial axes.

    Example:
        >>> log_theta = torch.zeros((), requires_grad=True)  # θα = 1
        >>> bil, spa = kernel_features(torch.zeros(1, 3, 4, 4), CRFParams(theta_alpha=log_theta.exp()))
        >>> bil.shape, bil.requires_grad, spa.requires_grad
        (torch.Size([1, 5, 4, 4]), True, False)
        >>> bil, spa = kernel_features(torch.zeros(1, 7, 6, 8, 10), CRFParams(theta_alpha=(1.0, 4.0, 4.0)))
        >>> bil.shape, spa.shape  # a 7-channel volume: d = 3 + 7 and 3
        (torch.Size([1, 10, 6, 8, 10]), torch.Size([1, 3, 6, 8, 10]))
    """
    image = image.detach()
    bil = bilateral_features(image, params.theta_alpha, params.theta_beta, spacing=params.spacing, dtype=dtype)
    return bil, spatial_features(image, theta_gamma=params.theta_gamma, spacing=params.spacing, dtype=dtype)


@functools.lru_cache(maxsize=_SPATIAL_CACHE_SIZE)
def _spatial_lattice(
    batch: int,
    spatial: tuple[int, ...],
    theta_gamma: float | tuple[float, ...],
    spacing: float | tuple[float, ...] | None,
    dtype: torch.dtype,
    device: torch.device,
    backend: str,
) -> PermutohedralLattice:
    """The spatial kernel's lattice depends only on the guide's size, θγ and spacing: built once, reused (LRU).

    Only for a fixed θγ: a θγ that requires grad gets a fresh lattice holding its graph (see :class:`CRFKernels`).
    """
    features = spatial_features(
        batch, size=spatial, theta_gamma=theta_gamma, spacing=spacing, device=device, dtype=dtype
    )
    return PermutohedralLattice(features, backend=backend)


@contextlib.contextmanager
def _naming(params: CRFParams, *names: str):
    """Prefix a lattice's refusal (features beyond what it builds) with the bandwidths that made the features."""
    try:
        yield
    except ValueError as err:
        t = params.bandwidth_values()
        raise ValueError(", ".join(f"{n}={format_bandwidth(t[n])}" for n in names) + f": {err}") from None


class CRFKernels:
    """The two Gaussian kernels of one batch of images, ready to filter Q maps with, built once.

    The kernels serve all T iterations and the backward pass. Bandwidths given as tensors that require grad
    (learnable θ) make the features differentiable: the filters then also return gradients with respect to θ
    (for the lattice, the analytic Gaussian gradient evaluated with the lattice filter,
    ``docs/feature_gradients.md``), and the spatial lattice is built fresh instead of taken from the θγ-keyed
    cache.

    Before any feature is computed, the memory the features and the bilateral lattice's corner pass will take
    at least is checked against what is free (a ``MemoryError`` naming the guide: a 256³ volume is 16.8 M
    points, about 10 GiB for a one-channel guide); the lattice build checks its own estimate again.

    Args:
        image: (B, C, *spatial) guide, 1–3 spatial axes (:func:`kernel_features`): RGB photos (B, 3, H, W) in
            0..255, uint8 or float, or any finite values in their own units (not differentiated).
        params: bandwidths (numbers or tensors, per axis / channel where given), spacing, normalisation and
            window size; kept as :attr:`params`.
        message_passing: "lattice" (permutohedral lattice, O(N)), "exact" (the O(N²) oracle) or "window"
            (the exact Gaussian truncated to a k × k window, as ConvCRF; 2-D guides only).
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
        b, c, *spatial = image.shape
        if message_passing == "window" and len(spatial) != 2:
            raise ValueError(
                f"message_passing: 'window' filters a k × k window of a 2-D image, got a guide with {len(spatial)} "
                "spatial axes (use 'lattice' or 'exact')"
            )
        self.shape = (b, *spatial)
        self.num_points = image[:, 0].numel()
        d = len(spatial) + c
        check_memory(
            estimate_kernel_bytes(self.num_points, d, dtype, lattice=message_passing == "lattice"),
            image.device,
            f"kernels: the features and lattices of a {tuple(image.shape)} guide ({self.num_points} points, d = {d})",
        )
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
        b, _, *size = image.shape
        tg, spacing = params.theta_gamma, params.spacing
        with _naming(params, "theta_gamma"):
            if isinstance(tg, torch.Tensor) and tg.requires_grad and torch.is_grad_enabled():
                # learnable θγ: the lattice must hold this call's graph to θγ, so it is built fresh, never cached
                features = spatial_features(image, theta_gamma=tg, spacing=spacing, dtype=self.dtype)
                spatial = PermutohedralLattice(features, backend=self.backend)
            else:
                tg = params.bandwidth_values()["theta_gamma"]
                spatial = _spatial_lattice(b, tuple(size), tg, spacing, self.dtype, image.device, self.backend)
        with _naming(params, "theta_alpha", "theta_beta"):
            ta, tb = params.theta_alpha, params.theta_beta
            features = bilateral_features(image, ta, tb, spacing=spacing, dtype=self.dtype)
            bilateral = PermutohedralLattice(features, backend=self.backend)
        return bilateral, spatial

    @property
    def requires_grad(self) -> bool:
        """Whether the kernels carry a gradient path to the bandwidths (features that require grad)."""
        return any(f.requires_grad for f in self.filters)

    def to_points(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *spatial) → (M, C), rows in C order ((b, y, x) for images, (b, z, y, x) for volumes)."""
        b, *spatial = self.shape
        check_shape(x, "x", [b, "C", *spatial])
        return x.movedim(1, -1).reshape(self.num_points, x.shape[1])

    def to_image(self, x: torch.Tensor) -> torch.Tensor:
        """(M, C) → (B, C, *spatial) (a view)."""
        return x.view(*self.shape, x.shape[1]).movedim(-1, 1)

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
            q: (M, L) in point layout, or (B, L, *spatial).

        Returns:
            One filtered map per kernel, in the layout of ``q``; differentiable with respect to ``q``.
        """
        if q.dim() != 2:
            return tuple(self.to_image(m) for m in self.filter(self.to_points(q)))
        check_shape(q, "q", [self.num_points, "L"])
        return tuple(f.filter_points(q, self.normalize) for f in self.filters)

    def __repr__(self) -> str:
        sizes = ", ".join(
            f"{a}={n}" for a, n in zip(SPATIAL_AXES[len(self.shape) - 1].split(", "), self.shape[1:], strict=True)
        )
        mode = f"message_passing={self.message_passing!r}, backend={self.backend!r}"
        return f"CRFKernels(B={self.shape[0]}, {sizes}, {mode})"
