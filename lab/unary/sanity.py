"""What a unary looks like before :func:`lab.mean_field` sees it: log-probabilities, or a common mistake.

:func:`unary_report` reads a (B, L, H, W) U and says which of a few kinds its values are, counts NaN and Inf,
measures how confident it is (near-one-hot pixels, the entropy of softmax(U)) and says in words what is
wrong and what the CRF can and cannot do with it. Mean field starts from Q₀ = softmax(U) and adds the
pairwise messages to U, so a per-pixel offset of U changes nothing, while its *scale* decides how far the
pairwise terms can move a label.

The kinds, tried in this order on the pixels that can be read (no NaN, no +Inf, not all −Inf; −Inf is log 0):

| kind                | rule                                                        | ``row_sum_error``        |
|---------------------|-------------------------------------------------------------|--------------------------|
| "log-probabilities" | Σ_l exp(U) = 1 at every pixel (so U ≤ 0): what is expected  | max abs(Σ_l exp(U) − 1)  |
| "probabilities"     | all U in [0, 1] and Σ_l U = 1: p passed where log p belongs | max abs(Σ_l U − 1)       |
| "probability-like"  | all U in [0, 1], some > 0, rows not summing to 1            | max abs(Σ_l U − 1)       |
| "energies"          | all U ≥ 0 and Σ_l exp(−U) = 1: −log p, pydensecrf's sign    | max abs(Σ_l exp(−U) − 1) |
| "logits"            | anything else that is finite (scores, not normalised: fine) | max abs(Σ_l exp(U) − 1)  |
| "non-finite"        | no pixel can be read                                        | NaN                      |

Each "= 1" holds within max(1e-3, 2·eps(dtype)), the tolerance :func:`lab.unary_from_softmax` accepts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lab._checks import check_shape
from lab.unary.convert import _PROB_TOL

__all__ = [
    "ENTROPY_BINS",
    "KINDS",
    "NEAR_ONE_HOT_P",
    "NEAR_ONE_HOT_WARN",
    "UNIFORM_ENTROPY_FRACTION",
    "UnaryReport",
    "unary_report",
]

KINDS = ("log-probabilities", "probabilities", "probability-like", "energies", "logits", "non-finite")

# A pixel is "near one-hot" when softmax(U) gives its top label ≥ 0.999: a margin of at least log(999) ≈ 6.9
# nats over every other label. The default pairwise weights (w_bilateral + w_spatial = 13, Potts, normalised
# kernels) can only overcome that where most of the pixel's neighbourhood disagrees: at boundaries and in
# small objects. So such pixels can be eroded, not relabelled from the inside.
NEAR_ONE_HOT_P = 0.999
# Warn when more than half the pixels are near one-hot: then the unary, not the image, decides most labels.
NEAR_ONE_HOT_WARN = 0.5
# Warn when the mean entropy is above 90 % of log L (uniform): the unary then barely prefers any label and
# the pairwise terms (the image's edges) decide. 0.9·log L is p_max ≈ 0.3 for L = 21, ≈ 0.7 for L = 2.
UNIFORM_ENTROPY_FRACTION = 0.9
# Fixed bins of the entropy histogram, from 0 (one-hot) to log L (uniform), in nats.
ENTROPY_BINS = 10


@dataclass(frozen=True)
class UnaryReport:
    """What :func:`unary_report` found (statistics of softmax(U) over the pixels that could be read).

    Attributes:
        shape: (B, L, H, W) of the unary.
        kind: one of :data:`KINDS` (the module docstring gives each rule).
        nan_count: NaN entries.
        inf_count: +Inf and −Inf entries (mean field refuses both).
        value_min: the smallest finite value (NaN if none).
        value_max: the largest finite value (NaN if none).
        row_sum_error: how far the rows are from normalised in ``kind``'s reading (module docstring).
        near_one_hot_fraction: the fraction of pixels whose top softmax probability is ≥ :data:`NEAR_ONE_HOT_P`.
        entropy_mean: mean entropy of softmax(U) in nats (0 = one-hot, log L = uniform).
        entropy_max: log L, the entropy of the uniform distribution.
        entropy_counts: pixels per bin, :data:`ENTROPY_BINS` equal bins over [0, log L].
        entropy_edges: the ENTROPY_BINS + 1 bin edges in nats.
        messages: plain-English sentences: what is wrong and what the CRF can do with it (empty: no problem).
    """

    shape: tuple[int, int, int, int]
    kind: str
    nan_count: int
    inf_count: int
    value_min: float
    value_max: float
    row_sum_error: float
    near_one_hot_fraction: float
    entropy_mean: float
    entropy_max: float
    entropy_counts: tuple[int, ...]
    entropy_edges: tuple[float, ...]
    messages: tuple[str, ...]

    def __str__(self) -> str:
        lines = [
            f"unary {self.shape}: {self.kind}, values {self.value_min:.4g}..{self.value_max:.4g}, "
            f"row-sum error {self.row_sum_error:.2g}",
            f"NaN {self.nan_count}, Inf {self.inf_count}; near one-hot {_pct(self.near_one_hot_fraction)} of pixels; "
            f"entropy mean {self.entropy_mean:.3g} nats of log L = {self.entropy_max:.3g}",
            f"entropy histogram (nats, {len(self.entropy_counts)} bins over 0..{self.entropy_max:.3g}): "
            + " ".join(str(c) for c in self.entropy_counts),
        ]
        lines += [f"- {m}" for m in self.messages] or ["- no problems found"]
        return "\n".join(lines)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def _pct(x: float) -> str:
    return "nan %" if math.isnan(x) else f"{100 * x:.3g} %"


def unary_report(unary: torch.Tensor) -> UnaryReport:
    """Say what kind of values a unary holds and what the CRF can do with it.

    Reads every value (a device → host copy of a few numbers); never changes ``unary``. Computed in float64.

    Args:
        unary: (B, L, H, W) floating-point U, as :func:`lab.mean_field` would receive it, L ≥ 2.

    Returns:
        A :class:`UnaryReport`; ``str(report)`` is a short summary.

    Raises:
        TypeError: ``unary`` is not a floating-point tensor.
        ValueError: not (B, L, H, W), fewer than two labels, or no pixel.

    Example:
        >>> p = torch.tensor([0.9, 0.1]).view(1, 2, 1, 1)
        >>> unary_report(p.log()).kind, unary_report(p).kind
        ('log-probabilities', 'probabilities')
        >>> unary_report(p).messages[0][:48]
        'These look like probabilities, not log-probabili'
    """
    check_shape(unary, "unary", ["B", "L", "H", "W"])
    if not unary.is_floating_point():
        raise TypeError(f"unary: expected a floating-point tensor, got {unary.dtype}")
    b, n_labels, h, w = unary.shape
    if n_labels < 2 or b * h * w == 0:
        raise ValueError(f"unary: expected at least two labels and one pixel, got {tuple(unary.shape)}")
    tol = max(_PROB_TOL, 2 * torch.finfo(unary.dtype).eps)
    u = unary.detach().to(torch.float64)  # (B, L, H, W)
    nan, pos_inf, neg_inf = torch.isnan(u), u == math.inf, u == -math.inf
    nan_count, inf_count = int(nan.sum()), int((pos_inf | neg_inf).sum())
    readable = ~(nan | pos_inf).any(1) & (u > -math.inf).any(1)  # (B, H, W): numbers or log 0, one finite
    v = u.permute(0, 2, 3, 1)[readable]  # (P, L)
    finite = v[torch.isfinite(v)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.numel() else (math.nan, math.nan)
    kind, err = _classify(v, lo, hi, tol)

    log_q = torch.log_softmax(v, 1)  # (P, L)
    q = log_q.exp()
    entropy = (-torch.where(q > 0, q * log_q, torch.zeros_like(q)).sum(1)).clamp_min(0)  # (P,) nats, 0·log 0 = 0
    log_l = math.log(n_labels)
    edges = torch.linspace(0, log_l, ENTROPY_BINS + 1, dtype=torch.float64)
    bins = (entropy / log_l * ENTROPY_BINS).floor().clamp(0, ENTROPY_BINS - 1).long()
    counts = torch.bincount(bins, minlength=ENTROPY_BINS)
    p = v.shape[0]
    one_hot = float((q.max(1).values >= NEAR_ONE_HOT_P).sum()) / p if p else math.nan
    entropy_mean = float(entropy.mean()) if p else math.nan
    fields = dict(
        shape=(b, n_labels, h, w),
        kind=kind,
        nan_count=nan_count,
        inf_count=inf_count,
        value_min=lo,
        value_max=hi,
        row_sum_error=err,
        near_one_hot_fraction=one_hot,
        entropy_mean=entropy_mean,
        entropy_max=log_l,
        entropy_counts=tuple(int(c) for c in counts),
        entropy_edges=tuple(float(e) for e in edges),
    )
    return UnaryReport(**fields, messages=tuple(_messages(fields, unreadable=b * h * w - p)))


def _classify(v: torch.Tensor, lo: float, hi: float, tol: float) -> tuple[str, float]:
    """The kind of (P, L) values (the module docstring's table, in its order) and its row-sum error."""
    if v.shape[0] == 0:
        return "non-finite", math.nan
    log_err = float((torch.logsumexp(v, 1).exp() - 1).abs().max())  # inf for large logits: fine, not small
    if log_err <= tol:
        return "log-probabilities", log_err
    has_log0 = bool((v == -math.inf).any())
    if not has_log0 and lo >= -tol and hi <= 1 + tol:
        prob_err = float((v.sum(1) - 1).abs().max())
        if prob_err <= tol:
            return "probabilities", prob_err
        if hi > tol:  # all zeros is a uniform logit map, not scores
            return "probability-like", prob_err
    if not has_log0 and lo >= -tol:
        energy_err = float((torch.logsumexp(-v, 1).exp() - 1).abs().max())
        if energy_err <= tol:
            return "energies", energy_err
    return "logits", log_err


def _messages(f: dict, unreadable: int) -> list[str]:
    """The report's sentences, most serious first."""
    out = []
    kind = f["kind"]
    if f["nan_count"]:
        out.append(
            f"{_plural(f['nan_count'], 'NaN value')}: lab.mean_field refuses them; find where the source divides "
            "by zero or takes the log of a negative number."
        )
    if f["inf_count"]:
        out.append(
            f"{_plural(f['inf_count'], 'infinite value')}: lab.mean_field refuses them; -inf usually is log(0): "
            "clip the probabilities before the log (lab.unary_from_softmax clips at 1e-5)."
        )
    if unreadable:
        out.append(f"{_plural(unreadable, 'pixel')} with NaN or +inf (or only -inf) left out of the statistics.")
    if kind == "probabilities":
        out.append(
            "These look like probabilities, not log-probabilities (values in [0, 1] summing to 1 over the "
            "labels): pass torch.log(p) (or lab.unary_from_softmax(p)). As given, no two labels differ by more "
            "than 1 nat, so the CRF's pairwise terms will override the unary almost everywhere."
        )
    elif kind == "probability-like":
        out.append(
            f"Values lie in [0, 1] but do not sum to 1 over the labels (error up to {f['row_sum_error']:.3g}): "
            "per-class sigmoid scores, or probabilities normalised over the wrong dimension (a (B, H, W, L) "
            "layout? permute to (B, L, H, W)). For scores pass their log; as given, labels differ by at most "
            "1 nat and the pairwise terms will override them."
        )
    elif kind == "energies":
        out.append(
            "These look like energies -log p (pydensecrf's unary sign), not U = log p: pass -U. As given, the "
            "CRF starts from the least likely label at every pixel."
        )
    elif kind == "logits":
        if f["value_min"] >= 0 and f["value_max"] > 1:  # large non-negative values: −log p is the usual cause
            out.append(
                "All values are >= 0: if they are energies (-log p, pydensecrf's sign) rather than scores, pass "
                "their negative; U should be large for the likely label."
            )
    elif kind == "non-finite":
        out.append("No pixel holds usable values: there is nothing to report beyond the counts above.")
    one_hot = f["near_one_hot_fraction"]
    if one_hot >= NEAR_ONE_HOT_WARN:
        out.append(
            f"{_pct(one_hot)} of pixels are near one-hot (top probability >= {NEAR_ONE_HOT_P}): the CRF will "
            "only smooth boundaries and may erode small objects; soften the unary (U / T with a temperature "
            "T > 1) to let it move labels."
        )
    flat = kind not in ("probabilities", "probability-like")  # those messages already say it
    if flat and f["entropy_mean"] >= UNIFORM_ENTROPY_FRACTION * f["entropy_max"]:
        out.append(
            f"The unary is nearly uniform (mean entropy {f['entropy_mean']:.3g} nats of log L = "
            f"{f['entropy_max']:.3g}): the image's edges, not the unary, will decide the labels; sharpen it "
            "(a temperature T < 1) or check its source."
        )
    return out
