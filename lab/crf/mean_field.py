"""Mean-field inference in the fully connected CRF: :func:`mean_field`, the driver of Algorithm 1.

The steps are :mod:`lab.crf.steps` (one update, :func:`~lab.crf.steps.iteration`, used by every path); the
kernels are :class:`~lab.crf.kernels.CRFKernels`. What differs between the paths is only how the weighted
messages Q̌ = Σ_m w(m) k(m) ∗ Q are formed and what is kept:

* with autograd or ``keep="steps"``: each kernel's filter (its own autograd), the messages kept when asked;
  ``checkpoint=True`` recomputes each iteration in the backward pass instead of storing it;
* without autograd, "lattice", float32 on the CPU (the default for inference): the compiled iteration of
  :mod:`lab.crf.cpu_step` (splat, blur, then slice … softmax per pixel; needs Numba; ``LAB_CPU_FUSED=0``
  turns it off); for backend "triton", the fused Triton iteration (:mod:`lab.crf.triton_step`); otherwise
  both kernels as one block-sparse operator per stage (:class:`~lab.lattice.multi.MultiLatticeFilter`;
  scalar weights).

Layout: the public tensors are (B, L, H, W) for photos, (B, L, *spatial) for any guide with 1–3 spatial axes
(B, L, D, H, W for volumes). Inside, Q stays in point layout (M, L), M = B·H·W (B·D·H·W), rows in C order
((b, y, x), (b, z, y, x)), for all T iterations (no permute per filtering); the trace's maps are views of it.
Every path works on point layout, so each runs on any number of spatial axes and any feature dimension d:
the compiled CPU iteration (compiled once per corner count d + 1 and label width) and the fused Triton
iteration (d + 1 a compile-time constant: one compilation per d) included.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint as _checkpoint

from lab._checks import (
    all_finite,
    check_choice,
    check_finite,
    check_int,
    check_tensor,
    data_checks_enabled,
)
from lab.crf.kernels import CRFKernels, check_image
from lab.crf.params import CRFParams, bandwidths_close, format_bandwidth
from lab.crf.steps import (
    compatibility_transform,
    initialization,
    iteration,
    kl_divergence,
    weighting,
)
from lab.lattice.features import SPATIAL_AXES
from lab.lattice.limits import check_memory

__all__ = ["KEEP", "MeanFieldStep", "MeanFieldTrace", "estimate_mean_field_bytes", "mean_field"]

KEEP = (None, "q", "steps")
_KL_GROUP_CHANNELS = 64  # MeanFieldTrace.kl filters up to this many channels at once

WeightedMessages = Callable[[torch.Tensor], tuple[tuple[torch.Tensor, ...] | None, torch.Tensor]]


def _weighted_messages(kernels: CRFKernels, weights: torch.Tensor, fused: bool) -> WeightedMessages:
    """Q ↦ (messages, Q̌): through the fused operator when ``fused`` (no messages formed), else kernel by kernel."""
    if fused:
        op = kernels.fused_filter([float(w) for w in weights[:, 0]], weights.dtype)
        return lambda q: (None, op(q))  # Q̌ = Σ_m w(m) k(m) ∗ Q in three block-sparse products

    def unfused(q: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        messages = kernels.filter(q)  # Q̃(m) = k(m) ∗ Q
        return messages, weighting(messages, weights)  # Q̌ = Σ_m w(m) Q̃(m)

    return unfused


def _cpu_fused(kernels: CRFKernels, dtype: torch.dtype) -> bool:
    """The compiled CPU iteration applies: two lattice kernels on the CPU in float32, Numba installed.

    ``LAB_CPU_FUSED=0`` in the environment turns it off (the block-sparse PyTorch path runs instead).
    """
    if os.environ.get("LAB_CPU_FUSED", "1") == "0":
        return False
    from lab.crf import cpu_step

    return (
        cpu_step.available()
        and kernels.message_passing == "lattice"
        and kernels.backend == "torch"
        and dtype == torch.float32
        and len(kernels.lattices) == 2
        and kernels.lattices[0].structure.slice_matrix.device.type == "cpu"
    )


def _can_fuse(kernels: CRFKernels, scalar_weights: bool, needs_grad: bool) -> bool:
    """The fused operator applies: lattice kernels, one number per kernel, no gradient recorded."""
    return kernels.message_passing == "lattice" and scalar_weights and not needs_grad


@dataclass(frozen=True)
class MeanFieldStep:
    """What one mean-field iteration computed, each (B, L, H, W) (or (B, L, *spatial)).

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
        q: (B, L, H, W) final probabilities ((B, L, *spatial) for other guides, as below).
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
        needs_grad = torch.is_grad_enabled() and (weights.requires_grad or any(q.requires_grad for q in self.history))
        scalar = bool((weights == weights[:, :1]).all())  # scalar weights fold into one operator
        fused = _can_fuse(kernels, scalar, needs_grad)
        # the group's maps side by side: one weight per kernel and column block, the same for every map
        per_group = max(1, _KL_GROUP_CHANNELS // num_labels)
        out = []
        for start in range(0, len(self.history), per_group):
            group = [kernels.to_points(q) for q in self.history[start : start + per_group]]  # (M, L) each
            x = torch.cat(group, 1).contiguous()  # (M, len(group)·L)
            if fused:
                weighted_all = _weighted_messages(kernels, weights.to(x.dtype), True)(x)[1]
            else:
                messages = kernels.filter(x)
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


# ------------------------------------------------------------------------------------------ checks
def _check_inputs(unary: torch.Tensor, image: torch.Tensor, iterations: int) -> None:
    """Unary (B, L, *spatial) and guide (B, C, *spatial) with the same B and spatial shape, 1–3 spatial axes."""
    check_tensor(image, "image")
    n = image.dim() - 2 if image.dim() - 2 in SPATIAL_AXES else 2  # the guide's spatial axes (2 if it has none)
    if unary.dim() != n + 2:
        axes = SPATIAL_AXES[n]
        raise ValueError(
            f"unary: expected shape (B, L, {axes}), got {tuple(unary.shape)}"
            + ("" if n == 2 else f" (the image is {n}-D: (B, C, {axes}))")
        )
    if unary.shape[1] < 2 or unary[:, 0].numel() == 0:
        raise ValueError(f"unary: expected at least two labels and one pixel, got {tuple(unary.shape)}")
    check_image(image)
    if not unary.is_floating_point():
        raise TypeError(f"unary: expected a floating-point tensor, got {unary.dtype}")
    b, _, *spatial = unary.shape
    if (image.shape[0], *image.shape[2:]) != (b, *spatial):
        want = ", ".join(str(v) for v in (b, image.shape[1], *spatial))
        raise ValueError(f"image: expected shape ({want}) to match unary, got {tuple(image.shape)}")
    if image.device != unary.device:
        raise ValueError(f"image: on {image.device}, but unary is on {unary.device}")
    check_int(iterations, "iterations", 0)
    check_finite(unary, "unary")


def estimate_mean_field_bytes(
    kernels: CRFKernels, num_labels: int, iterations: int, keep: str | None, dtype: torch.dtype, grad: bool
) -> int:
    """Memory that :func:`mean_field` allocates beyond its kernels, in bytes (an upper estimate).

    Eight (M, L') maps for one iteration (U, Q, the two messages, weighted, transformed, logits, softmax's
    temporary), three (ΣV, L') vertex tables for the fused filter, plus what is kept: T+1 maps of history for
    keep="q" / "steps", six more per iteration for "steps", and six per iteration saved for backward when
    gradients are recorded. L' is L rounded up to a multiple of 8 (the compiled CPU iteration's rows).

    Example:
        >>> k = CRFKernels(torch.rand(1, 3, 32, 32) * 255, CRFParams())
        >>> estimate_mean_field_bytes(k, 21, 5, "q", torch.float32, False) > 14 * 1024 * 21 * 4
        True
    """
    size = torch.finfo(dtype).bits // 8
    maps = 8 + (iterations + 1 if keep is not None else 0) + (6 * iterations if keep == "steps" else 0)
    maps += 6 * iterations if grad else 0
    vertices = sum(lat.num_vertices for lat in kernels.lattices)
    width = -(-num_labels // 8) * 8
    return size * width * (maps * kernels.num_points + 3 * vertices)


def _check_kernels(kernels: CRFKernels, unary: torch.Tensor, params: CRFParams, message_passing: str) -> None:
    """Prebuilt kernels must be those ``params`` and ``message_passing`` would build for this unary's image."""
    if not isinstance(kernels, CRFKernels):
        raise TypeError(f"kernels: expected CRFKernels, got {type(kernels).__name__}")
    if kernels.shape != (unary.shape[0], *unary.shape[2:]):
        axes = SPATIAL_AXES.get(len(kernels.shape) - 1, "…")
        raise ValueError(f"kernels: built for (B, {axes}) = {kernels.shape}, unary is {tuple(unary.shape)}")
    built, wanted = kernels.params.bandwidth_values(), params.bandwidth_values()
    differ = [
        f"{k} {format_bandwidth(built[k], '.6g')} ≠ {format_bandwidth(wanted[k], '.6g')}"
        for k in wanted
        if not bandwidths_close(built[k], wanted[k])
    ]
    if kernels.params.spacing != params.spacing:
        differ.append(f"spacing {kernels.params.spacing} ≠ {params.spacing}")
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
    if not data_checks_enabled() or all_finite(q):
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
    ``keep="steps"``, the lattice path runs fused: in float32 on the CPU, the compiled iteration of
    :mod:`lab.crf.cpu_step` (the same Q to float32 rounding, bit for bit for any thread count); for backend
    "triton", the fused Triton iteration (:mod:`lab.crf.triton_step`); otherwise both kernels' splat, blur
    and slice as one block-sparse product each (:class:`~lab.lattice.multi.MultiLatticeFilter`).

    pydensecrf equivalent: ``d = DenseCRF2D(W, H, L); d.setUnaryEnergy(-U); d.addPairwiseGaussian(sxy=θγ,
    compat=w_spatial); d.addPairwiseBilateral(sxy=θα, srgb=θβ, rgbim=image, compat=w_bilateral);
    d.inference(T)`` with ``normalize="symmetric"`` (its default) and Potts.

    Beyond photos: a guide (B, C, *spatial) with 1 (W), 2 (H, W) or 3 (D, H, W) spatial axes and any C ≥ 1
    channels (grayscale, multispectral, a CT or MRI volume), with the unary (B, L, *spatial) on the same grid;
    θα, θγ per spatial axis, θβ per channel and a voxel ``spacing`` in ``params`` (``docs/crf.md``, "Volumes
    and other guides"). Only an RGB photo (B, 3, H, W) is held to 0..255; other guides are in their own units.

    Args:
        unary: U = −ψ_u, (B, L, H, W) float, L ≥ 2: logits or log-probabilities (float64 computes in float64);
            (B, L, *spatial) for another guide.
        image: the guide: (B, 3, H, W) in 0..255, uint8 or float (finite; values outside −0.5..255.5 are
            refused), or (B, C, *spatial) with 1–3 spatial axes, any C ≥ 1, finite, in its own units.
        params: the CRF parameters (default :class:`CRFParams`()).
        iterations: T ≥ 0.
        keep: None (only the final Q and scores), "q" (also every Q: :attr:`MeanFieldTrace.history`,
            and :attr:`MeanFieldTrace.kl`) or "steps" (also every intermediate of every step).
        message_passing: "lattice" (default), "exact" (O(N²): small images) or "window" (k × k truncation;
            2-D guides only).
        backend: "auto", "torch" or "triton", for the lattice.
        checkpoint: recompute each iteration in the backward pass instead of storing it (large images).
        kernels: prebuilt :class:`CRFKernels` for this image (reuse across calls; must match ``params``'
            bandwidths and normalisation and ``message_passing``).

    Returns:
        A :class:`MeanFieldTrace`: ``q`` and ``logits`` (B, L, *spatial), plus ``history``, ``steps``, ``kl``.

    Example:
        >>> image = torch.rand(1, 3, 16, 16) * 255
        >>> unary = torch.randn(1, 4, 16, 16)
        >>> trace = mean_field(unary, image, CRFParams(normalize="symmetric"), iterations=3)
        >>> trace.q.shape, len(trace.history), trace.kl.shape
        (torch.Size([1, 4, 16, 16]), 4, torch.Size([1, 4]))
        >>> ct = torch.randn(1, 1, 6, 8, 10) * 50 + 40  # (B, C, D, H, W), Hounsfield units
        >>> p = CRFParams(theta_alpha=(2.0, 4.0, 4.0), theta_beta=20.0, theta_gamma=1.0, spacing=(2.0, 1.0, 1.0))
        >>> mean_field(torch.randn(1, 2, 6, 8, 10), ct, p, iterations=3).q.shape
        torch.Size([1, 2, 6, 8, 10])
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

    needs_grad = torch.is_grad_enabled() and (
        unary.requires_grad
        or weights.requires_grad
        or (isinstance(compat, torch.Tensor) and compat.requires_grad)
        or kernels.requires_grad
    )
    # inference only (no graph, nothing but Q kept): a compiled iteration, or the lattice's fused operator where
    # the weights allow it, and Potts' constant term skipped in all but the last iteration
    inference = keep != "steps" and not needs_grad and kernels.message_passing == "lattice"
    fused = inference and _can_fuse(kernels, params.scalar_weights, needs_grad)
    steps: list[MeanFieldStep] | None = [] if keep == "steps" else None
    if iterations > 0 and inference and kernels.backend != "triton" and _cpu_fused(kernels, dtype):
        from lab.crf.cpu_step import CPUMeanField

        history = [] if keep is not None else None  # Q_0 … Q_T, from the compiled passes
        step = CPUMeanField(kernels.lattices, kernels.normalize, weights, compat)
        logits, q = step.run(kernels.to_points(unary.to(dtype)), iterations, history)
    else:
        u = kernels.to_points(unary.to(dtype)).contiguous()  # (M, L) U, channels-last: every step reads rows
        q = initialization(u)  # Q ← softmax(U)
        logits = u
        history = [q] if keep is not None else None
        if iterations > 0 and inference and kernels.backend == "triton" and dtype == torch.float32:
            logits, q = _triton_iterations(u, q, kernels, params, weights, compat, iterations, history)
        elif iterations > 0:
            weighted_messages = _weighted_messages(kernels, weights, fused)
            view = kernels.to_image
            for t in range(iterations):
                if checkpoint and needs_grad and steps is None:
                    logits, q = _checkpoint(_update, q, u, weighted_messages, compat, use_reentrant=False)
                else:
                    logits_needed = not inference or t == iterations - 1
                    logits, q, messages, weighted, transformed = iteration(
                        q, u, weighted_messages, compat, logits_needed=logits_needed
                    )
                    if steps is not None:
                        kept = (view(weighted), view(transformed), view(logits), view(q))
                        steps.append(MeanFieldStep(tuple(view(m) for m in messages), *kept))
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


def _update(
    q: torch.Tensor, u: torch.Tensor, weighted_messages: WeightedMessages, compat: torch.Tensor | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`~lab.crf.steps.iteration`'s (logits, q), the form ``torch.utils.checkpoint`` recomputes."""
    logits, q, *_ = iteration(q, u, weighted_messages, compat)
    return logits, q


def _triton_iterations(
    u: torch.Tensor,
    q: torch.Tensor,
    kernels: CRFKernels,
    params: CRFParams,
    weights: torch.Tensor,
    compat: torch.Tensor | str,
    iterations: int,
    history: list[torch.Tensor] | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """T iterations of the fused Triton step: splat and blur per kernel, then one kernel for slice … softmax."""
    from lab.crf.triton_step import fused_mean_field_iteration
    from lab.lattice.multi import filter_scales

    lattices = kernels.lattices
    scales = [filter_scales(lat, kernels.normalize, u.dtype) for lat in lattices]
    compat_m = compat if isinstance(compat, torch.Tensor) else params.compat_matrix(u.shape[1]).to(u)
    logits = u
    for _ in range(iterations):
        blurred = [lat.ops.blur(lat.ops.splat(pre * q)) for lat, (pre, _) in zip(lattices, scales, strict=True)]
        logits, q = fused_mean_field_iteration(
            u, blurred, list(lattices), [post for _, post in scales], weights, compat_m
        )
        if history is not None:
            history.append(q)
    return logits, q
