"""The mean-field free energy of the dense CRF, split into its unary, pairwise and entropy terms.

The CRF's Gibbs energy is E(x) = Σ_i ψ_u(x_i) + Σ_{i<j} ψ_p(x_i, x_j) with ψ_u = −U and
ψ_p(l, l') = µ(l, l') Σ_m w(m)_l' k̃(m)_ij, k̃(m) the kernel as the package's filters apply it (normalised
by ``params.normalize``). For a factorised Q the mean-field free energy is

    F(Q) = E_Q[E] − H(Q) = KL(Q‖P) − log Z,

    E_Q[Σ_i ψ_u]       = −Σ_i Σ_l Q_i(l) U_i(l)                              (unary)
    E_Q[Σ_{i<j} ψ_p]   = ½ Σ_i Σ_l Q_i(l) [µ Σ_m w(m) Σ_{j≠i} k̃(m)_ij Q_j]_l   (pairwise)
    −H(Q)              = Σ_i Σ_l Q_i(l) log Q_i(l)                           (negative entropy)

Since KL ≥ 0, F ≥ −log Z: F is bounded below by a negative number and is itself often negative.

The package's filters (exact, window and lattice) include the self pair j = i in every message, as
CRF-RNN and pydensecrf do; :class:`FreeEnergy` keeps that part apart (``self_pairwise``, ½ Σ_i Q_i·Q̂_i's
j = i share), so both conventions can be read off: pydensecrf's ``klDivergence`` (and
:attr:`~lab.crf.mean_field.MeanFieldTrace.kl`) is Σ Q log Q − Σ Q U + Σ Q·Q̂, every ordered pair counted
once and the self pair included: ``unary + 2·(pairwise + self_pairwise) + neg_entropy``
(:attr:`FreeEnergy.kl_densecrf`), which is not F.

With ``normalize="after"`` (CRF-RNN's, the default) k̃_ij = k_ij / Σ_j' k_ij' is not symmetric; the
pairwise term above is then the energy of the symmetrised kernel ½(k̃_ij + k̃_ji), and the mean-field
update (which uses k̃ itself) is not the exact minimiser of F along any pixel: use "symmetric" or "none"
where F must decrease (:mod:`lab.crf.schedules`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from lab._checks import check_tensor, data_checks_enabled
from lab.crf.kernels import CRFKernels
from lab.crf.params import CRFParams
from lab.crf.steps import compatibility_transform, weighting
from lab.lattice.normalize import scales

__all__ = ["FreeEnergy", "filter_self_weights", "free_energy"]

_LOG_CLAMP = 1e-20  # as steps.kl_divergence (pydensecrf): Q·log(max(Q, 1e-20)), so Q = 0 adds 0
_SUM_TOLERANCE = 1e-4  # |Σ_l Q_i(l) − 1| accepted: float32 softmax sums are within ~L·6e-8 of 1
SELF_PAIR_FILTERS = ("exact", "window")  # filters whose self weight k_ii is known: exp(0) = 1


@dataclass(frozen=True)
class FreeEnergy:
    """The terms of the mean-field free energy of one batch of Q maps, each a (B,) float64 tensor.

    Attributes:
        unary: E_Q[Σ_i ψ_u(x_i)] = −Σ_i Σ_l Q_i(l) U_i(l).
        pairwise: E_Q[Σ_{i<j} ψ_p(x_i, x_j)]: ½ Σ_i Q_i·Q̂_i without the self pair j = i.
        self_pairwise: the self pair's share of ½ Σ_i Q_i·Q̂_i, which the package's filters include:
            ½ Σ_i Σ_l Q_i(l) [µ Σ_m w(m) k̃(m)_ii Q_i]_l.
        neg_entropy: −H(Q) = Σ_i Σ_l Q_i(l) log Q_i(l) (≤ 0).
    """

    unary: torch.Tensor
    pairwise: torch.Tensor
    self_pairwise: torch.Tensor
    neg_entropy: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        """F = unary + pairwise + neg_entropy = KL(Q‖P) − log Z, (B,): what sequential mean field never raises."""
        return self.unary + self.pairwise + self.neg_entropy

    @property
    def kl_densecrf(self) -> torch.Tensor:
        """The KL pydensecrf prints (and :attr:`MeanFieldTrace.kl`): unary + 2·(pairwise + self) + neg_entropy."""
        return self.unary + 2.0 * (self.pairwise + self.self_pairwise) + self.neg_entropy


def filter_self_weights(kernels: CRFKernels) -> tuple[torch.Tensor, ...]:
    """The self weight k̃(m)_ii of each kernel as the filter applies it, (M, 1) per kernel.

    For the exact and window filters k_ii = exp(0) = 1, so k̃_ii is the normalisation's pre_i · post_i:
    1 ("none"), 1 / (K1)_i ("after", "symmetric"). The lattice's self weight is not 1 and not computed.

    Args:
        kernels: :class:`CRFKernels` built with message_passing "exact" or "window".

    Returns:
        (k̃(bilateral)_ii, k̃(spatial)_ii), each (M, 1) in ``kernels.dtype``, rows in point layout.

    Example:
        >>> k = CRFKernels(torch.rand(1, 3, 4, 4) * 255, CRFParams(normalize="none"), "exact")
        >>> [float(w.max()) for w in filter_self_weights(k)]
        [1.0, 1.0]
    """
    if not isinstance(kernels, CRFKernels):
        raise TypeError(f"kernels: expected CRFKernels, got {type(kernels).__name__}")
    if kernels.message_passing not in SELF_PAIR_FILTERS:
        raise ValueError(
            f"kernels: the self pair's weight is known for message_passing {list(SELF_PAIR_FILTERS)}, got "
            f"{kernels.message_passing!r} (the lattice's k_ii is not 1); build the kernels with 'exact' (small "
            "images) or 'window'"
        )
    ones = torch.ones(kernels.num_points, 1, dtype=kernels.dtype)
    out = []
    for f in kernels.filters:
        k1 = f.filter_points(ones, "none")  # (M, 1) K·1, the self term included
        pre, post = scales(k1, kernels.normalize)
        out.append(pre * post)  # k̃_ii = post_i · k_ii · pre_i, k_ii = 1
    return tuple(out)


def _check_q(q: object, unary: torch.Tensor, name: str = "q") -> torch.Tensor:
    """Q: a float tensor of the unary's shape holding probabilities over the labels (axis 1)."""
    check_tensor(q, name)
    if q.shape != unary.shape:
        raise ValueError(f"{name}: expected the unary's shape {tuple(unary.shape)}, got {tuple(q.shape)}")
    if not q.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got {q.dtype}")
    if q.device != unary.device:
        raise ValueError(f"{name}: on {q.device}, but unary is on {unary.device}")
    if data_checks_enabled():
        values = q.detach()
        if not bool(torch.isfinite(values).all()):
            bad = int((~torch.isfinite(values)).sum())
            raise ValueError(f"{name}: expected finite values, got {bad} NaN/Inf entries")
        if float(values.min()) < 0:
            raise ValueError(f"{name}: expected probabilities ≥ 0, got a minimum of {float(values.min()):.3g}")
        gap = float((values.double().sum(1) - 1).abs().max())
        if gap > _SUM_TOLERANCE:
            raise ValueError(
                f"{name}: expected probabilities summing to 1 over the labels (axis 1), off by up to {gap:.3g}"
            )
    return q


def free_energy(
    unary: torch.Tensor,
    q: torch.Tensor | Sequence[torch.Tensor],
    image: torch.Tensor,
    params: CRFParams | None = None,
    message_passing: str = "exact",
    *,
    kernels: CRFKernels | None = None,
) -> FreeEnergy:
    """The mean-field free energy of Q split into unary, pairwise (self pair apart) and entropy terms.

    Signs follow the package's update Q ← softmax(U − µ Σ_m w(m) k̃(m) ∗ Q): ψ_u = −U, and ψ_p is
    µ(l, l') Σ_m w(m)_l' k̃(m)_ij (see the module docstring; ``total`` is KL(Q‖P) − log Z). Computed in
    float64 (the filtering in the kernels' dtype: always float64 for the exact filter).

    Args:
        unary: U, (B, L, H, W) (or (B, L, *spatial) for another guide), L ≥ 2, finite.
        q: Q, the shape of ``unary``: probabilities over axis 1 (≥ 0, summing to 1); or a sequence of T such
            maps (e.g. :attr:`MeanFieldTrace.history`), filtered side by side in one pass.
        image: the guide, as :func:`~lab.crf.mean_field.mean_field` takes it.
        params: the CRF parameters (default :class:`CRFParams`()).
        message_passing: "exact" (the O(N²) filter: small images) or "window"; the lattice's self weight is
            unknown, so it is refused.
        kernels: prebuilt :class:`CRFKernels` for this image and ``params`` (built if None).

    Returns:
        A :class:`FreeEnergy` of (B,) float64 tensors; (B, T) for a sequence of T maps.

    Example:
        >>> image = torch.rand(1, 3, 5, 6) * 255
        >>> unary = torch.randn(1, 3, 5, 6)
        >>> e = free_energy(unary, torch.softmax(unary, 1), image, CRFParams(theta_alpha=3.0))
        >>> bool(e.neg_entropy < 0), bool(e.pairwise > 0)
        (True, True)
    """
    from lab.crf.mean_field import _check_inputs, _check_kernels

    params = CRFParams() if params is None else params
    if not isinstance(params, CRFParams):
        raise TypeError(f"params: expected a CRFParams, got {type(params).__name__}")
    check_tensor(unary, "unary")
    _check_inputs(unary, image, 0)
    maps = [q] if isinstance(q, torch.Tensor) else list(q) if isinstance(q, Sequence) else None
    if not maps:
        raise TypeError(f"q: expected a tensor or a non-empty sequence of tensors, got {type(q).__name__} {q!r:.60}")
    for t, q_t in enumerate(maps):
        _check_q(q_t, unary, "q" if isinstance(q, torch.Tensor) else f"q[{t}]")
    if message_passing not in SELF_PAIR_FILTERS:
        raise ValueError(
            f"message_passing: expected one of {list(SELF_PAIR_FILTERS)} (filters whose self pair is known), "
            f"got {message_passing!r}"
        )
    if kernels is None:
        kernels = CRFKernels(image, params, message_passing, dtype=torch.float64)
    else:
        _check_kernels(kernels, unary, params, message_passing)
    num_labels, batch, steps = unary.shape[1], unary.shape[0], len(maps)
    dtype = kernels.dtype
    weights = params.weights(num_labels, dtype=dtype).detach()  # (K, L) w(m)_l
    compat = "potts" if params.is_potts else params.compat_matrix(num_labels).detach().to(dtype)  # µ
    u64 = kernels.to_points(unary.detach().to(torch.float64))  # (M, L)
    q_pts = torch.cat([kernels.to_points(q_t.detach().to(dtype)) for q_t in maps], 1)  # (M, T·L) side by side
    all_messages = kernels.filter(q_pts)  # Q̃(m) = k̃(m) ∗ Q, self pair included: T maps in one filtering
    self_weights = filter_self_weights(kernels)

    def per_image(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(batch, -1).sum(1)

    terms: dict[str, list[torch.Tensor]] = {"unary": [], "pairwise": [], "self_pairwise": [], "neg_entropy": []}
    for t in range(steps):
        cols = slice(t * num_labels, (t + 1) * num_labels)
        q_t = q_pts[:, cols]
        q64 = q_t.to(torch.float64)
        transformed = compatibility_transform(weighting([m[:, cols] for m in all_messages], weights), compat)  # Q̂
        own = [s * q_t for s in self_weights]  # the j = i share of each Q̃(m)
        transformed_self = compatibility_transform(weighting(own, weights), compat)
        half_all = 0.5 * per_image(q64 * transformed.to(torch.float64))
        self_part = 0.5 * per_image(q64 * transformed_self.to(torch.float64))
        terms["unary"].append(-per_image(q64 * u64))
        terms["pairwise"].append(half_all - self_part)
        terms["self_pairwise"].append(self_part)
        terms["neg_entropy"].append(per_image(q64 * torch.log(q64.clamp_min(_LOG_CLAMP))))
    if isinstance(q, torch.Tensor):
        return FreeEnergy(**{k: v[0] for k, v in terms.items()})
    return FreeEnergy(**{k: torch.stack(v, 1) for k, v in terms.items()})
