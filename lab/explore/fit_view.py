"""The app's "fit the CRF to this ground truth": a few seconds of :func:`lab.fit_crf` on the image on screen.

:func:`fit_to_truth` fits θ, the kernel weights and µ to the one image shown against its ground truth
(uploaded, or the example photo's label map), starting from the knobs as they are, and returns
what the app needs to move its knobs there: each knob's fitted value clamped into the knob's range (with a
note for each that had to be clamped), the fitted µ and the :class:`~lab.fit.FitResult` with its loss curve.
The fit watches its own training loss (there is no held-out image), so its "mIoU after" is on the image it
was fitted to: a measure of fit, not of generalisation; the app says so.

Speed decides the size it fits at. A step with θ learned rebuilds the lattices and runs the feature
gradients' extra filterings: about 1.5 s at 96 × 128 px and L = 21 on 2 busy cores (0.25 s with θ fixed), four
times that at 192 × 256. So the fit runs at ``fit_side`` (the longer side, default :data:`FIT_SIDE`, at most
the working size): the image is downscaled (anti-aliased), the unary bilinearly, the truth by nearest
neighbour; θα and θγ, which are in pixels, are divided by the scale for the fit and multiplied back after it,
θβ (colour) and the weights are scale-free under the normalised kernels. With ``normalize="none"`` the
messages are sums that grow with the pixels a kernel covers, so such a fit runs at the working size.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from lab.crf import CRFParams

__all__ = ["FIT_SECONDS", "AppFit", "fit_to_truth"]

# the app's budget: "a few seconds of gradient steps at working size"
FIT_SECONDS = 8.0
# the longer side the app fits at (see above), and Adam's rate there: a few seconds are some tens of steps
FIT_SIDE = 96
FIT_LR = 0.1
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
        fit_shape: the (H, W) the fit ran at.
        notes: what the caller should know (the fit's own notes, the size it ran at).
    """

    knobs: dict[str, float]
    clamped: list[str]
    compat: torch.Tensor
    result: object
    num_labels: int
    image_key: object = None
    fit_shape: tuple[int, int] = (0, 0)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the page: steps, time, why it stopped and the mIoU on the fitted image."""
        r = self.result
        return (
            f"{r.steps_run} gradient steps at {self.fit_shape[1]}×{self.fit_shape[0]} px in {r.seconds:.1f} s "
            f"(stopped: {r.stopped}; best after {r.best_step}); mIoU on this image at that size "
            f"{r.miou_before:.3f} → {r.miou_after:.3f}"
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
    fit_side: int | None = FIT_SIDE,
    lr: float = FIT_LR,
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
        fit_side: the longer side to fit at (≥ 8), None for the image's own size (see the module's notes).
        lr: Adam's rate for log θ and the weights (µ at a fifth of it).
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
    h, w = image.shape[:2]
    if u.shape[-2:] != (h, w) or truth.shape != (h, w):
        raise ValueError(
            f"unary, truth: expected the image's size {h}×{w}, got {tuple(u.shape[-2:])} and {truth.shape}"
        )
    fit_image, fit_unary, fit_truth, scale = image, u, truth, 1.0
    if fit_side is not None and params.normalize != "none" and max(h, w) > int(fit_side):
        from PIL import Image

        from lab.explore import fit_image as downscale

        fit_image = downscale(image, int(fit_side))
        fh, fw = fit_image.shape[:2]
        scale = max(h, w) / max(fh, fw)
        fit_unary = torch.nn.functional.interpolate(u[None].float(), size=(fh, fw), mode="bilinear", antialias=True)[0]
        fit_truth = np.asarray(Image.fromarray(truth.astype(np.uint8)).resize((fw, fh), Image.Resampling.NEAREST))
    start = dataclasses.replace(
        params, theta_alpha=_scaled(params.theta_alpha, 1 / scale), theta_gamma=_scaled(params.theta_gamma, 1 / scale)
    )
    result = fit_crf(
        fit_image,
        fit_unary,
        torch.from_numpy(np.asarray(fit_truth).astype(np.int64)),
        learn=("weights", "compat", "bandwidths"),
        iterations=int(iterations),
        steps=steps,
        params=start,
        lr=lr,
        compat_lr=lr / 5,
        max_seconds=seconds,
        progress=progress,
    )
    fitted = dataclasses.replace(
        result.params,
        theta_alpha=_scaled(result.params.theta_alpha, scale),
        theta_gamma=_scaled(result.params.theta_gamma, scale),
    )
    notes = list(result.notes)
    if scale != 1.0:
        notes.append(
            f"Fitted at {fit_image.shape[1]}×{fit_image.shape[0]} px for speed; θα and θγ (pixels) scaled by "
            f"{scale:.3g} back to the working size."
        )
    knobs, clamped = {}, []
    for name in _KNOBS:
        value = getattr(fitted, name)
        value = float(value.mean()) if isinstance(value, torch.Tensor) else float(value)
        low, high = ranges[name]
        knobs[name] = round(min(max(value, low), high), 2)
        if not math.isfinite(value) or not low <= value <= high:
            clamped.append(f"{name} = {value:.3g} (knob range {low:g}–{high:g})")
    compat = fitted.compat_matrix(u.shape[0]).detach().to(torch.float32).clone()
    return AppFit(knobs, clamped, compat, result, int(u.shape[0]), image_key, tuple(fit_image.shape[:2]), notes)


def _scaled(theta: object, factor: float) -> float:
    """A bandwidth times ``factor`` (a 0-d tensor as a float)."""
    return float(theta) * factor
