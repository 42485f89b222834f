"""One pixel, opened up: why mean field gave it the label it has (the app's pixel inspector).

For a pixel i of a finished run, :func:`inspect_pixel` gathers what Algorithm 1 computed *at i*, iteration by
iteration: its unary U_i, Q_t(i) for t = 0..T, the message each kernel sent it per class
(Q̃(m)_i = Σ_j k(m)(f_i, f_j) Q_{t−1, j}, normalised as the run was), the weighted sum Q̌_i, the compatibility
penalty Q̂_i = µ Q̌_i and the scores U_i − Q̂_i whose softmax is Q_t(i). The messages come from the run's own
kernels (the lattice, the window or the exact filter, whichever it used), so the per-pixel numbers are the
run's, not a re-derivation: their softmax reproduces the run's Q_t(i). On the lattice, the filtering is linear,
so pixel i's messages are one row of it: that row (post_i · (Kᵀ e_i) ⊙ pre, one filtering of a single channel by
the adjoint) dotted with every Q_{t−1}, instead of filtering all T·L channels of the run for one pixel.

It also gives each kernel's footprint around i: the exact Gaussian row k(m)(f_i, f_j) = exp(−½ |f_i − f_j|²)
over every pixel j (1 at i itself), from the same features the lattice filters. Drawn on the image, it shows
which pixels vote for i and how strongly; multiplied by Q_{t−1, j}(l), how much each of them votes for l.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lab._checks import check_int
from lab.crf.kernels import kernel_features
from lab.crf.mean_field import MeanFieldTrace
from lab.crf.params import CRFParams
from lab.crf.steps import compatibility_transform, weighting
from lab.lattice.lattice import PermutohedralLattice
from lab.lattice.normalize import scales

__all__ = ["KERNEL_NAMES", "PixelReport", "check_image_pixel", "inspect_pixel", "kernel_footprints", "lattice_row"]

KERNEL_NAMES = ("bilateral", "spatial")


@dataclass(frozen=True)
class PixelReport:
    """What mean field computed at one pixel (batch element 0), iteration by iteration.

    Attributes:
        y, x: the pixel (row, column).
        unary: (L,) U_i.
        q: (T+1, L) Q_t(i), t = 0..T (Q_0 = softmax(U_i)).
        messages: (T, 2, L) the message of each kernel (row 0 bilateral, 1 spatial) in iteration t = 1..T,
            filtered from Q_{t−1}.
        weighted: (T, L) Q̌_i = Σ_m w(m) Q̃(m)_i.
        penalty: (T, L) Q̂_i = µ Q̌_i, what the pairwise terms subtract from U_i.
        logits: (T, L) U_i − Q̂_i; their softmax is Q_t(i).
        footprints: (2, H, W) exact kernel rows k(m)(f_i, f_j) over the image, 1 at the pixel.
    """

    y: int
    x: int
    unary: np.ndarray
    q: np.ndarray
    messages: np.ndarray
    weighted: np.ndarray
    penalty: np.ndarray
    logits: np.ndarray
    footprints: np.ndarray

    @property
    def iterations(self) -> int:
        """T, the run's number of iterations."""
        return self.q.shape[0] - 1

    @property
    def labels(self) -> np.ndarray:
        """(T+1,) the argmax of Q_t(i) for t = 0..T."""
        return self.q.argmax(1)

    def flips(self) -> list[tuple[int, int, int]]:
        """Every iteration t at which the pixel's argmax changed, as (t, old label, new label)."""
        labels = self.labels
        return [(t, int(labels[t - 1]), int(labels[t])) for t in range(1, len(labels)) if labels[t] != labels[t - 1]]

    def votes(self, kernel: int, q_prev: np.ndarray) -> np.ndarray:
        """(L, H, W) how strongly each pixel j votes for each label through ``kernel``: k(f_i, f_j) Q_{t−1, j}(l).

        Args:
            kernel: 0 (bilateral) or 1 (spatial).
            q_prev: (L, H, W) the Q the iteration filtered (Q_{t−1}).
        """
        _check_index(kernel, "kernel", len(KERNEL_NAMES))
        q_prev = np.asarray(q_prev)
        if q_prev.ndim != 3 or q_prev.shape[1:] != self.footprints.shape[1:]:
            raise ValueError(
                f"q_prev: expected (L, {self.footprints.shape[1]}, {self.footprints.shape[2]}), got {q_prev.shape}"
            )
        return self.footprints[kernel][None] * q_prev

    def explain(self, class_names: list[str] | None = None) -> str:
        """A few sentences: the pixel's label before and after, and which term moved it at each flip."""

        def name(label: int) -> str:
            return class_names[label] if class_names is not None and label < len(class_names) else f"label {label}"

        labels = self.labels
        lines = [
            f"Pixel (x={self.x}, y={self.y}): the unary says {name(int(labels[0]))} "
            f"(p = {self.q[0, labels[0]]:.2f}); after {self.iterations} iterations it is {name(int(labels[-1]))} "
            f"(p = {self.q[-1, labels[-1]]:.2f})."
        ]
        flips = self.flips()
        if not flips:
            lines.append("It never changed label.")
        for t, old, new in flips:
            # the new label wins because its penalty is smaller: by how much, and which kernel's message did it
            gap_u = self.unary[old] - self.unary[new]
            gap_p = self.penalty[t - 1, old] - self.penalty[t - 1, new]
            lines.append(
                f"Iteration {t}: {name(old)} → {name(new)}. The unary favours {name(old)} by {gap_u:.2f}; the "
                f"pairwise penalty on {name(old)} is larger by {gap_p:.2f} (bilateral message for {name(new)} "
                f"{self.messages[t - 1, 0, new]:.2f} vs {self.messages[t - 1, 0, old]:.2f}, spatial "
                f"{self.messages[t - 1, 1, new]:.2f} vs {self.messages[t - 1, 1, old]:.2f})."
            )
        return "\n".join(lines)


def _check_index(value: object, name: str, size: int) -> int:
    """``value`` as an index 0 ≤ value < size (a TypeError for non-integers, a ValueError outside)."""
    check_int(value, name)
    if value >= size:
        raise ValueError(f"{name}: expected an integer in 0..{size - 1}, got {value!r}")
    return int(value)


def check_image_pixel(image: object, y: object, x: object) -> tuple[int, int]:
    """Check a (1, C, H, W) guide tensor and a pixel (row ``y``, column ``x``) inside it; returns (H, W)."""
    if not isinstance(image, torch.Tensor) or image.dim() != 4 or image.shape[0] != 1:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image: expected a (1, C, H, W) tensor, got {shape}")
    height, width = image.shape[-2:]
    _check_index(y, "y", height)
    _check_index(x, "x", width)
    return height, width


def kernel_footprints(image: torch.Tensor, params: CRFParams, y: int, x: int) -> np.ndarray:
    """(2, H, W) float64 exact kernel rows k(m)(f_i, f_j) = exp(−½ |f_i − f_j|²) for pixel i = (y, x).

    Row 0 the bilateral kernel (features x/θα, y/θα, rgb/θβ), row 1 the spatial kernel (x/θγ, y/θγ): the
    Gaussians the lattice approximates, before normalisation.

    Args:
        image: (1, C, H, W) the guide the run used.
        params: the run's parameters (θα, θβ, θγ).
        y: the pixel's row.
        x: the pixel's column.
    """
    check_image_pixel(image, y, x)
    rows = []
    for features in kernel_features(image, params, dtype=torch.float64):
        f = features[0].detach()  # (d, H, W)
        d2 = (f - f[:, y : y + 1, x : x + 1]).square().sum(0)
        rows.append(torch.exp(-0.5 * d2).numpy())
    return np.stack(rows)


def lattice_row(lattice: PermutohedralLattice, point: int, normalize: str) -> torch.Tensor:
    """(M,) weights w with ``lattice.filter_points(x, normalize)[point] == w @ x`` for every x (to rounding).

    The filter is post ⊙ K (pre ⊙ x) (:func:`lab.lattice.normalize.scales`); its row ``point`` is
    post_point · K[point, :] ⊙ pre, and K[point, :] = (Kᵀ e_point)ᵀ: one filtering of a single channel by the
    lattice's adjoint.
    """
    e = torch.zeros(lattice.num_points, 1, dtype=torch.float32)
    e[point] = 1.0
    row = lattice.apply_kernel(e, transpose=True)  # (M, 1): K[point, j] at j
    k1 = lattice.normalizer(torch.float32) if normalize != "none" else torch.ones_like(row)
    pre, post = scales(k1, normalize, lattice.structure.kernel_scale)
    return (post[point] * row * pre)[:, 0]


def _pixel_messages(kernels, maps, pixel: int) -> torch.Tensor:
    """(T, K, L) float64: each kernel's message at ``pixel`` from each map Q_{t−1} (1, L, H, W) of ``maps``."""
    points = [kernels.to_points(q[:1]) for q in maps]  # (M, L) each, views
    if kernels.message_passing == "lattice" and not kernels.requires_grad:
        rows = [lattice_row(f, pixel, kernels.normalize).to(points[0].dtype) for f in kernels.filters]
        return torch.stack([torch.stack([p.T @ r for r in rows]) for p in points]).to(torch.float64)
    # the exact and window filters (small images): every map side by side along the labels, one filtering
    num_labels = points[0].shape[1]
    filtered = kernels.filter(torch.cat(points, 1).contiguous())
    per_kernel = [m[pixel].to(torch.float64).reshape(len(maps), num_labels) for m in filtered]
    return torch.stack(per_kernel, 1)


def inspect_pixel(
    trace: MeanFieldTrace, unary: torch.Tensor, image: torch.Tensor, params: CRFParams, y: int, x: int
) -> PixelReport:
    """What mean field computed at pixel (y, x) in a run kept with its history of Q.

    Args:
        trace: the run (``mean_field(..., keep="q")`` or "steps"), batch element 0 is inspected.
        unary: (1, L, H, W) the U the run used.
        image: (1, C, H, W) the guide the run used.
        params: the run's parameters.
        y: the pixel's row.
        x: the pixel's column.

    Returns:
        A :class:`PixelReport`.

    Raises:
        ValueError: the trace has no history, or the pixel, unary or image does not match it.
    """
    if trace.history is None:
        raise ValueError("trace: needs the history of Q; run mean_field with keep='q' or keep='steps'")
    q0 = trace.history[0]
    if q0.dim() != 4:
        raise ValueError(f"trace: the inspector reads 2-D runs (B, L, H, W), got Q of shape {tuple(q0.shape)}")
    num_labels, height, width = q0.shape[1:]
    if not isinstance(unary, torch.Tensor) or tuple(unary.shape[1:]) != (num_labels, height, width):
        shape = tuple(unary.shape) if isinstance(unary, torch.Tensor) else type(unary).__name__
        raise ValueError(f"unary: expected (1, {num_labels}, {height}, {width}) like the run's Q, got {shape}")
    if not isinstance(image, torch.Tensor) or tuple(image.shape[-2:]) != (height, width):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image: expected (1, C, {height}, {width}) like the run's Q, got {shape}")
    _check_index(y, "y", height)
    _check_index(x, "x", width)

    kernels = trace.kernels
    iterations = len(trace.history) - 1
    weights = params.weights(num_labels, dtype=torch.float64)  # (2, L)
    compat = "potts" if params.is_potts else params.compat_matrix(num_labels).detach().to(torch.float64)
    with torch.no_grad():
        u = unary[0, :, y, x].detach().to(torch.float64)
        q = torch.stack([h[0, :, y, x].detach().to(torch.float64) for h in trace.history])
        if iterations:
            pixel = y * width + x  # point layout: row-major over (H, W) for batch element 0
            messages = _pixel_messages(kernels, trace.history[:-1], pixel)  # (T, 2, L)
            weighted = weighting(list(messages.unbind(1)), weights)
            penalty = compatibility_transform(weighted, compat)
        else:
            messages = torch.zeros(0, 2, num_labels, dtype=torch.float64)
            weighted = penalty = torch.zeros(0, num_labels, dtype=torch.float64)
        logits = u[None] - penalty
    return PixelReport(
        y=y,
        x=x,
        unary=u.numpy(),
        q=q.numpy(),
        messages=messages.numpy(),
        weighted=weighted.numpy(),
        penalty=penalty.numpy(),
        logits=logits.numpy(),
        footprints=kernel_footprints(image, params, y, x),
    )
