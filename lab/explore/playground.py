"""The playground notebook's live figure and its θ sweep: widgets that need no output capture.

A matplotlib figure is drawn into an ``ipywidgets.Image`` as PNG bytes, redrawn whenever a control's value
changes, with any error of the drawing shown as text in an ``ipywidgets.HTML`` under it. Nothing is
captured from the kernel's output streams: no ``Output`` widget, so a headless client (``jupyter nbconvert
--execute``, nbclient) only receives widget state and never has to answer for an output widget while a cell
runs. (nbclient's stand-in for the Output widget sends comm messages from inside its wait for the execute
reply; with pyzmq 27.3 and jupyter_client 8.10 that send can use up the socket's edge-triggered wake-up and
the wait then sleeps out the whole cell timeout: forever under nbconvert's default of none.)

A slider's readout and the figure's title agree by construction when both format the same value with the
same format: :func:`readout` formats a value with the slider's ``readout_format`` (only fixed-point ``.Nf``
and ``d``, where Python's ``format`` and the browser's d3-format write the same digits), and
:func:`on_grid` puts a value on the slider's steps (the browser shows, and may send back, the value of the
nearest step, not the value the kernel set).
"""

from __future__ import annotations

import contextlib
import html
import io
import math
import re
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

from lab.crf import CRFParams

__all__ = ["LiveFigure", "ThetaSweep", "figure_png", "on_grid", "readout", "theta_sweep"]

_FIXED = re.compile(r"\.(\d+)f")  # the readout formats whose digits Python and d3-format agree on


def figure_png(fig, dpi: float | None = None) -> bytes:
    r"""A matplotlib figure as PNG bytes (drawn with Agg; pyplot's figure list is not touched).

    Args:
        fig: a ``matplotlib.figure.Figure``.
        dpi: resolution; the figure's own when None.

    Returns:
        The PNG file's bytes.

    Example:
        >>> from matplotlib.figure import Figure
        >>> figure_png(Figure(figsize=(1, 1)))[:8] == b"\x89PNG\r\n\x1a\n"
        True
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not isinstance(fig, Figure):
        raise TypeError(f"fig: expected a matplotlib Figure, got {type(fig).__name__}")
    FigureCanvasAgg(fig)  # a figure made without pyplot has no drawing canvas of its own
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi if dpi is not None else "figure")
    return buffer.getvalue()


def readout(widget, value: float | None = None) -> str:
    """The text a slider's readout shows: ``value`` (default: the slider's) in its ``readout_format``.

    Args:
        widget: an ipywidgets slider (anything with ``value`` and ``readout_format``).
        value: the value to format; the widget's own when None.

    Returns:
        The formatted text, e.g. ``"16.0"`` for 16 with ``readout_format=".1f"``.

    Raises:
        ValueError: the readout format is not ``.Nf`` or ``d`` (Python and d3-format write other formats
            differently: ``.3g`` of 20 is ``20`` here and ``20.0`` in the browser).

    Example:
        >>> from types import SimpleNamespace
        >>> readout(SimpleNamespace(value=2**4.25, readout_format=".1f"))
        '19.0'
    """
    fmt = widget.readout_format
    if not (_FIXED.fullmatch(fmt) or fmt == "d"):
        raise ValueError(
            f"readout_format: expected '.Nf' or 'd' (formats Python and the browser write alike), got {fmt!r}"
        )
    return format(widget.value if value is None else value, fmt)


def on_grid(widget, value: float) -> float:
    """The value nearest to ``value`` that the slider can hold: within its range and on its steps.

    A ``FloatLogSlider`` steps its exponent (value = base ** (min + k · step)); the other sliders step the
    value itself from ``min``.

    Args:
        widget: an ipywidgets slider (``min``, ``max``, ``step``; ``base`` for a log slider).
        value: the wanted value; must be finite (and > 0 for a log slider).

    Returns:
        A float on the slider's grid (an int for an integer slider).

    Example:
        >>> from types import SimpleNamespace
        >>> on_grid(SimpleNamespace(min=1, max=7, step=0.25, base=2), 20.0) == 2**4.25
        True
    """
    if not math.isfinite(value):
        raise ValueError(f"value: expected a finite number, got {value!r}")
    low, high, step = widget.min, widget.max, widget.step
    base = getattr(widget, "base", None)
    if base is not None:
        if value <= 0:
            raise ValueError(f"value: expected a positive number for a log slider, got {value!r}")
        exponent = min(max(math.log(value, base), low), high)
        k = min(round((exponent - low) / step), math.floor((high - low) / step + 1e-9))
        return float(base ** (low + k * step))
    k = min(round((min(max(value, low), high) - low) / step), math.floor((high - low) / step + 1e-9))
    snapped = low + k * step
    return int(snapped) if isinstance(low, int) and isinstance(step, int) else float(snapped)


class LiveFigure:
    """A figure redrawn into an ``ipywidgets.Image`` whenever one of ``controls`` changes value.

    Each redraw calls ``draw(**values)`` with every control's current value and shows the PNG of the figure
    it returns; ``title`` keeps that figure's suptitle and ``drawn`` the values it was drawn with. When
    ``draw`` raises, the previous image stays and ``error`` (an HTML widget under the image) shows the
    exception and its traceback; the next good redraw empties it.

    ``follow`` maps a control's key to a callback run (with the change) before the redraw that control's
    change causes; values the callback sets on other controls cause no redraw of their own, so one change
    draws once, with the controls as the callback left them.

    Args:
        draw: settings → ``matplotlib.figure.Figure``.
        controls: key → widget; the keys are ``draw``'s keyword arguments.
        follow: key → callback(change), optional.
        dpi: PNG resolution, the figure's own when None.
    """

    def __init__(
        self,
        draw: Callable[..., object],
        controls: Mapping[str, object],
        follow: Mapping[str, Callable[[dict], None]] | None = None,
        dpi: float | None = None,
    ):
        import ipywidgets as widgets

        follow = dict(follow or {})
        unknown = sorted(set(follow) - set(controls))
        if unknown:
            raise ValueError(f"follow: keys {unknown} are not among the controls {sorted(controls)}")
        if not controls:
            raise ValueError("controls: expected at least one widget to follow")
        self.draw_fn, self.controls, self.follow, self.dpi = draw, dict(controls), follow, dpi
        self.image = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
        self.error = widgets.HTML(value="")
        self.image.add_class("live-figure")  # names the two in the saved widget state
        self.error.add_class("live-figure-error")
        self.widget = widgets.VBox([self.image, self.error])
        self.title: str = ""
        self.drawn: dict = {}
        self.draws = 0
        self._held = 0
        for key, control in self.controls.items():
            control.observe(self._changed(key), names="value")
        self.redraw()

    def _changed(self, key: str) -> Callable[[dict], None]:
        def on_change(change: dict) -> None:
            if self._held:
                return
            with self.hold():
                if key in self.follow:
                    self.follow[key](change)
            self.redraw()

        return on_change

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """No redraws while inside (nestable): for setting several controls, then calling :meth:`redraw`."""
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1

    def values(self) -> dict:
        """Every control's current value, by key."""
        return {key: control.value for key, control in self.controls.items()}

    def redraw(self) -> None:
        """Draw with the controls' current values into the image, or show why it failed under it."""
        values = self.values()
        try:
            fig = self.draw_fn(**values)
            png = figure_png(fig, self.dpi)
        except Exception as exc:  # shown under the figure: a widget callback has no cell to fail
            text = "".join(traceback.format_exception(exc))
            what = html.escape(f"{type(exc).__name__}: {exc}")
            self.error.value = (
                f"<b>The figure could not be drawn for these settings:</b> {what}"
                f"<details><summary>traceback</summary><pre>{html.escape(text)}</pre></details>"
            )
            return
        self.image.value = png
        self.title = fig.get_suptitle()
        self.drawn = values
        self.draws += 1
        self.error.value = ""


class ThetaSweep:
    """Arg-max labels of Q_T over a θα × θβ grid, beside the unary's (see :func:`theta_sweep`).

    Attributes:
        theta_alpha: (A,) the column values, pixels.
        theta_beta: (B,) the row values, colour units 0..255.
        labels: (B, A, H, W) int64 arg-max of Q_T per (θβ row, θα column).
        unary_labels: (H, W) int64 arg-max of the unary.
        changed: (B, A) float64 share of pixels whose label differs from the unary's, 0..1.
    """

    def __init__(self, theta_alpha, theta_beta, labels, unary_labels):
        self.theta_alpha = np.asarray(theta_alpha, dtype=np.float64)
        self.theta_beta = np.asarray(theta_beta, dtype=np.float64)
        self.labels = labels
        self.unary_labels = unary_labels
        self.changed = (labels != unary_labels[None, None]).mean(axis=(2, 3))


def theta_sweep(
    unary: torch.Tensor,
    image: torch.Tensor,
    params: CRFParams,
    theta_alpha: Sequence[float],
    theta_beta: Sequence[float],
    iterations: int,
    kernels_for: Callable[[CRFParams], object] | None = None,
) -> ThetaSweep:
    """Mean field for every (θβ, θα) pair, the other parameters as in ``params``; keeps arg-max Q_T.

    Args:
        unary: (1, L, H, W) U.
        image: (1, 3, H, W) 0..255.
        params: θγ, the weights and the compatibility (its θα and θβ are replaced by the grid's).
        theta_alpha: the columns' θα, pixels, each > 0.
        theta_beta: the rows' θβ, colour units, each > 0.
        iterations: T ≥ 1.
        kernels_for: params → ``CRFKernels`` (e.g. a cache); built with :func:`lab.explore.build_kernels`
            when None.

    Returns:
        A :class:`ThetaSweep`.

    Example:
        >>> u = torch.log_softmax(torch.randn(1, 2, 6, 7, generator=torch.Generator().manual_seed(0)), 1)
        >>> s = theta_sweep(u, torch.rand(1, 3, 6, 7) * 255, CRFParams(), [3.0, 30.0], [5.0], iterations=2)
        >>> s.labels.shape, s.changed.shape
        ((1, 2, 6, 7), (1, 2))
    """
    from dataclasses import replace

    from lab.explore import build_kernels, run_crf

    for name, values in (("theta_alpha", theta_alpha), ("theta_beta", theta_beta)):
        if len(values) == 0 or not all(math.isfinite(v) and v > 0 for v in values):
            raise ValueError(f"{name}: expected a non-empty list of positive bandwidths, got {list(values)!r}")
    if int(iterations) != iterations or iterations < 1:
        raise ValueError(f"iterations: expected an integer >= 1, got {iterations!r}")
    if unary.ndim != 4 or unary.shape[0] != 1:
        raise ValueError(f"unary: expected (1, L, H, W), got shape {tuple(unary.shape)}")
    if image.ndim != 4 or image.shape[:2] != (1, 3) or image.shape[2:] != unary.shape[2:]:
        raise ValueError(f"image: expected (1, 3, {unary.shape[2]}, {unary.shape[3]}), got {tuple(image.shape)}")
    labels = np.empty((len(theta_beta), len(theta_alpha), *unary.shape[2:]), dtype=np.int64)
    for row, beta in enumerate(theta_beta):
        for col, alpha in enumerate(theta_alpha):
            p = replace(params, theta_alpha=float(alpha), theta_beta=float(beta))
            kernels = kernels_for(p) if kernels_for is not None else build_kernels(image, p)[0]
            result = run_crf(unary, image, p, int(iterations), kernels)
            labels[row, col] = result.trace.history[-1][0].argmax(0).numpy()
    return ThetaSweep(theta_alpha, theta_beta, labels, unary[0].argmax(0).numpy().astype(np.int64))
