"""Mean-field inference in the fully connected CRF, as the CRF-RNN paper's Algorithm 1, step by step.

Q ← softmax(U); then T times (Zheng et al. 2015, Alg. 1):

1. message passing        Q̃(m) = k(m) ∗ Q             one Gaussian filtering per kernel m
2. weighting filter outputs  Q̌ = Σ_m w(m) Q̃(m)       w(m) a number or one per class
3. compatibility transform   Q̂ = µ Q̌                  Q̂_l = Σ_l' µ(l, l') Q̌_l'
4. adding unary potentials   U − Q̂
5. normalisation             Q = softmax(U − Q̂)

(step 0, the initialisation Q ← softmax(U), makes the paper's six). Each step is a small function below;
:func:`mean_field` chains them and records what ``keep`` asks for in a :class:`MeanFieldTrace`.

Layout: the public tensors are (B, L, H, W). Inside, Q stays in point layout (M, L), M = B·H·W, rows ordered
(b, y, x), for all T iterations (no permute per filtering); the trace's maps are (B, L, H, W) views of it.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint as _checkpoint

from lab._checks import check_choice, check_finite, check_int, check_shape, check_tensor
from lab.crf.params import MESSAGE_PASSING, CRFParams
from lab.lattice.backend import resolve_backend
from lab.lattice.exact import exact_gaussian_filter
from lab.lattice.features import bilateral_features, spatial_features
from lab.lattice.lattice import PermutohedralLattice
from lab.lattice.limits import check_memory
from lab.lattice.multi import MultiLatticeFilter, filter_scales

__all__ = [
    "KEEP",
    "CRFKernels",
    "MeanFieldStep",
    "MeanFieldTrace",
    "add_unary",
    "compatibility_transform",
    "estimate_mean_field_bytes",
    "initialization",
    "kernel_features",
    "kl_divergence",
    "mean_field",
    "message_passing",
    "normalization",
    "weighting",
]

KEEP = (None, "q", "steps")
KERNELS = ("bilateral", "spatial")
_KL_CLAMP = 1e-20  # pydensecrf's klDivergence: Q·log(max(Q, 1e-20))
_SPATIAL_CACHE_SIZE = 2


# ------------------------------------------------------------------------------------------- kernels
@functools.lru_cache(maxsize=_SPATIAL_CACHE_SIZE)
def _spatial_lattice(
    batch: int, height: int, width: int, theta_gamma: float, dtype: torch.dtype, device: torch.device, backend: str
) -> PermutohedralLattice:
    """The spatial kernel's lattice depends only on the image size and θγ: built once, reused (LRU).

    Only for a fixed θγ: a θγ that requires grad gets a fresh lattice holding its graph (see :class:`CRFKernels`).
    """
    features = spatial_features(batch, height, width, theta_gamma, device=device, dtype=dtype)
    return PermutohedralLattice(features, backend=backend)


def _as_bandwidth(theta: float | torch.Tensor, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A bandwidth as a 0-d tensor of ``dtype`` on ``device`` (a tensor keeps its graph)."""
    if isinstance(theta, torch.Tensor):
        return theta.to(dtype=dtype, device=device)
    return torch.tensor(float(theta), dtype=dtype, device=device)


def kernel_features(
    image: torch.Tensor, params: CRFParams, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """The bilateral and spatial features of an image, differentiable in tensor-valued bandwidths.

    Number bandwidths give exactly :func:`~lab.lattice.features.bilateral_features` and
    :func:`~lab.lattice.features.spatial_features`; 0-d tensor bandwidths divide the unit features
    (pixels, 0..255) by them, so a θ that requires grad carries its graph into the features.

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
    return _bilateral(image, params, dtype), _spatial(image, params, dtype)


def _bilateral(image: torch.Tensor, params: CRFParams, dtype: torch.dtype) -> torch.Tensor:
    """(B, 5, H, W) bilateral features, differentiable in tensor θα, θβ."""
    ta, tb = params.theta_alpha, params.theta_beta
    if not isinstance(ta, torch.Tensor) and not isinstance(tb, torch.Tensor):
        return bilateral_features(image, ta, tb, dtype=dtype)
    ta, tb = _as_bandwidth(ta, dtype, image.device), _as_bandwidth(tb, dtype, image.device)
    unit = bilateral_features(image, 1.0, 1.0, dtype=dtype)  # (B, 5, H, W): x, y in pixels, rgb in 0..255
    return unit / torch.stack([ta, ta, tb, tb, tb]).view(1, 5, 1, 1)


def _spatial(image: torch.Tensor, params: CRFParams, dtype: torch.dtype) -> torch.Tensor:
    """(B, 2, H, W) spatial features, differentiable in a tensor θγ."""
    tg = params.theta_gamma
    if not isinstance(tg, torch.Tensor):
        return spatial_features(image, theta_gamma=tg, dtype=dtype)
    return spatial_features(image, theta_gamma=1.0, dtype=dtype) / _as_bandwidth(tg, dtype, image.device)


def _window_filter(x: torch.Tensor, features: torch.Tensor, radius: int) -> torch.Tensor:
    """Σ_{j in the (2r+1)² window of i} exp(−|f_i − f_j|²/2) x_j, for (B, H, W, C) x and (B, H, W, d) f."""
    _, h, w, _ = x.shape
    out = torch.zeros_like(x)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            ty, tx = slice(max(0, -dy), h - max(0, dy)), slice(max(0, -dx), w - max(0, dx))  # targets i
            sy, sx = slice(max(0, dy), h + min(0, dy)), slice(max(0, dx), w + min(0, dx))  # sources j = i + δ
            if ty.start >= ty.stop or tx.start >= tx.stop:
                continue
            k = torch.exp(-0.5 * (features[:, ty, tx] - features[:, sy, sx]).square().sum(-1, keepdim=True))
            out[:, ty, tx] = out[:, ty, tx] + k * x[:, sy, sx]
    return out


_IMAGE_SLACK = 0.5  # colours are 0..255; allow rounding (resampled images overshoot by a fraction)


def _check_image(image: torch.Tensor) -> None:
    """(B, 3, H, W), finite, colours in 0..255."""
    check_shape(image, "image", ["B", 3, "H", "W"])
    if image.dtype == torch.bool or image.is_complex():
        raise TypeError(f"image: expected uint8 or real colours in 0..255, got {image.dtype}")
    if image.numel() and image.dtype != torch.uint8:
        check_finite(image, "image")
        lo, hi = float(image.min()), float(image.max())
        if lo < -_IMAGE_SLACK or hi > 255 + _IMAGE_SLACK:
            raise ValueError(f"image: expected colours in 0..255, got values in {lo:.4g}..{hi:.4g}")


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

    Kernel 0 is the bilateral (appearance) kernel over (x/θα, y/θα, rgb/θβ), kernel 1 the spatial
    (smoothness) kernel over (x/θγ, y/θγ); x = column, pixels; rgb in 0..255.

    The kernels (lattices, or features for "exact" and "window") are built once, here, and serve all T
    iterations and the backward pass. Bandwidths given as tensors that require grad (learnable θ) make the
    features differentiable: the filters then also return gradients with respect to θ (for the lattice, the
    analytic Gaussian gradient evaluated with the lattice filter, ``docs/feature_gradients.md``), and the
    spatial lattice is built fresh instead of taken from the θγ-keyed cache.

    Args:
        image: (B, 3, H, W) images in 0..255, uint8 or float (not differentiated).
        params: bandwidths (numbers, or 0-d tensors), normalisation and window size.
        message_passing: "lattice" (permutohedral lattice, O(N)), "exact" (the O(N²) oracle) or "window"
            (the exact Gaussian truncated to a k × k window, as ConvCRF).
        backend: "auto", "torch" or "triton" (the lattice's backend).
        dtype: float dtype of the features and the filtering.

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
        _check_image(image)
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
        bil = _bilateral(image, params, dtype)  # (B, 5, H, W)
        self.lattices: tuple[PermutohedralLattice, ...] = ()
        self._fused: dict[tuple, MultiLatticeFilter] = {}
        if message_passing == "lattice":
            tg = params.theta_gamma
            if isinstance(tg, torch.Tensor) and tg.requires_grad and torch.is_grad_enabled():
                # learnable θγ: the lattice must hold this call's graph to θγ, so it is built fresh, never cached
                with _naming(params, "theta_gamma"):
                    spatial = PermutohedralLattice(_spatial(image, params, dtype), backend=self.backend)
            else:
                tg = params.bandwidth_values()["theta_gamma"]
                with _naming(params, "theta_gamma"):
                    spatial = _spatial_lattice(b, h, w, tg, dtype, image.device, self.backend)
            with _naming(params, "theta_alpha", "theta_beta"):
                bilateral = PermutohedralLattice(bil, backend=self.backend)
            self.lattices = (bilateral, spatial)
        else:
            self.features = (bil, _spatial(image, params, dtype))  # (B, d, H, W) each
            if message_passing == "window":
                r = params.window_size // 2
                self._window_norms = tuple(
                    _window_filter(torch.ones(b, h, w, 1, dtype=dtype, device=image.device), f.permute(0, 2, 3, 1), r)
                    for f in self.features
                )

    @property
    def requires_grad(self) -> bool:
        """Whether the kernels carry a gradient path to the bandwidths (features that require grad)."""
        if self.message_passing == "lattice":
            return any(lat.features_require_grad for lat in self.lattices)
        return any(f.requires_grad for f in self.features)

    def to_points(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) → (M, C), rows ordered (b, y, x)."""
        b, h, w = self.shape
        check_shape(x, "x", [b, "C", h, w])
        return x.permute(0, 2, 3, 1).reshape(self.num_points, x.shape[1])

    def to_image(self, x: torch.Tensor) -> torch.Tensor:
        """(M, C) → (B, C, H, W) (a view)."""
        b, h, w = self.shape
        return x.view(b, h, w, x.shape[1]).permute(0, 3, 1, 2)

    def _filter_one(self, m: int, x: torch.Tensor) -> torch.Tensor:
        if self.message_passing == "lattice":
            return self.lattices[m].filter_points(x, self.normalize)
        if self.message_passing == "exact":
            return self.to_points(exact_gaussian_filter(self.to_image(x), self.features[m], self.normalize))
        b, h, w = self.shape
        f = self.features[m].permute(0, 2, 3, 1)
        r = self.params.window_size // 2
        d1 = self._window_norms[m]
        if self.normalize == "symmetric":
            inv_sqrt = torch.rsqrt(d1)
            out = inv_sqrt * _window_filter(inv_sqrt * x.view(b, h, w, -1), f, r)
        else:
            out = _window_filter(x.view(b, h, w, -1), f, r)
            if self.normalize == "after":
                out = out / d1
        return out.reshape(self.num_points, -1)

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
        return tuple(self._filter_one(m, q) for m in range(len(KERNELS)))


# ----------------------------------------------------------------------------------- the six steps
_FAST_SOFTMAX_BELOW = 16  # labels


def softmax(x: torch.Tensor, dim: int) -> torch.Tensor:
    """torch.softmax, computed as exp(x − max) / Σ where that is faster: fewer than 16 labels, no autograd.

    PyTorch's CPU softmax along a short contiguous dimension does not vectorise: for (262144, L) float32 on
    the 2-core development machine, L = 2: 8.4 ms, L = 4: 11 ms, L = 12: 28 ms, against 2.6–6.4 ms for the
    three-pass form here (and 4–6 ms for torch.softmax at L = 16–21, where it stays in use). Results agree
    to float rounding (~1e-7).

    Args:
        x: scores.
        dim: the label dimension.

    Returns:
        softmax(x) along ``dim``.

    Example:
        >>> softmax(torch.tensor([[0.0, 0.0]]), 1).tolist()
        [[0.5, 0.5]]
    """
    if x.shape[dim] >= _FAST_SOFTMAX_BELOW or (torch.is_grad_enabled() and x.requires_grad):
        return torch.softmax(x, dim)
    y = x - x.amax(dim, keepdim=True)
    y.exp_()
    return y.div_(y.sum(dim, keepdim=True))


def initialization(unary: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Step 0: Q ← softmax(U) over the labels.

    Args:
        unary: U, (B, L, H, W) (or any layout with the labels along ``dim``).
        dim: the label dimension.

    Returns:
        Q, the shape of ``unary``.

    Example:
        >>> initialization(torch.zeros(1, 2, 1, 1)).flatten().tolist()
        [0.5, 0.5]
    """
    return softmax(unary, dim)


def message_passing(q: torch.Tensor, kernels: CRFKernels) -> tuple[torch.Tensor, ...]:
    """Step 1: Q̃(m) = k(m) ∗ Q, one normalised Gaussian filtering per kernel (bilateral, spatial).

    Args:
        q: (B, L, H, W) or (M, L) probabilities.
        kernels: the image's kernels.

    Returns:
        (Q̃(bilateral), Q̃(spatial)), each the shape of ``q``.

    Example:
        >>> kernels = CRFKernels(torch.rand(1, 3, 4, 4) * 255, CRFParams())
        >>> len(message_passing(torch.rand(1, 2, 4, 4), kernels))
        2
    """
    return kernels.filter(q)


def weighting(messages: Sequence[torch.Tensor], weights: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Step 2: Q̌ = Σ_m w(m) Q̃(m), the weighted sum of the filter outputs.

    Args:
        messages: K maps, (B, L, H, W) (labels along ``dim``).
        weights: (K, L) weights w(m)_l (equal columns for scalar weights).
        dim: the label dimension.

    Returns:
        Q̌, the shape of a message.

    Example:
        >>> ones = torch.ones(1, 2, 1, 1)
        >>> weighting([ones, ones], torch.tensor([[1.0, 2.0], [3.0, 3.0]]))[0, :, 0, 0]
        tensor([4., 5.])
    """
    shape = [1] * messages[0].dim()
    shape[dim] = -1
    out = weights[0].view(shape) * messages[0]
    for w, msg in zip(weights[1:], messages[1:], strict=True):
        out = out + w.view(shape) * msg
    return out


def compatibility_transform(weighted: torch.Tensor, compat: torch.Tensor | str, dim: int = 1) -> torch.Tensor:
    """Step 3: Q̂_l = Σ_l' µ(l, l') Q̌_l'.

    Args:
        weighted: Q̌, (B, L, H, W) (labels along ``dim``).
        compat: µ as an (L, L) tensor, or "potts" (µ = [l ≠ l'], computed as Σ_l' Q̌_l' − Q̌_l).
        dim: the label dimension.

    Returns:
        Q̂, the shape of ``weighted``.

    Example:
        >>> compatibility_transform(torch.tensor([[1.0, 2.0, 4.0]]), "potts", dim=1)
        tensor([[6., 5., 3.]])
    """
    if isinstance(compat, str):
        return weighted.sum(dim, keepdim=True) - weighted
    moved = weighted.movedim(dim, -1)
    return (moved @ compat.T).movedim(-1, dim)


def add_unary(unary: torch.Tensor, transformed: torch.Tensor) -> torch.Tensor:
    """Step 4: the pre-softmax scores U − Q̂.

    Args:
        unary: U, (B, L, H, W).
        transformed: Q̂, same shape.

    Returns:
        U − Q̂.

    Example:
        >>> add_unary(torch.tensor([1.0]), torch.tensor([0.25]))
        tensor([0.7500])
    """
    return unary - transformed


def normalization(logits: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Step 5: Q = softmax(U − Q̂) over the labels.

    Args:
        logits: U − Q̂, (B, L, H, W).
        dim: the label dimension.

    Returns:
        Q, the shape of ``logits``.

    Example:
        >>> normalization(torch.tensor([[0.0, 0.0]])).tolist()
        [[0.5, 0.5]]
    """
    return softmax(logits, dim)


def kl_divergence(q: torch.Tensor, unary: torch.Tensor, transformed: torch.Tensor, batch_size: int = 1) -> torch.Tensor:
    """The mean-field KL divergence up to log Z, as pydensecrf's ``klDivergence``.

    KL(Q‖P) − log Z = Σ_i,l Q log Q − Σ_i,l U·Q + Σ_i,l Q·Q̂ with Q̂ = µ Σ_m w(m) k(m) ∗ Q: every ordered pair
    of pixels counted once, the self pair included (as pydensecrf). pydensecrf's Potts compat (−w·Q̃) differs
    from µ = [l ≠ l'] by Σ_i Σ_m w(m) (k(m) ∗ 1)_i, a constant for a given image.

    Args:
        q: (M, L) probabilities in point layout (or (B, L, H, W)).
        unary: U, same shape.
        transformed: Q̂ computed from ``q``, same shape.
        batch_size: B (for point layout: rows of element b are b·N .. (b+1)·N − 1).

    Returns:
        (B,) float64 values, one per batch element.

    Example:
        >>> q = torch.full((4, 2), 0.5)
        >>> kl_divergence(q, torch.zeros(4, 2), torch.zeros(4, 2))  # 4 pixels × log ½
        tensor([-2.7726], dtype=torch.float64)
    """
    if q.dim() == 4:
        batch_size = q.shape[0]
    q64 = q.to(torch.float64)
    # Q·(log Q − U + Q̂) per pixel and label, the bracket built in one float64 buffer (differentiable: the
    # gradient is checked against finite differences in the tests)
    terms = torch.log(q64.clamp_min(_KL_CLAMP)).sub_(unary).add_(transformed).mul(q64)
    return terms.reshape(batch_size, -1).sum(1)


# --------------------------------------------------------------------------------------------- trace
@dataclass(frozen=True)
class MeanFieldStep:
    """What one mean-field iteration computed, each (B, L, H, W).

    Attributes:
        messages: (Q̃(bilateral), Q̃(spatial)), step 1.
        weighted: Q̌ = Σ_m w(m) Q̃(m), step 2.
        transformed: Q̂ = µ Q̌, step 3.
        logits: U − Q̂, step 4.
        q: softmax(U − Q̂), step 5.
    """

    messages: tuple[torch.Tensor, ...]
    weighted: torch.Tensor
    transformed: torch.Tensor
    logits: torch.Tensor
    q: torch.Tensor


_KL_GROUP_CHANNELS = 64  # MeanFieldTrace.kl filters up to this many channels at once


class MeanFieldTrace:
    """The result of :func:`mean_field`: final Q and scores, and what ``keep`` asked to record.

    Attributes:
        q: (B, L, H, W) final probabilities.
        logits: (B, L, H, W) final pre-softmax scores U − Q̂ (U for zero iterations).
        history: T+1 probability maps (B, L, H, W), history[0] = softmax(U); None unless keep is "q" or "steps".
        steps: T :class:`MeanFieldStep` records; None unless keep = "steps".
        kernels: the :class:`CRFKernels` used (to rerun steps by hand, or compute the KL).
    """

    def __init__(
        self,
        q: torch.Tensor,
        logits: torch.Tensor,
        history: tuple[torch.Tensor, ...] | None,
        steps: tuple[MeanFieldStep, ...] | None,
        kernels: CRFKernels,
        unary: torch.Tensor,
        weights: torch.Tensor,
        compat: torch.Tensor | str,
    ) -> None:
        self.q, self.logits, self.history, self.steps, self.kernels = q, logits, history, steps, kernels
        self._unary, self._weights, self._compat = unary, weights, compat

    @functools.cached_property
    def kl(self) -> torch.Tensor:
        """(B, T+1) float64 mean-field KL divergence (up to log Z) of each Q in :attr:`history`.

        Computed on first access; see :func:`kl_divergence`. The history's maps are filtered together, side
        by side along the label axis in groups of up to 64 channels (a filtering's cost is mostly per point,
        so T+1 maps of L labels cost about one filtering of (T+1)·L channels, not T+1 filterings).
        """
        if self.history is None:
            raise ValueError("kl: needs the history of Q; run mean_field with keep='q' or keep='steps'")
        kernels, weights = self.kernels, self._weights
        batch_size, num_labels = self.history[0].shape[:2]
        u = kernels.to_points(self._unary).to(torch.float64)  # once, not per map
        fused = (
            kernels.message_passing == "lattice"
            and bool((weights == weights[:, :1]).all())  # scalar weights fold into one operator
            and not (torch.is_grad_enabled() and (weights.requires_grad or any(q.requires_grad for q in self.history)))
        )
        per_group = max(1, _KL_GROUP_CHANNELS // num_labels)
        out = []
        for start in range(0, len(self.history), per_group):
            group = [kernels.to_points(q) for q in self.history[start : start + per_group]]  # (M, L) each
            x = torch.cat(group, 1)  # the group side by side: (M, len(group)·L)
            if fused:
                weighted_all = kernels.fused_filter([float(w) for w in weights[:, 0]], x.dtype)(x.contiguous())
            else:
                messages = message_passing(x, kernels)
            for i, q in enumerate(group):
                cols = slice(i * num_labels, (i + 1) * num_labels)
                weighted = weighted_all[:, cols] if fused else weighting([m[:, cols] for m in messages], weights)
                transformed = compatibility_transform(weighted, self._compat)
                out.append(kl_divergence(q, u, transformed, batch_size))
        return torch.stack(out, 1)

    def __repr__(self) -> str:
        t = None if self.history is None else len(self.history) - 1
        return (
            f"MeanFieldTrace(q={tuple(self.q.shape)}, iterations={t}, "
            f"steps={'yes' if self.steps is not None else 'no'}, kernels={self.kernels.message_passing!r})"
        )


# ------------------------------------------------------------------------------------------ driver
def _fused_iteration_triton():
    """``lab.lattice.triton_fused.fused_mean_field_iteration``, or None where that module is missing."""
    try:
        from lab.lattice.triton_fused import fused_mean_field_iteration
    except ImportError:
        return None
    return fused_mean_field_iteration


def _iteration(
    q: torch.Tensor, unary: torch.Tensor, kernels: CRFKernels, weights: torch.Tensor, compat: torch.Tensor | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """One differentiable iteration in point layout: (logits, q)."""
    logits = add_unary(unary, compatibility_transform(weighting(message_passing(q, kernels), weights), compat))
    return logits, normalization(logits)


def _check_inputs(unary: torch.Tensor, image: torch.Tensor, iterations: int) -> None:
    check_shape(unary, "unary", ["B", "L", "H", "W"])
    _check_image(image)
    if not unary.is_floating_point():
        raise TypeError(f"unary: expected a floating-point tensor, got {unary.dtype}")
    b, _, h, w = unary.shape
    if (image.shape[0], image.shape[2], image.shape[3]) != (b, h, w):
        raise ValueError(f"image: expected shape ({b}, 3, {h}, {w}) to match unary, got {tuple(image.shape)}")
    if unary.shape[1] < 2 or h * w == 0 or b == 0:
        raise ValueError(f"unary: expected at least two labels and one pixel, got {tuple(unary.shape)}")
    if image.device != unary.device:
        raise ValueError(f"image: on {image.device}, but unary is on {unary.device}")
    check_int(iterations, "iterations", 0)
    check_finite(unary, "unary")


def estimate_mean_field_bytes(
    kernels: CRFKernels, num_labels: int, iterations: int, keep: str | None, dtype: torch.dtype, grad: bool
) -> int:
    """Memory that :func:`mean_field` allocates beyond its kernels, in bytes (an upper estimate).

    Eight (M, L) maps for one iteration (U, Q, the two messages, weighted, transformed, logits, softmax's
    temporary), three (ΣV, L) vertex tables for the fused filter, plus what is kept: T+1 maps of history for
    keep="q" / "steps", six more per iteration for "steps", and six per iteration saved for backward when
    gradients are recorded.

    Example:
        >>> k = CRFKernels(torch.rand(1, 3, 32, 32) * 255, CRFParams())
        >>> estimate_mean_field_bytes(k, 21, 5, "q", torch.float32, False) > 14 * 1024 * 21 * 4
        True
    """
    size = torch.finfo(dtype).bits // 8
    maps = 8 + (iterations + 1 if keep is not None else 0) + (6 * iterations if keep == "steps" else 0)
    maps += 6 * iterations if grad else 0
    vertices = sum(lat.num_vertices for lat in kernels.lattices)
    return size * num_labels * (maps * kernels.num_points + 3 * vertices)


def _check_kernels(kernels: CRFKernels, unary: torch.Tensor, params: CRFParams, message_passing: str) -> None:
    """Prebuilt kernels must be those ``params`` and ``message_passing`` would build for this unary's image."""
    if not isinstance(kernels, CRFKernels):
        raise TypeError(f"kernels: expected CRFKernels, got {type(kernels).__name__}")
    if kernels.shape != (unary.shape[0], unary.shape[2], unary.shape[3]):
        raise ValueError(f"kernels: built for (B, H, W) = {kernels.shape}, unary is {tuple(unary.shape)}")
    built, wanted = kernels.params.bandwidth_values(), params.bandwidth_values()
    differ = [f"{k} {built[k]:.6g} ≠ {wanted[k]:.6g}" for k in wanted if not math.isclose(built[k], wanted[k])]
    if kernels.normalize != params.normalize:
        differ.append(f"normalize {kernels.normalize!r} ≠ {params.normalize!r}")
    if kernels.message_passing != message_passing:
        differ.append(f"message_passing {kernels.message_passing!r} ≠ {message_passing!r}")
    if kernels.message_passing == "window" and kernels.params.window_size != params.window_size:
        differ.append(f"window_size {kernels.params.window_size} ≠ {params.window_size}")
    if differ:
        raise ValueError(f"kernels: built for other parameters than params ({'; '.join(differ)}); build them anew")


def _check_result(q: torch.Tensor, params: CRFParams, unary: torch.Tensor) -> None:
    """Q must be finite: an error naming the parameters, never a NaN result."""
    if bool(torch.isfinite(q.detach()).all()):
        return
    mu = "potts" if params.is_potts else f"|µ| ≤ {float(params.compat.detach().abs().max()):.3g}"
    w = {name: getattr(params, name) for name in ("w_bilateral", "w_spatial")}
    shown = ", ".join(
        f"{k}={float(v.detach().abs().max()) if isinstance(v, torch.Tensor) else v:.3g}" for k, v in w.items()
    )
    raise FloatingPointError(
        f"mean field: Q became NaN/Inf with {shown}, compat {mu}, unary within ±{float(unary.detach().abs().max()):.3g}"
        f" in {q.dtype}: the pairwise or unary term overflowed; use smaller weights / µ / unary, or float64"
    )


def mean_field(
    unary: torch.Tensor,
    image: torch.Tensor,
    params: CRFParams | None = None,
    iterations: int = 5,
    keep: str | None = "q",
    message_passing: str = "lattice",
    backend: str = "auto",
    *,
    checkpoint: bool = False,
    kernels: CRFKernels | None = None,
) -> MeanFieldTrace:
    """Mean-field inference in the dense CRF (CRF-RNN's Algorithm 1), batched, differentiable.

    Differentiable with respect to ``unary``, to tensor-valued ``params.w_bilateral``, ``params.w_spatial``
    and ``params.compat``, and to tensor-valued bandwidths ``params.theta_*`` (through the features; not with
    respect to the image). The kernels are built once per call from the current θ. Without gradients and without
    ``keep="steps"``, the lattice path runs fused: both kernels' splat, blur and slice as one block-sparse
    product each (:class:`~lab.lattice.multi.MultiLatticeFilter`), or, for backend "triton" and float32,
    the fused Triton iteration of ``lab.lattice.triton_fused`` (skipped, with the PyTorch fusion used instead,
    where that module is missing).

    pydensecrf equivalent: ``d = DenseCRF2D(W, H, L); d.setUnaryEnergy(-U); d.addPairwiseGaussian(sxy=θγ,
    compat=w_spatial); d.addPairwiseBilateral(sxy=θα, srgb=θβ, rgbim=image, compat=w_bilateral);
    d.inference(T)`` with ``normalize="symmetric"`` (its default) and Potts.

    Args:
        unary: U = −ψ_u, (B, L, H, W) float, L ≥ 2: logits or log-probabilities (float64 computes in float64).
        image: (B, 3, H, W) in 0..255, uint8 or float (finite; values outside −0.5..255.5 are refused).
        params: the CRF parameters (default :class:`CRFParams`()).
        iterations: T ≥ 0.
        keep: None (only the final Q and scores), "q" (also every Q: :attr:`MeanFieldTrace.history`,
            and :attr:`MeanFieldTrace.kl`) or "steps" (also every intermediate of every step).
        message_passing: "lattice" (default), "exact" (O(N²): small images) or "window" (k × k truncation).
        backend: "auto", "torch" or "triton", for the lattice.
        checkpoint: recompute each iteration in the backward pass instead of storing it (large images).
        kernels: prebuilt :class:`CRFKernels` for this image (reuse across calls; must match ``params``'
            bandwidths and normalisation and ``message_passing``).

    Returns:
        A :class:`MeanFieldTrace`: ``q`` and ``logits`` (B, L, H, W), plus ``history``, ``steps``, ``kl``.

    Example:
        >>> image = torch.rand(1, 3, 16, 16) * 255
        >>> unary = torch.randn(1, 4, 16, 16)
        >>> trace = mean_field(unary, image, CRFParams(normalize="symmetric"), iterations=3)
        >>> trace.q.shape, len(trace.history), trace.kl.shape
        (torch.Size([1, 4, 16, 16]), 4, torch.Size([1, 4]))
    """
    params = CRFParams() if params is None else params
    if not isinstance(params, CRFParams):
        raise TypeError(f"params: expected a CRFParams, got {type(params).__name__} (lab.CRFParams(**values))")
    check_tensor(unary, "unary")
    check_tensor(image, "image")
    _check_inputs(unary, image, iterations)
    check_choice(keep, "keep", KEEP)
    dtype = torch.float64 if unary.dtype == torch.float64 else torch.float32
    if kernels is None:
        kernels = CRFKernels(image, params, message_passing, backend, dtype)
    else:
        _check_kernels(kernels, unary, params, message_passing)
    num_labels = unary.shape[1]
    check_memory(
        estimate_mean_field_bytes(kernels, num_labels, iterations, keep, dtype, torch.is_grad_enabled()),
        unary.device,
        f"mean field: {iterations} iterations over {kernels.num_points} points × {num_labels} labels (keep={keep!r})",
    )
    weights = params.weights(num_labels, dtype=dtype, device=unary.device)  # (K, L) w(m)_l
    compat = "potts" if params.is_potts else params.compat_matrix(num_labels).to(dtype)  # µ

    u = kernels.to_points(unary.to(dtype)).contiguous()  # (M, L) U, channels-last: every step reads rows
    q = initialization(u)  # Q ← softmax(U)
    logits = u
    history = [q] if keep is not None else None
    steps: list[MeanFieldStep] | None = [] if keep == "steps" else None
    needs_grad = torch.is_grad_enabled() and (
        unary.requires_grad
        or weights.requires_grad
        or (isinstance(compat, torch.Tensor) and compat.requires_grad)
        or kernels.requires_grad
    )

    if iterations > 0 and keep != "steps" and not needs_grad and kernels.message_passing == "lattice":
        logits, q = _fused_iterations(u, q, kernels, params, weights, compat, iterations, history)
    else:
        image_view = kernels.to_image
        for _ in range(iterations):
            if steps is not None:
                messages = kernels.filter(q)  # Q̃(m) = k(m) ∗ Q  (step 1, message_passing)
                weighted = weighting(messages, weights)  # Q̌ = Σ_m w(m) Q̃(m)
                transformed = compatibility_transform(weighted, compat)  # Q̂ = µ Q̌
                logits = add_unary(u, transformed)  # U − Q̂
                q = normalization(logits)  # Q = softmax(U − Q̂)
                steps.append(
                    MeanFieldStep(
                        tuple(image_view(m) for m in messages),
                        image_view(weighted),
                        image_view(transformed),
                        image_view(logits),
                        image_view(q),
                    )
                )
            elif checkpoint and needs_grad:
                logits, q = _checkpoint(_iteration, q, u, kernels, weights, compat, use_reentrant=False)
            else:
                logits, q = _iteration(q, u, kernels, weights, compat)
            if history is not None:
                history.append(q)

    _check_result(q, params, unary)
    to_image = kernels.to_image
    return MeanFieldTrace(
        q=to_image(q),
        logits=to_image(logits),
        history=None if history is None else tuple(to_image(h) for h in history),
        steps=None if steps is None else tuple(steps),
        kernels=kernels,
        unary=unary.to(dtype),
        weights=weights,
        compat=compat,
    )


def _fused_iterations(
    u: torch.Tensor,
    q: torch.Tensor,
    kernels: CRFKernels,
    params: CRFParams,
    weights: torch.Tensor,
    compat: torch.Tensor | str,
    iterations: int,
    history: list[torch.Tensor] | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """T inference iterations without autograd, message passing fused across the kernels. (logits, q)."""
    lattices = kernels.lattices
    fused = _fused_iteration_triton() if kernels.backend == "triton" and u.dtype == torch.float32 else None
    if fused is not None:
        scales = [filter_scales(lat, kernels.normalize, u.dtype) for lat in lattices]
        compat_m = compat if isinstance(compat, torch.Tensor) else params.compat_matrix(u.shape[1]).to(u)
        for _ in range(iterations):
            blurred = [
                lat.blur(lat.splat(lat.from_points(pre * q))) for lat, (pre, _) in zip(lattices, scales, strict=True)
            ]
            logits, q = fused(u, blurred, list(lattices), [post for _, post in scales], weights, compat_m)
            if history is not None:
                history.append(q)
        return logits, q

    if params.scalar_weights:
        op = kernels.fused_filter([float(w[0]) for w in weights], u.dtype)

        def weighted_messages(x: torch.Tensor) -> torch.Tensor:
            return op(x)  # Q̌ = Σ_m w(m) k(m) ∗ Q in three block-sparse products
    else:

        def weighted_messages(x: torch.Tensor) -> torch.Tensor:
            return weighting(message_passing(x, kernels), weights)

    logits = u
    for t in range(iterations):
        weighted = weighted_messages(q)  # Q̌
        if isinstance(compat, str) and t < iterations - 1:
            # Potts: U − Q̂ = U + Q̌ − Σ_l' Q̌_l'; the last term is constant per pixel and cancels in the
            # softmax, so intermediate iterations skip it (the returned logits are exact).
            q = softmax(weighted.add_(u), 1)
        else:
            logits = add_unary(u, compatibility_transform(weighted, compat))
            q = normalization(logits)
        if history is not None:
            history.append(q)
    return logits, q
