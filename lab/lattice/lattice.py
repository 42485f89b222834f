"""The permutohedral lattice object and the one-call Gaussian filter.

Build once per point set (image and bandwidths), filter many times: the CRF filters its Q map T times with
the same lattice, and the backward pass uses the same operators transposed.

The filter approximates K_ij = exp(−|f_i − f_j|² / 2) (self term included) as
``slice · blur_d ⋯ blur_0 · splat``. Each blur matrix is symmetric, so the adjoint is
``slice · blur_0 ⋯ blur_d · splat`` (slice = splatᵀ): the same stages with the blur axes reversed.

Features that require grad get a gradient through :meth:`PermutohedralLattice.filter`: the analytic
Gaussian gradient, evaluated with the lattice filter (:mod:`lab.lattice.feature_grad`,
``docs/feature_gradients.md``). The lattice is built from the detached features.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from lab._checks import check_choice, check_shape, check_tensor
from lab.lattice.backend import resolve_backend
from lab.lattice.build import BUILDERS, LatticeStructure, build_lattice
from lab.lattice.feature_grad import KernelProduct, centred_features
from lab.lattice.normalize import NORMALIZATIONS, normalized
from lab.lattice.torch_ops import TorchOps

__all__ = ["PermutohedralLattice", "gaussian_filter"]


class _LinearOp(torch.autograd.Function):
    """A linear map with a known adjoint; its backward is the adjoint, itself differentiable."""

    @staticmethod
    def forward(ctx, x, fwd: Callable, adj: Callable):
        ctx.fwd, ctx.adj = fwd, adj
        return fwd(x)

    @staticmethod
    def backward(ctx, grad):
        return _LinearOp.apply(grad, ctx.adj, ctx.fwd), None, None


def _make_ops(structure: LatticeStructure, backend: str):
    """The one place a resolved backend becomes the object that runs splat, blur and slice."""
    if backend == "triton":
        from lab.lattice.triton import TritonOps

        return TritonOps(structure)
    return TorchOps(structure)


def _features_to_points(features: torch.Tensor) -> tuple[torch.Tensor, int, tuple[int, ...] | None]:
    """(N, d) or (B, d, *spatial) features (1–3 spatial axes) → (M, d) points, B, and (B, *spatial) or None."""
    check_tensor(features, "features")
    if features.dim() == 2:
        return features, 1, None
    if 3 <= features.dim() <= 5:
        b, d, *spatial = features.shape
        points = features.movedim(1, -1).reshape(-1, d)  # (B, *spatial, d) → (M, d), rows in C order
        return points, b, (b, *spatial)
    raise ValueError(
        f"features: expected shape (N, d) or (B, d, *spatial) with 1–3 spatial axes, got {tuple(features.shape)}"
    )


class PermutohedralLattice:
    """The permutohedral lattice of a point set: splat, blur and slice, built once, used many times.

    Args:
        features: (N, d) points (a point cloud: any coordinates, colours, normals … divided by their
            bandwidths), or (B, d, *spatial) feature images or volumes with 1–3 spatial axes (see
            :func:`lab.bilateral_features`). Any d ≥ 1; float32 or float64. Batch elements never
            share a vertex, so filtering a batch equals filtering each element on its own. Features that
            require grad receive one from :meth:`filter` / :meth:`filter_points` (the analytic Gaussian
            gradient evaluated with the lattice filter; the lattice is built from the detached features,
            and :meth:`splat`, :meth:`blur`, :meth:`slice` carry no feature gradient).
        backend: "auto" (Triton on CUDA, PyTorch otherwise), "torch" or "triton".
        force_hash: build with hashed vertex codes even where exact packed codes fit (testing).
        builder: how the lattice is built: "auto" (compiled Numba kernels for CPU tensors when Numba is
            installed, else PyTorch), "numba" or "torch"; both give the same lattice
            (:func:`lab.lattice.build_lattice`).

    Values passed to :meth:`filter`, :meth:`splat` and :meth:`slice` take the layout of the features:
    (N, C) for (N, d) features, (B, C, *spatial) for (B, d, *spatial) features.

    Example:
        >>> f = torch.rand(500, 2) * 4
        >>> lat = PermutohedralLattice(f)
        >>> v = torch.rand(500, 3)
        >>> lat.filter(v).shape
        torch.Size([500, 3])
        >>> bool(torch.allclose(lat.filter(torch.ones(500, 1)), torch.ones(500, 1)))  # "after" keeps 1
        True
    """

    def __init__(
        self, features: torch.Tensor, *, backend: str = "auto", force_hash: bool = False, builder: str = "auto"
    ) -> None:
        check_choice(builder, "builder", BUILDERS)
        points, batch_size, image_shape = _features_to_points(features)
        if not features.is_floating_point():
            raise TypeError(f"features: expected a floating-point tensor, got {features.dtype}")
        if points.shape[0] == 0 or points.shape[1] == 0:
            raise ValueError(f"features: expected at least one point and one dimension, got {tuple(features.shape)}")
        # finiteness and representability are checked once, by build_lattice (lab.lattice.limits.prepare_features)
        self.backend = resolve_backend(backend, features.device)
        if points.dtype not in (torch.float32, torch.float64):
            points = points.float()
        self.structure: LatticeStructure = build_lattice(
            points.detach(), batch_size, force_hash=force_hash, builder=builder
        )
        # (M, d) features kept for the feature gradient; None unless they carry a graph
        self._grad_points: torch.Tensor | None = points if points.requires_grad else None
        self._image_shape = image_shape
        self._dtype = points.dtype
        # dtype → (slice, splat, blur passes, reverse-blur passes)
        self.ops = _make_ops(self.structure, self.backend)  # splat / blur / slice_, chosen once
        self._torch_ops = self.ops if isinstance(self.ops, TorchOps) else None
        self._norm: dict[torch.dtype, torch.Tensor] = {}

    # ----------------------------------------------------------------------------------------- shapes
    @property
    def d(self) -> int:
        """Feature dimension."""
        return self.structure.d

    @property
    def num_points(self) -> int:
        """Number of points over the whole batch (B·N)."""
        return self.structure.num_points

    @property
    def num_vertices(self) -> int:
        """Lattice vertices actually used, over the whole batch (at most (d+1)·B·N)."""
        return self.structure.num_vertices

    @property
    def batch_num_vertices(self) -> list[int]:
        """Vertices used by each batch element."""
        return self.structure.batch_num_vertices.tolist()

    def _to_points(self, values: torch.Tensor, name: str = "values") -> torch.Tensor:
        check_tensor(values, name)
        if self._image_shape is None or values.dim() == 2:  # already (M, C) points
            check_shape(values, name, [self.num_points, "C"])
            return values
        b, *spatial = self._image_shape
        check_shape(values, name, [b, "C", *spatial])
        return values.movedim(1, -1).reshape(self.num_points, values.shape[1])

    def _from_points(self, points: torch.Tensor) -> torch.Tensor:
        if self._image_shape is None:
            return points
        return points.reshape(*self._image_shape, -1).movedim(-1, 1)

    # ------------------------------------------------------------------------------- linear operators
    @property
    def torch_ops(self) -> TorchOps:
        """The PyTorch sparse operators of this lattice (the fused CPU filter reads their matrices)."""
        if self._torch_ops is None:
            self._torch_ops = TorchOps(self.structure)
        return self._torch_ops

    def paired_blurs(self, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        """The blur as ⌈(d+1)/2⌉ CSR (V, V) matrices B1·B0, B3·B2, … in ``dtype`` (cached): y ← P·y in turn."""
        return self.torch_ops.matrices(dtype).blurs

    def _blur_fwd(self, y: torch.Tensor) -> torch.Tensor:
        return self.ops.blur(y, False)

    def _blur_rev(self, y: torch.Tensor) -> torch.Tensor:
        return self.ops.blur(y, True)

    def _check_values(self, values: torch.Tensor, name: str) -> torch.Tensor:
        if not values.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got {values.dtype}")
        if values.device != self.structure.slice_matrix.device:
            raise ValueError(
                f"{name}: on {values.device}, but the lattice was built on {self.structure.slice_matrix.device}"
            )
        if values.dtype in (torch.float16, torch.bfloat16):
            values = values.float()
        return values

    def splat(self, values: torch.Tensor) -> torch.Tensor:
        """Splat values onto the lattice vertices, each point onto its d+1 simplex corners.

        Args:
            values: (N, C) or (B, C, *spatial), as the features, or (M, C) in point layout (:meth:`to_points`).

        Returns:
            (V, C) vertex values, V = :attr:`num_vertices`.
        """
        x = self._check_values(self._to_points(values), "values")
        return _LinearOp.apply(x, self.ops.splat, self.ops.slice_)

    def blur(self, x: torch.Tensor, reverse: bool = False) -> torch.Tensor:
        """Blur vertex values with [1/4, 1/2, 1/4] along each of the d+1 lattice axes in turn.

        Args:
            x: (V, C) vertex values.
            reverse: run the axes in reverse order (the adjoint).

        Returns:
            (V, C) blurred vertex values.
        """
        check_shape(x, "x", [self.num_vertices, "C"])
        x = self._check_values(x, "x")
        fwd, adj = (self._blur_rev, self._blur_fwd) if reverse else (self._blur_fwd, self._blur_rev)
        return _LinearOp.apply(x, fwd, adj)

    def slice(self, x: torch.Tensor) -> torch.Tensor:
        """Interpolate vertex values back at the points with the splat's barycentric weights.

        Args:
            x: (V, C) vertex values.

        Returns:
            (N, C) or (B, C, *spatial), the layout of the features.
        """
        check_shape(x, "x", [self.num_vertices, "C"])
        x = self._check_values(x, "x")
        return self._from_points(_LinearOp.apply(x, self.ops.slice_, self.ops.splat))

    def apply_kernel(self, x: torch.Tensor, transpose: bool = False) -> torch.Tensor:
        """K x (or Kᵀ x) for (M, C) points: slice · blur · splat, unnormalised, not differentiable by itself.

        The adjoint Kᵀ runs the blur axes in reverse order (splatᵀ = slice, each axis symmetric).
        """
        return self.ops.slice_(self.ops.blur(self.ops.splat(x), transpose))

    def _apply_k(self, x: torch.Tensor) -> torch.Tensor:
        """K x for (M, C) points, unnormalised, differentiable (its backward is Kᵀ)."""
        return _LinearOp.apply(x, self.apply_kernel, self._kt)

    def _kt(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply_kernel(x, True)

    @property
    def requires_grad(self) -> bool:
        """Whether :meth:`filter` differentiates with respect to the features (they required grad at build).

        The property every filter of :class:`~lab.crf.CRFKernels` has (with ``filter_points``).
        """
        return self._grad_points is not None

    def _feature_points(self, dtype: torch.dtype) -> torch.Tensor | None:
        """(M, d) centred differentiable features in ``dtype``, or None (no feature gradient wanted now)."""
        if self._grad_points is None or not torch.is_grad_enabled():
            return None
        return centred_features(self._grad_points.to(dtype), self.structure.batch_size)

    def normalizer(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """K·1, the filtered ones vector, as (M, 1) points; computed once per dtype and cached."""
        dtype = dtype or self._dtype
        if dtype not in self._norm:
            ones = torch.ones(self.num_points, 1, dtype=dtype, device=self.structure.slice_matrix.device)
            self._norm[dtype] = self.apply_kernel(ones)
        return self._norm[dtype]

    def filter(self, values: torch.Tensor, normalize: str = "after") -> torch.Tensor:
        """Gaussian-filter values over the features: Σ_j exp(−|f_i − f_j|²/2) v_j, normalised.

        Args:
            values: (N, C) or (B, C, *spatial), as the features; float (half types are computed in float32).
            normalize: "none" (K v, divided by the lattice's kernel scale so that it approximates the
                exact sum), "after" (K v / K 1, as CRF-RNN), or "symmetric" (D^−½ K D^−½ v with D = K 1,
                pydensecrf's default).

        Returns:
            The filtered values, same shape and dtype as ``values``. Differentiable with respect to ``values``
            and, when they required grad at build, to the features.
        """
        check_choice(normalize, "normalize", NORMALIZATIONS)
        points = self._check_values(self._to_points(values), "values")
        out = self.filter_points(points, normalize)
        return (out if values.dim() == 2 else self._from_points(out)).to(values.dtype)

    def filter_points(self, x: torch.Tensor, normalize: str = "after") -> torch.Tensor:
        """:meth:`filter` on values already in point layout (M, C): rows in C order ((b, y, x), (b, z, y, x)).

        Mean field keeps its Q map in this layout for all T iterations, so no permute is paid per filtering.

        Args:
            x: (M, C) float values, M = :attr:`num_points`.
            normalize: "none", "after" or "symmetric".

        Returns:
            (M, C) filtered values (float32 for half inputs), differentiable with respect to ``x`` (and the
            features, when they required grad at build).
        """
        check_choice(normalize, "normalize", NORMALIZATIONS)
        check_shape(x, "x", [self.num_points, "C"])
        x = self._check_values(x, "x")
        f = self._feature_points(x.dtype)
        if f is not None:
            return self._filter_with_features(x, f, normalize)
        k1 = None if normalize == "none" else self.normalizer(x.dtype)
        return normalized(self._apply_k, x, normalize, k1, self.structure.kernel_scale)

    def _filter_with_features(self, x: torch.Tensor, f: torch.Tensor, normalize: str) -> torch.Tensor:
        """The normalised filters composed from K(x, f), the primitive differentiable in both.

        Autograd does the chain rule through K·1 and D^−½ (``docs/feature_gradients.md``). K·1's value is the
        cached :meth:`normalizer`; only its gradient is new.
        """

        def k(v: torch.Tensor, known: torch.Tensor | None = None) -> torch.Tensor:
            return KernelProduct.apply(v, f, self, False, known)

        k1 = None
        if normalize != "none":
            ones = torch.ones(self.num_points, 1, dtype=x.dtype, device=x.device)
            k1 = k(ones, self.normalizer(x.dtype))  # D = K·1, a function of f
        return normalized(k, x, normalize, k1, self.structure.kernel_scale)

    def to_points(self, values: torch.Tensor) -> torch.Tensor:
        """(B, C, *spatial) or (N, C) values → (M, C) point layout (a view where possible)."""
        return self._to_points(values)

    def from_points(self, x: torch.Tensor) -> torch.Tensor:
        """(M, C) point layout → the layout of the features ((B, C, *spatial) or (N, C))."""
        return self._from_points(x)

    def __repr__(self) -> str:
        return (
            f"PermutohedralLattice(d={self.d}, points={self.num_points}, vertices={self.num_vertices}, "
            f"batch={self.structure.batch_size}, backend={self.backend!r})"
        )


def gaussian_filter(
    values: torch.Tensor, features: torch.Tensor, normalize: str = "after", backend: str = "auto"
) -> torch.Tensor:
    """Filter values with a Gaussian over the features through a permutohedral lattice, in O(N).

    To filter many times over the same features (as mean field does), build a
    :class:`PermutohedralLattice` once and call its :meth:`~PermutohedralLattice.filter`.

    Args:
        values: (N, C) or (B, C, *spatial) float values.
        features: (N, d) or (B, d, *spatial) features divided by the bandwidths, matching ``values``.
        normalize: "none", "after" or "symmetric" (see :meth:`PermutohedralLattice.filter`).
        backend: "auto", "torch" or "triton".

    Returns:
        Filtered values, the shape of ``values``; differentiable with respect to ``values`` and ``features``
        (the analytic Gaussian gradient evaluated with the lattice filter: see :class:`PermutohedralLattice`).

    Example:
        >>> img = torch.rand(1, 3, 16, 16) * 255
        >>> f = lab.bilateral_features(img, theta_alpha=8.0, theta_beta=20.0)
        >>> lab.gaussian_filter(img, f).shape
        torch.Size([1, 3, 16, 16])
        >>> f = f.detach().requires_grad_()  # e.g. learnable bandwidths: the features get a gradient
        >>> lab.gaussian_filter(img, f).square().sum().backward()
        >>> f.grad.shape
        torch.Size([1, 5, 16, 16])

        A point cloud is any (N, d) set of features, each coordinate divided by its bandwidth (append colours,
        normals … divided by theirs for a bilateral filter). Noisy labels on 1000 points in a unit cube,
        smoothed over about 10 cm (θ = 0.1 in each coordinate):

        >>> g = torch.Generator().manual_seed(0)
        >>> xyz = torch.rand(1000, 3, generator=g)  # (N, 3) positions in metres
        >>> truth = (xyz[:, 0] > 0.5).long()  # two halves of the cube
        >>> noisy = torch.nn.functional.one_hot(truth, 2).float()
        >>> flip = torch.rand(1000, generator=g) < 0.2
        >>> noisy[flip] = 1 - noisy[flip]  # a fifth of the labels wrong
        >>> smooth = lab.gaussian_filter(noisy, xyz / 0.1)  # (N, 2)
        >>> exact = lab.exact_gaussian_filter(noisy, xyz / 0.1)  # the O(N²) sum it approximates
        >>> [round(float((q.argmax(1) == truth).float().mean()), 2) for q in (noisy, smooth, exact)]
        [0.8, 0.96, 0.96]
        >>> bool((smooth - exact).abs().max() < 0.1)
        True
    """
    return PermutohedralLattice(features, backend=backend).filter(values, normalize)
