"""One iteration of Algorithm 1 as a teaching figure: every intermediate of one class, each with its formula.

For iteration t of a run kept with ``keep="steps"``, :func:`step_maps` gathers, for one class l, the eight maps
of the update Q_{t−1} → Q_t: U, Q_{t−1}, each kernel's message Q̃(m) = k(m) ∗ Q_{t−1}, the weighted sum
Q̌ = Σ_m w(m) Q̃(m), the penalty Q̂ = µ Q̌, the scores U − Q̂ and Q_t = softmax(U − Q̂). At t = 0 there is no
update yet: the maps are U and Q_0 = softmax(U) only.

:func:`step_limits` gives colour scales shared by every t of the run (probabilities 0..1; messages, Q̌ and Q̂
from 0 to their largest value over the run; scores symmetric about 0 over the run), so that scrubbing t
changes the picture only where the numbers change. :func:`step_figure` draws the maps, one colour bar per
panel, with the step's formula under each.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lab.crf.mean_field import MeanFieldTrace

__all__ = ["PANELS", "StepLimits", "step_figure", "step_limits", "step_maps"]

# (key, title, formula under the panel, colour scale group), in Algorithm 1's order
PANELS = (
    ("unary", "U (unary scores)", r"$U_i(l)$, log-probability units", "unary"),
    ("q_prev", "Q_{prev}", r"$Q_{t-1}$: the beliefs the step starts from", "prob"),
    ("bilateral", "Q̃ bilateral", r"step 1: $\tilde Q^{(1)} = k_{\alpha\beta} * Q_{t-1}$", "message"),
    ("spatial", "Q̃ spatial", r"step 1: $\tilde Q^{(2)} = k_{\gamma} * Q_{t-1}$", "message"),
    ("weighted", "Q̌ weighted sum", r"step 2: $\check Q = \sum_m w^{(m)} \tilde Q^{(m)}$", "penalty"),
    ("penalty", "Q̂ = µ Q̌ (penalty)", r"step 3: $\hat Q(l) = \sum_{l'} \mu(l,l')\, \check Q(l')$", "penalty"),
    ("logits", "U − Q̂", r"step 4: $U - \hat Q$", "score"),
    ("q", "Q_{t}", r"step 5: $Q_t = \mathrm{softmax}(U - \hat Q)$", "prob"),
)
_INIT_PANELS = (
    ("unary", "U (unary scores)", r"$U_i(l)$, log-probability units", "unary"),
    ("q", "Q_0", r"step 0: $Q_0 = \mathrm{softmax}(U)$", "prob"),
)
_CMAPS = {"prob": "viridis", "message": "viridis", "penalty": "magma", "unary": "RdBu_r", "score": "RdBu_r"}


@dataclass(frozen=True)
class StepLimits:
    """Colour scales shared across the iterations of one run and class: (low, high) per scale group."""

    prob: tuple[float, float]
    message: tuple[float, float]
    penalty: tuple[float, float]
    unary: tuple[float, float]
    score: tuple[float, float]


def _check_run(trace: MeanFieldTrace, unary: torch.Tensor, label: int) -> tuple[int, int]:
    if trace.steps is None or trace.history is None:
        raise ValueError("trace: needs every step; run mean_field with keep='steps'")
    q0 = trace.history[0]
    if q0.dim() != 4:
        raise ValueError(f"trace: expected a 2-D run (B, L, H, W), got Q of shape {tuple(q0.shape)}")
    if not isinstance(unary, torch.Tensor) or tuple(unary.shape[1:]) != tuple(q0.shape[1:]):
        shape = tuple(unary.shape) if isinstance(unary, torch.Tensor) else type(unary).__name__
        raise ValueError(f"unary: expected (1, {', '.join(map(str, q0.shape[1:]))}) like the run's Q, got {shape}")
    num_labels = q0.shape[1]
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 0 <= label < num_labels:
        raise ValueError(f"label: expected a class id in 0..{num_labels - 1}, got {label!r}")
    return len(trace.steps), num_labels


def step_maps(trace: MeanFieldTrace, unary: torch.Tensor, t: int, label: int) -> dict[str, np.ndarray]:
    """The maps of iteration ``t`` for class ``label`` (batch element 0), each (H, W) float64.

    Args:
        trace: a run with ``keep="steps"``.
        unary: (1, L, H, W) the U the run used.
        t: 0..T; 0 gives the initialisation (keys "unary" and "q"), t ≥ 1 the eight keys of :data:`PANELS`.
        label: the class to show.

    Returns:
        A dict from panel key to map.
    """
    iterations, _ = _check_run(trace, unary, label)
    if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 0 <= t <= iterations:
        raise ValueError(f"t: expected an iteration in 0..{iterations}, got {t!r}")

    def plane(x: torch.Tensor) -> np.ndarray:
        return x[0, label].detach().to(torch.float64).cpu().numpy()

    if t == 0:
        return {"unary": plane(unary), "q": plane(trace.history[0])}
    step = trace.steps[t - 1]
    return {
        "unary": plane(unary),
        "q_prev": plane(trace.history[t - 1]),
        "bilateral": plane(step.messages[0]),
        "spatial": plane(step.messages[1]),
        "weighted": plane(step.weighted),
        "penalty": plane(step.transformed),
        "logits": plane(step.logits),
        "q": plane(step.q),
    }


def step_limits(trace: MeanFieldTrace, unary: torch.Tensor, label: int) -> StepLimits:
    """Colour scales for class ``label`` that hold for every iteration of the run.

    Probabilities always 0..1; messages 0..their largest value over the run; Q̌ and Q̂ 0..the larger of their
    largest values; U symmetric about 0, ± its largest magnitude; U − Q̂ the same over the run (its own scale:
    the penalty can be many times the unary, which would wash U out on a common one).
    """
    _check_run(trace, unary, label)

    def top(xs) -> float:
        return max((float(x[0, label].abs().max()) for x in xs), default=0.0) or 1.0

    steps = trace.steps
    message = top([m for s in steps for m in s.messages])
    penalty = top([s.weighted for s in steps] + [s.transformed for s in steps])
    u, score = top([unary]), top([s.logits for s in steps])
    return StepLimits(
        prob=(0.0, 1.0), message=(0.0, message), penalty=(0.0, penalty), unary=(-u, u), score=(-score, score)
    )


def step_figure(
    trace: MeanFieldTrace,
    unary: torch.Tensor,
    t: int,
    label: int,
    class_name: str | None = None,
    limits: StepLimits | None = None,
):
    """Iteration ``t`` of Algorithm 1 for one class: each map, its colour bar and its formula.

    Args:
        trace: a run with ``keep="steps"``.
        unary: (1, L, H, W) the U the run used.
        t: 0..T (0: the initialisation, two panels).
        label: the class to show.
        class_name: its name for the title (default "label <id>").
        limits: colour scales (default :func:`step_limits` of the run, shared by every t).

    Returns:
        A matplotlib Figure (2 × 4 panels, or 1 × 2 at t = 0).
    """
    from matplotlib.figure import Figure

    maps = step_maps(trace, unary, t, label)
    limits = limits or step_limits(trace, unary, label)
    panels = _INIT_PANELS if t == 0 else PANELS
    rows, cols = (1, 2) if t == 0 else (2, 4)
    fig = Figure(figsize=(3.2 * cols, 3.1 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, (key, title, formula, group) in zip(axes, panels, strict=True):
        low, high = getattr(limits, group)
        im = ax.imshow(maps[key], cmap=_CMAPS[group], vmin=low, vmax=high, interpolation="nearest")
        ax.set_title(title.format(prev=f"{t - 1}", t=f"{t}"), fontsize=10)
        ax.set_xlabel(formula, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, shrink=0.8)
    name = class_name or f"label {label}"
    what = "initialisation" if t == 0 else f"iteration {t}: Q_{t - 1} → Q_{t}"
    fig.suptitle(f"Algorithm 1, {what}, class {name}")
    return fig
