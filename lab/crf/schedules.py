"""Update schedules of mean field beside :func:`~lab.crf.mean_field.mean_field`'s parallel one: damped and sequential.

* :func:`damped_mean_field`: every pixel at once, mixed with the previous Q,
  Q ← (1 − λ) Q + λ softmax(U − Q̂(Q)); λ = 1 is the package's (and the paper's) parallel update.
* :func:`sequential_mean_field`: coordinate descent, one pixel at a time in a fixed order,
  Q_i ← softmax(U_i − Σ_{j≠i} A_ij Q_j) with the current Q of every other pixel. With a symmetric
  operator (``normalize`` "symmetric" or "none", µ symmetric, one weight per kernel) each update is the
  exact minimiser of the free energy F (:func:`lab.crf.energy.free_energy`) over Q_i, so F never
  increases. Every pixel of a dense CRF is coupled to every other, so there are no two halves that could
  be updated at once (a checkerboard works only for nearest-neighbour grids): the sweep is pixel by pixel.

``self_pairs`` says whether the messages count the self pair j = i, as the package's filters do
(``True``); without it (``False``) the update is the mean field of the Gibbs energy E(x), whose pairs are
i ≠ j. With the self pair, a symmetric kernel, Potts µ and scalar weights ≥ 0, the self pair's share
½ Q_i·µ w k̃_ii Q_i is concave in Q_i, so the sequential update minimises a tight upper bound of
``total + self_pairwise`` and still never raises it.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

from lab._checks import check_int, check_tensor
from lab.crf.energy import filter_self_weights
from lab.crf.kernels import CRFKernels
from lab.crf.mean_field import MeanFieldTrace, _check_inputs, _check_kernels, _check_result
from lab.crf.params import CRFParams
from lab.crf.steps import initialization, iteration, weighting
from lab.lattice.exact import exact_gaussian_filter
from lab.lattice.limits import check_memory

__all__ = ["MAX_SEQUENTIAL_POINTS", "damped_mean_field", "sequential_mean_field"]

MAX_SEQUENTIAL_POINTS = 4096  # pixels per image: two (N, N) float64 kernel matrices are 256 MiB at this size
# damped_mean_field with the exact filter forms the (N, N) filter matrices once, up to this many pixels per image
# (2 × 32 MiB in float64): each iteration is then a matrix product instead of N² kernel evaluations
MATRIX_POINTS = 2048


def _check_params(params: CRFParams | None) -> CRFParams:
    params = CRFParams() if params is None else params
    if not isinstance(params, CRFParams):
        raise TypeError(f"params: expected a CRFParams, got {type(params).__name__}")
    return params


def _check_damping(damping: object) -> float:
    if isinstance(damping, bool) or not isinstance(damping, numbers.Real):
        raise TypeError(f"damping: expected a number in (0, 1], got {type(damping).__name__} {damping!r}")
    lam = float(damping)
    if not 0.0 < lam <= 1.0:
        raise ValueError(f"damping: expected a number in (0, 1] (1 = the undamped parallel update), got {damping!r}")
    return lam


def damped_mean_field(
    unary: torch.Tensor,
    image: torch.Tensor,
    params: CRFParams | None = None,
    iterations: int = 5,
    damping: float = 1.0,
    message_passing: str = "lattice",
    *,
    self_pairs: bool = True,
    kernels: CRFKernels | None = None,
) -> MeanFieldTrace:
    """Parallel mean field with damping: Q ← (1 − λ) Q + λ softmax(U − Q̂(Q)), T times from softmax(U).

    λ = 1 with ``self_pairs=True`` is :func:`~lab.crf.mean_field.mean_field` (tested to 1e-6). Runs the
    PyTorch steps (:func:`~lab.crf.steps.iteration`) on every filter; differentiable like them. The exact
    filter of an image of up to 2048 pixels (``MATRIX_POINTS``) is formed once as its (N, N) matrices.

    Args:
        unary: U, (B, L, H, W) (or (B, L, *spatial)), L ≥ 2.
        image: the guide, as :func:`~lab.crf.mean_field.mean_field` takes it.
        params: the CRF parameters (default :class:`CRFParams`()).
        iterations: T ≥ 0.
        damping: λ in (0, 1].
        message_passing: "lattice", "exact" or "window".
        self_pairs: count the self pair j = i in the messages (the package's filters do); False needs the
            exact or window filter (:func:`~lab.crf.energy.filter_self_weights`).
        kernels: prebuilt :class:`CRFKernels` for this image and ``params``.

    Returns:
        A :class:`~lab.crf.mean_field.MeanFieldTrace` with ``history`` (T+1 maps) and ``kl``; its
        ``logits`` are the last update's U − Q̂ (of the undamped proposal).

    Example:
        >>> image, unary = torch.rand(1, 3, 8, 8) * 255, torch.randn(1, 3, 8, 8)
        >>> trace = damped_mean_field(unary, image, iterations=4, damping=0.5)
        >>> len(trace.history), trace.q.shape
        (5, torch.Size([1, 3, 8, 8]))
    """
    params = _check_params(params)
    check_tensor(unary, "unary")
    _check_inputs(unary, image, iterations)
    lam = _check_damping(damping)
    dtype = torch.float64 if unary.dtype == torch.float64 else torch.float32
    if kernels is None:
        kernels = CRFKernels(image, params, message_passing, dtype=dtype)
    else:
        _check_kernels(kernels, unary, params, message_passing)
    num_labels = unary.shape[1]
    weights = params.weights(num_labels, dtype=dtype, device=unary.device)  # (K, L) w(m)_l
    compat = "potts" if params.is_potts else params.compat_matrix(num_labels).to(dtype)  # µ
    own = None if self_pairs else filter_self_weights(kernels)
    small = kernels.message_passing == "exact" and kernels.num_points // kernels.shape[0] <= MATRIX_POINTS
    filtering = _MatrixFilter(kernels, dtype) if small else kernels

    def weighted_messages(q: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        messages = filtering.filter(q)  # Q̃(m) = k̃(m) ∗ Q
        if own is not None:
            messages = tuple(m - s * q for m, s in zip(messages, own, strict=True))  # without j = i
        return messages, weighting(messages, weights)  # Q̌ = Σ_m w(m) Q̃(m)

    u = kernels.to_points(unary.to(dtype)).contiguous()  # (M, L)
    q = initialization(u)  # Q ← softmax(U)
    logits, history = u, [q]
    for _ in range(iterations):
        logits, proposal, *_ = iteration(q, u, weighted_messages, compat)  # softmax(U − Q̂)
        q = proposal if lam == 1.0 else (1.0 - lam) * q + lam * proposal
        history.append(q)
    _check_result(q, params, unary)
    view = kernels.to_image
    return MeanFieldTrace(
        q=view(q),
        logits=view(logits),
        history=tuple(view(h) for h in history),
        steps=None,
        kernels=kernels,
        unary=unary.to(dtype),
        weights=weights,
        compat=compat,
    )


def _filter_matrices(kernels: CRFKernels, b: int) -> list[torch.Tensor]:
    """Kernel m's filter matrix k̃(m) of image b as the exact filter applies it, (N, N) float64 each: [i, j] = k̃_ij."""
    n = kernels.num_points // kernels.shape[0]
    eye = torch.eye(n, dtype=torch.float64)
    out = []
    for f in kernels.filters:
        feats = f.features[b].reshape(f.features.shape[1], n).T  # (N, d)
        out.append(exact_gaussian_filter(eye, feats, kernels.normalize))  # column j = k̃ e_j
    return out


class _MatrixFilter:
    """``kernels.filter`` of the exact filter as products with its (B, N, N) matrices, formed once."""

    def __init__(self, kernels: CRFKernels, dtype: torch.dtype) -> None:
        self.batch, self.n = kernels.shape[0], kernels.num_points // kernels.shape[0]
        per_image = [_filter_matrices(kernels, b) for b in range(self.batch)]
        self.matrices = [torch.stack([m[k] for m in per_image]).to(dtype) for k in range(len(kernels.filters))]

    def filter(self, q: torch.Tensor) -> tuple[torch.Tensor, ...]:
        qb = q.reshape(self.batch, self.n, q.shape[1])  # (B, N, L)
        return tuple(torch.bmm(k, qb).reshape(q.shape) for k in self.matrices)  # Q̃(m) = k̃(m) Q


def sequential_mean_field(
    unary: torch.Tensor,
    image: torch.Tensor,
    params: CRFParams | None = None,
    sweeps: int = 5,
    *,
    self_pairs: bool = False,
    order: torch.Tensor | None = None,
    kernels: CRFKernels | None = None,
) -> MeanFieldTrace:
    """Sequential (coordinate-descent) mean field with the exact filter: one pixel at a time, T sweeps.

    Each sweep visits every pixel once in ``order`` and sets Q_i ← softmax(U_i − [µ Σ_m w(m) Σ_j k̃(m)_ij
    Q_j]) from the current Q (j ≠ i unless ``self_pairs``). The filter matrices k̃(m) are formed explicitly
    (the exact filter of the identity), and the messages updated by one column per pixel: O(N²·L) per sweep,
    in float64. Without gradients. See the module docstring for when F never increases.

    Args:
        unary: U, (B, L, H, W) (or (B, L, *spatial)), L ≥ 2, at most 4096 pixels per image.
        image: the guide, as :func:`~lab.crf.mean_field.mean_field` takes it.
        params: the CRF parameters (default :class:`CRFParams`()).
        sweeps: T ≥ 0.
        self_pairs: count the self pair j = i in the messages (as the package's parallel update does).
        order: (N,) permutation of the pixel indices (C order within one image) to visit; default raster.
        kernels: prebuilt exact :class:`CRFKernels` for this image and ``params``.

    Returns:
        A float64 :class:`~lab.crf.mean_field.MeanFieldTrace` with ``history`` (Q after each sweep) and
        ``kl``; ``logits`` hold each pixel's last U − Q̂.

    Example:
        >>> image, unary = torch.rand(1, 3, 6, 6) * 255, torch.randn(1, 3, 6, 6)
        >>> p = CRFParams(theta_alpha=3.0, normalize="symmetric")
        >>> trace = sequential_mean_field(unary, image, p, sweeps=3)
        >>> len(trace.history), trace.q.dtype
        (4, torch.float64)
    """
    params = _check_params(params)
    check_tensor(unary, "unary")
    check_int(sweeps, "sweeps", 0)
    _check_inputs(unary, image, sweeps)
    if kernels is None:
        kernels = CRFKernels(image, params, "exact", dtype=torch.float64)
    else:
        _check_kernels(kernels, unary, params, "exact")
    batch, num_labels = unary.shape[:2]
    n = kernels.num_points // batch
    if n > MAX_SEQUENTIAL_POINTS:
        raise ValueError(
            f"unary: sequential mean field forms the N × N filter matrices; expected at most "
            f"{MAX_SEQUENTIAL_POINTS} pixels per image, got {n}"
        )
    check_memory(len(kernels.filters) * n * n * 8 * 2, torch.device("cpu"), f"sequential mean field: {n} × {n} kernels")
    if order is None:
        visit = np.arange(n)
    else:
        check_tensor(order, "order")
        visit = order.detach().cpu().numpy()
        if order.dim() != 1 or order.dtype.is_floating_point or not np.array_equal(np.sort(visit), np.arange(n)):
            raise ValueError(f"order: expected a (N,) integer permutation of 0..{n - 1}, got {tuple(order.shape)}")
    weights = params.weights(num_labels, dtype=torch.float64).detach().numpy()  # (K, L)
    mu = params.compat_matrix(num_labels, dtype=torch.float64).detach().to(torch.float64).numpy()  # (L, L)
    u_all = kernels.to_points(unary.detach().to(torch.float64)).numpy().reshape(batch, n, num_labels)
    diag = [s.numpy().reshape(batch, n) for s in filter_self_weights(kernels)] if not self_pairs else None

    history = np.empty((sweeps + 1, batch, n, num_labels))
    logits_all = u_all.copy()
    for b in range(batch):
        matrices = _filter_matrices(kernels, b)
        cols = np.stack([k.detach().T.contiguous().numpy() for k in matrices])  # (K, N, N): [m, i] = k̃(m)[:, i]
        u = u_all[b]
        q = np.exp(u - u.max(1, keepdims=True))
        q /= q.sum(1, keepdims=True)  # Q ← softmax(U)
        history[0, b] = q
        own = None if diag is None else np.stack([d[b] for d in diag])  # (K, N) k̃(m)_ii
        for t in range(sweeps):
            msgs = np.einsum("kji,jl->kil", cols, q)  # (K, N, L) Q̃(m) = k̃(m) Q, exact at each sweep's start
            for i in visit:
                m_i = msgs[:, i]  # (K, L)
                if own is not None:
                    m_i = m_i - own[:, i, None] * q[i]  # without the self pair
                logit = u[i] - mu @ (weights * m_i).sum(0)  # U_i − µ Σ_m w(m) Q̃(m)_i
                new = np.exp(logit - logit.max())
                new /= new.sum()
                msgs += cols[:, i, :, None] * (new - q[i])  # Q̃(m) += k̃(m)[:, i] ⊗ ΔQ_i
                q[i] = new
                logits_all[b, i] = logit
            history[t + 1, b] = q

    def image_of(x: np.ndarray) -> torch.Tensor:
        return kernels.to_image(torch.from_numpy(x.reshape(batch * n, num_labels)))

    q_out = image_of(history[-1])
    _check_result(q_out, params, unary)
    return MeanFieldTrace(
        q=q_out,
        logits=image_of(logits_all),
        history=tuple(image_of(h) for h in history),
        steps=None,
        kernels=kernels,
        unary=unary.detach().to(torch.float64),
        weights=torch.from_numpy(weights),
        compat="potts" if params.is_potts else torch.from_numpy(mu),
    )
