"""The app's "fit the CRF to this ground truth": a few seconds of :func:`lab.fit_crf` on the image on screen.

:func:`fit_to_truth` fits θ, the kernel weights and µ to the one image shown, at the working size, against its
ground truth (uploaded, or the example photo's label map), starting from the knobs as they are, and returns
what the app needs to move its knobs there: each knob's fitted value clamped into the knob's range (with a
note for each that had to be clamped), the fitted µ and the :class:`~lab.fit.FitResult` with its loss curve.
The fit watches its own training loss (there is no held-out image), so its "mIoU after" is on the image it
was fitted to: a measure of fit, not of generalisation; the app says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from lab.crf import CRFParams

__all__ = ["FIT_SECONDS", "AppFit", "fit_to_truth"]

# the app's budget: "a few seconds of gradient steps at working size"
FIT_SECONDS = 6.0
_KNOBS = ("theta_alpha", "theta_beta", "theta_gamma", "w_bilateral", "w_spatial")


@dataclass
class AppFit:
    """A fit for the app: the knob values to set, the fitted µ and the fit itself.

    Attributes:
        knobs: knob name → fitted value, clamped into the knob's range and rounded to 2 decimals.
        clamped: one note per knob whose fitted value lay outside its range (``name = value (range lo–hi)``).
        compat: the fitted (L, L) µ (float32).
        result: the :class:`~lab.fit.FitResult`.
        num_labels: L (the fitted µ suits only a unary with L labels).
        image_key: the image the fit belongs to (the app's :func:`~lab.explore.array_key`).
    """

    knobs: dict[str, float]
    clamped: list[str]
    compat: torch.Tensor
    result: object
    num_labels: int
    image_key: object = None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the page: steps, time, why it stopped and the mIoU on the fitted image."""
        r = self.result
        return (
            f"{r.steps_run} gradient steps in {r.seconds:.1f} s (stopped: {r.stopped}; best after {r.best_step}); "
            f"mIoU on this image {r.miou_before:.3f} → {r.miou_after:.3f}"
        )


def fit_to_truth(
    image: np.ndarray,
    unary: torch.Tensor,
    truth: np.ndarray,
    params: CRFParams,
    iterations: int,
    ranges: Mapping[str, tuple[float, float]],
    *,
    seconds: float = FIT_SECONDS,
    steps: int = 200,
    progress: Callable[[int, int, float], object] | bool = False,
    image_key: object = None,
) -> AppFit:
    """Fit the CRF to one image's ground truth from the current knobs, for at most ``seconds``.

    Args:
        image: (H, W, 3) uint8, the working-size image.
        unary: (1, L, H, W) or (L, H, W) U on screen.
        truth: (H, W) class ids 0..L−1, 255 for void (ignored).
        params: the knobs' parameters (the start; its normalisation is kept). µ starts from its ``compat``.
        iterations: T ≥ 1, the knob's mean-field iterations (the weights are fitted for that T).
        ranges: knob name → (low, high) for the five knobs θα, θβ, θγ, w bilateral, w spatial.
        seconds: the wall-clock budget (> 0).
        steps: the most gradient steps.
        progress: passed to :func:`lab.fit_crf` (a callable ``(step, total, loss)`` for a progress bar).
        image_key: stored with the fit, so that the app shows it only on its own image.

    Returns:
        An :class:`AppFit`.

    Raises:
        ValueError: T = 0, a truth without any labelled pixel, mismatched sizes (from :func:`lab.fit_crf`,
            naming the argument).

    Example:
        >>> from lab.data.synthetic import render_scene
        >>> from lab.unary import unary_from_labels
        >>> scene = render_scene(0, 32)
        >>> truth = scene.label.astype("int64")
        >>> unary = unary_from_labels(torch.from_numpy(truth)[None], 6, gt_prob=0.6, zero_unsure=False)
        >>> ranges = {"theta_alpha": (1, 200), "theta_beta": (1, 50), "theta_gamma": (0.5, 10),
        ...           "w_bilateral": (-10, 50), "w_spatial": (-10, 50)}
        >>> fit = fit_to_truth(scene.image, unary, truth, CRFParams(), 5, ranges, steps=2)
        >>> sorted(fit.knobs), fit.compat.shape, fit.result.steps_run
        (['theta_alpha', 'theta_beta', 'theta_gamma', 'w_bilateral', 'w_spatial'], torch.Size([6, 6]), 2)
    """
    from lab.fit import fit_crf

    if int(iterations) < 1:
        raise ValueError("iterations: expected T >= 1 to fit (with T = 0 the CRF does nothing); move the T knob")
    missing = [k for k in _KNOBS if k not in ranges]
    if missing:
        raise ValueError(f"ranges: expected a (low, high) range for each knob, missing {missing}")
    truth = np.asarray(truth)
    if not bool((truth != 255).any()):
        raise ValueError("truth: expected some labelled pixels, got only void (255)")
    u = unary[0] if unary.dim() == 4 else unary
    result = fit_crf(
        image,
        u,
        torch.from_numpy(truth.astype(np.int64)),
        learn=("weights", "compat", "bandwidths"),
        iterations=int(iterations),
        steps=steps,
        params=params,
        max_seconds=seconds,
        progress=progress,
    )
    fitted = result.params
    knobs, clamped = {}, []
    for name in _KNOBS:
        value = getattr(fitted, name)
        value = float(value.mean()) if isinstance(value, torch.Tensor) else float(value)
        low, high = ranges[name]
        knobs[name] = round(min(max(value, low), high), 2)
        if not math.isfinite(value) or not low <= value <= high:
            clamped.append(f"{name} = {value:.3g} (knob range {low:g}–{high:g})")
    compat = fitted.compat_matrix(u.shape[0]).detach().to(torch.float32).clone()
    return AppFit(knobs, clamped, compat, result, int(u.shape[0]), image_key, list(result.notes))
