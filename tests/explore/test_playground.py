"""lab.explore.playground: the live figure (Image widget + error text), slider readouts and steps, θ sweep."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

widgets = pytest.importorskip("ipywidgets", reason="the notebooks extra is not installed (ipywidgets)")

from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402

from lab.crf import CRFParams, mean_field  # noqa: E402
from lab.explore.playground import LiveFigure, figure_png, on_grid, readout, theta_sweep  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"  # the first 8 bytes of every PNG file (PNG spec, section 5.2)


# ---- figure_png ---------------------------------------------------------------------------------------------


def test_figure_png_is_a_png_of_the_figure_size():
    import matplotlib.pyplot as plt

    open_before = plt.get_fignums()
    fig = Figure(figsize=(3, 2), dpi=50)
    fig.subplots().plot([0, 1], [1, 0])
    png = figure_png(fig)
    assert png.startswith(PNG_SIGNATURE)
    assert Image.open(io.BytesIO(png)).size == (150, 100)  # 3 × 2 in at 50 dpi
    assert Image.open(io.BytesIO(figure_png(fig, dpi=100))).size == (300, 200)
    assert plt.get_fignums() == open_before  # pyplot's figure list untouched


def test_figure_png_refuses_what_is_not_a_figure():
    with pytest.raises(TypeError, match="fig: expected a matplotlib Figure, got ndarray"):
        figure_png(np.zeros((2, 2)))


# ---- readout and on_grid --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("slider", "expected"),
    [
        (widgets.FloatLogSlider(value=2**4.25, base=2, min=1, max=7, step=0.25, readout_format=".1f"), "19.0"),
        (widgets.FloatLogSlider(value=2**1.5, base=2, min=-1, max=4, step=0.25, readout_format=".2f"), "2.83"),
        (widgets.FloatSlider(value=12.5, min=0, max=20, step=0.5, readout_format=".1f"), "12.5"),
        (widgets.IntSlider(value=7, min=0, max=15, readout_format="d"), "7"),
    ],
)
def test_readout_writes_the_slider_value_in_its_format(slider, expected):
    assert readout(slider) == expected


def test_readout_formats_another_value_on_request():
    slider = widgets.FloatSlider(value=1.0, readout_format=".2f")
    assert readout(slider, 0.5) == "0.50"


@pytest.mark.parametrize("fmt", [".3g", ".2e", "", ".1%"])
def test_readout_refuses_formats_the_browser_writes_differently(fmt):
    slider = widgets.FloatLogSlider(value=20.0, readout_format=fmt) if fmt else widgets.FloatSlider(readout_format="")
    with pytest.raises(ValueError, match=r"readout_format: expected '\.Nf' or 'd'"):
        readout(slider)


LOG = dict(base=2, min=1, max=7, step=0.25)  # the playground's θβ slider: 2 … 128 in quarter powers of 2


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (20.0, 2**4.25),  # log2 20 = 4.32: nearest step 4.25
        (13.2, 2**3.75),  # log2 13.2 = 3.72
        (16.0, 16.0),  # on a step already
        (1000.0, 2.0**7),  # above the range: its top
        (0.1, 2.0),  # below: its bottom
    ],
)
def test_on_grid_of_a_log_slider_steps_the_exponent(value, expected):
    slider = widgets.FloatLogSlider(value=16.0, **LOG)
    assert on_grid(slider, value) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("kind", "options", "value", "expected"),
    [
        (widgets.FloatSlider, dict(min=0.0, max=20.0, step=0.5), 5.3, 5.5),
        (widgets.FloatSlider, dict(min=0.0, max=20.0, step=0.5), 25.0, 20.0),
        (widgets.FloatSlider, dict(min=0.0, max=20.0, step=0.5), -1.0, 0.0),
        (widgets.FloatSlider, dict(min=0.0, max=1.0, step=0.3), 1.0, 0.9),  # the top is off the steps
        (widgets.FloatSlider, dict(min=0.0, max=1.0, step=0.28), 0.99, 0.84),  # the nearest step is past the top
        (widgets.IntSlider, dict(min=0, max=15, step=1), 7.6, 8),
    ],
)
def test_on_grid_of_a_linear_slider_steps_the_value(kind, options, value, expected):
    slider = kind(**options)
    got = on_grid(slider, value)
    assert got == pytest.approx(expected, abs=1e-12)
    assert type(got) is type(slider.value)
    slider.value = got
    assert slider.value == got  # the slider holds it as given


@pytest.mark.parametrize(("value", "message"), [(float("nan"), "finite"), (0.0, "positive"), (-3.0, "positive")])
def test_on_grid_refuses_values_a_log_slider_cannot_hold(value, message):
    with pytest.raises(ValueError, match=f"value: expected a {message} number"):
        on_grid(widgets.FloatLogSlider(**LOG), value)


# ---- LiveFigure -----------------------------------------------------------------------------------------------


def _controls():
    return {"a": widgets.FloatSlider(value=1.0, min=0, max=10, step=0.5), "b": widgets.IntSlider(value=2, max=9)}


class Recorder:
    """A draw function that records its calls and draws a titled figure; raises while ``fail`` is set."""

    def __init__(self):
        self.calls, self.fail = [], None

    def __call__(self, **values):
        self.calls.append(values)
        if self.fail:
            raise self.fail
        fig = Figure(figsize=(2, 1), dpi=40)
        fig.suptitle(f"a={values['a']:.1f} b={values['b']}")
        return fig


def test_live_figure_draws_once_at_start_and_once_per_change():
    controls, draw = _controls(), Recorder()
    live = LiveFigure(draw, controls)
    assert draw.calls == [{"a": 1.0, "b": 2}] and live.draws == 1
    assert bytes(live.image.value).startswith(PNG_SIGNATURE) and live.error.value == ""
    assert live.title == "a=1.0 b=2" and live.drawn == {"a": 1.0, "b": 2}
    controls["a"].value = 3.5
    controls["b"].value = 4
    controls["b"].value = 4  # no change: no redraw
    assert draw.calls[1:] == [{"a": 3.5, "b": 2}, {"a": 3.5, "b": 4}] and live.draws == 3
    assert live.title == "a=3.5 b=4"
    assert "live-figure" in live.image._dom_classes and "live-figure-error" in live.error._dom_classes


def test_live_figure_follow_ups_change_other_controls_before_the_one_redraw():
    controls, draw = _controls(), Recorder()

    def follow_a(change):
        controls["b"].value = int(change["new"])  # would redraw on its own outside the follow-up

    live = LiveFigure(draw, controls, follow={"a": follow_a})
    controls["a"].value = 7.0
    assert draw.calls[1:] == [{"a": 7.0, "b": 7}] and live.drawn == {"a": 7.0, "b": 7}


def test_live_figure_hold_defers_redraws():
    controls, draw = _controls(), Recorder()
    live = LiveFigure(draw, controls)
    with live.hold():
        controls["a"].value = 2.0
        controls["b"].value = 5
    assert len(draw.calls) == 1
    live.redraw()
    assert draw.calls[-1] == {"a": 2.0, "b": 5} and live.draws == 2


def test_live_figure_shows_an_error_under_the_last_good_image_and_clears_it():
    controls, draw = _controls(), Recorder()
    live = LiveFigure(draw, controls)
    good_png, good_title = live.image.value, live.title
    draw.fail = ValueError("θβ must be > 0 <b>here</b>")
    controls["a"].value = 5.0  # no exception escapes the callback
    assert "ValueError: θβ must be &gt; 0 &lt;b&gt;here&lt;/b&gt;" in live.error.value  # escaped, not markup
    assert "Traceback" in live.error.value and "in __call__" in live.error.value  # where it was raised
    assert live.image.value == good_png and live.title == good_title and live.drawn == {"a": 1.0, "b": 2}
    assert live.draws == 1
    draw.fail = None
    controls["b"].value = 3
    assert live.error.value == "" and live.drawn == {"a": 5.0, "b": 3} and live.draws == 2


def test_live_figure_shows_an_error_when_draw_returns_no_figure():
    live = LiveFigure(lambda **values: None, _controls())
    assert "TypeError: fig: expected a matplotlib Figure, got NoneType" in live.error.value
    assert live.image.value == b"" and live.draws == 0


def test_live_figure_refuses_bad_arguments():
    with pytest.raises(ValueError, match=r"follow: keys \['c'\] are not among the controls \['a', 'b'\]"):
        LiveFigure(Recorder(), _controls(), follow={"c": print})
    with pytest.raises(ValueError, match="controls: expected at least one widget"):
        LiveFigure(Recorder(), {})


# ---- theta_sweep ----------------------------------------------------------------------------------------------


def _scene(h=9, w=11, labels=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 3, h, w, generator=g) * 255
    unary = torch.log_softmax(torch.randn(1, labels, h, w, generator=g), 1)
    return unary, image


def test_theta_sweep_matches_mean_field_at_every_grid_point():
    unary, image = _scene()
    others = CRFParams(theta_gamma=1.5, w_bilateral=6.0, w_spatial=2.0)
    alphas, betas = [2.0, 8.0], [5.0, 20.0, 80.0]
    sweep = theta_sweep(unary, image, others, alphas, betas, iterations=3)
    assert sweep.labels.shape == (3, 2, 9, 11) and sweep.changed.shape == (3, 2)
    unary_labels = unary[0].argmax(0).numpy()
    np.testing.assert_array_equal(sweep.unary_labels, unary_labels)
    for row, beta in enumerate(betas):
        for col, alpha in enumerate(alphas):
            params = CRFParams(theta_alpha=alpha, theta_beta=beta, theta_gamma=1.5, w_bilateral=6.0, w_spatial=2.0)
            reference = mean_field(unary, image, params, iterations=3, keep=None).q[0].argmax(0).numpy()
            np.testing.assert_array_equal(sweep.labels[row, col], reference)
            assert sweep.changed[row, col] == np.count_nonzero(reference != unary_labels) / reference.size
    assert sweep.changed.max() > 0  # weights of 6 and 2 move labels of a random unary


def test_theta_sweep_uses_the_given_kernels_with_the_grid_bandwidths():
    from lab.explore import build_kernels

    unary, image = _scene(6, 7, 2)
    asked = []

    def kernels_for(params):
        asked.append((params.theta_alpha, params.theta_beta, params.theta_gamma))
        return build_kernels(image, params)[0]

    theta_sweep(unary, image, CRFParams(theta_gamma=2.5), [3.0, 30.0], [10.0], iterations=1, kernels_for=kernels_for)
    assert asked == [(3.0, 10.0, 2.5), (30.0, 10.0, 2.5)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(theta_alpha=[]), "theta_alpha: expected a non-empty list of positive bandwidths"),
        (dict(theta_beta=[5.0, -1.0]), "theta_beta: expected a non-empty list of positive bandwidths"),
        (dict(theta_alpha=[float("nan")]), "theta_alpha: expected a non-empty list"),
        (dict(iterations=0), "iterations: expected an integer >= 1"),
        (dict(iterations=2.5), "iterations: expected an integer >= 1"),
        (dict(unary=torch.zeros(2, 3, 6, 7)), r"unary: expected \(1, L, H, W\)"),
        (dict(image=torch.zeros(1, 3, 6, 8)), r"image: expected \(1, 3, 6, 7\)"),
    ],
)
def test_theta_sweep_refuses_bad_input(kwargs, message):
    unary, image = _scene(6, 7, 2)
    args = dict(unary=unary, image=image, params=CRFParams(), theta_alpha=[3.0], theta_beta=[10.0], iterations=1)
    with pytest.raises(ValueError, match=message):
        theta_sweep(**{**args, **kwargs})
