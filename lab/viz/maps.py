"""Per-pixel views of a Q map: label overlays, class heatmaps, entropy, flipped pixels, the KL curve.

Every function takes numpy arrays or tensors and returns a numpy image (H, W, 3) uint8 or (H, W) float,
so that the app and the notebooks show the same pictures and tests can check the pixels.
"""

from __future__ import annotations

import numpy as np
import torch

from lab.viz.palette import colorize

__all__ = ["changed_mask", "class_heatmap", "entropy_map", "fit_figure", "kl_figure", "label_map", "overlay"]


def _np(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def label_map(q: np.ndarray | torch.Tensor) -> np.ndarray:
    """Arg-max labels of a (L, H, W) probability or score map: (H, W) int64."""
    return _np(q).argmax(0)


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the palette colours of ``labels`` over ``image``.

    Args:
        image: (H, W, 3) uint8 RGB.
        labels: (H, W) integer class ids.
        alpha: weight of the label colours, 0..1.

    Returns:
        (H, W, 3) uint8.

    Example:
        >>> overlay(np.full((1, 1, 3), 200, np.uint8), np.array([[1]]), alpha=0.5).tolist()
        [[[206, 147, 100]]]
    """
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha: expected a number in 0..1, got {alpha!r}")
    colours = colorize(labels).astype(np.float64)
    out = (1 - alpha) * np.asarray(image, dtype=np.float64) + alpha * colours
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def class_heatmap(q: np.ndarray | torch.Tensor, label: int, cmap: str = "viridis") -> np.ndarray:
    """The probability of one class as a colour image (0 → the colormap's low end, 1 → its high end).

    Args:
        q: (L, H, W) probabilities.
        label: the class id.
        cmap: a matplotlib colormap name.

    Returns:
        (H, W, 3) uint8.
    """
    from matplotlib import colormaps

    q = _np(q)
    if not 0 <= label < q.shape[0]:
        raise ValueError(f"label: expected a class id in 0..{q.shape[0] - 1}, got {label!r}")
    return (colormaps[cmap](np.clip(q[label], 0, 1))[..., :3] * 255).round().astype(np.uint8)


def entropy_map(q: np.ndarray | torch.Tensor) -> np.ndarray:
    """Per-pixel entropy −Σ_l Q_l log Q_l in nats, (H, W) float64 (0 = certain, log L = uniform).

    Example:
        >>> float(entropy_map(np.full((2, 1, 1), 0.5))[0, 0]) == float(np.log(2))
        True
    """
    q = _np(q)
    dtype = np.float32 if q.dtype == np.float32 else np.float64  # float32 terms: half the time, same 1e-7
    if q.ndim < 1:
        raise ValueError(f"q: expected (L, ...) probabilities, got shape {q.shape}")
    total = np.zeros(q.shape[1:], np.float64)
    term = np.empty(q.shape[1:], dtype)
    for plane in q:  # one class at a time: two (H, W) buffers, not three of (L, H, W)
        np.clip(plane, 1e-20, 1, out=term)
        np.log(term, out=term)
        term *= plane
        total -= term
    return total


def changed_mask(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Pixels whose label differs: (H, W) bool."""
    before, after = np.asarray(before), np.asarray(after)
    if before.shape != after.shape:
        raise ValueError(f"after: expected shape {before.shape} like before, got {after.shape}")
    return before != after


def kl_figure(kl: np.ndarray | torch.Tensor, current: int | None = None):
    """The mean-field KL divergence (up to log Z) against the iteration, as a matplotlib figure.

    Args:
        kl: (T+1,) values for iterations 0..T.
        current: an iteration to mark.

    Returns:
        A matplotlib Figure.
    """
    from matplotlib.figure import Figure

    kl = _np(kl).astype(np.float64).reshape(-1)
    fig = Figure(figsize=(4.5, 2.8))
    ax = fig.subplots()
    ax.plot(np.arange(len(kl)), kl, marker="o")
    if current is not None and 0 <= current < len(kl):
        ax.plot([current], [kl[current]], marker="o", markersize=10, color="crimson")
    ax.set_xlabel("iteration t")
    ax.set_ylabel("KL(Q_t ‖ P) + log Z")
    ax.set_title("Mean-field objective")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def fit_figure(loss, best_step: int | None = None, val_loss=None, eval_steps=None):
    """A fit's loss against the gradient step (``lab.fit_crf``'s curves), as a matplotlib figure.

    Args:
        loss: the training loss of each step (step k's loss is at the parameters after k steps).
        best_step: the step whose parameters were kept, marked.
        val_loss: the validation loss at each evaluation, or None.
        eval_steps: the step of each evaluation (with ``val_loss``).

    Returns:
        A matplotlib Figure.
    """
    from matplotlib.figure import Figure

    loss = np.asarray(loss, dtype=np.float64).reshape(-1)
    fig = Figure(figsize=(4.5, 2.8))
    ax = fig.subplots()
    ax.plot(np.arange(len(loss)), loss, marker=".", label="training loss")
    if val_loss is not None and len(val_loss) and eval_steps is not None:
        ax.plot(list(eval_steps), list(val_loss), marker="s", label="validation loss")
    if best_step is not None and 0 <= best_step < len(loss):
        ax.plot([best_step], [loss[best_step]], marker="o", markersize=10, color="crimson", label="kept")
    ax.set_xlabel("gradient step")
    ax.set_ylabel("cross-entropy (nats / pixel)")
    ax.set_title("Fitting the CRF")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
