"""The app's teaching views, part 2: the pixel inspector, the Algorithm-1 figure, the impulse response, scribbles,
A/B compare, θ as a share of the image, and the sidebar's order."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("streamlit", reason="the app extra is not installed (pip install -e .[app])")
from apptest import APP, open_tab
from streamlit.testing.v1 import AppTest

from lab.explore.display import upscale_nearest
from lab.explore.inspect_view import display_to_pixel, footprint_image, mark_pixel, strokes_from_drawing, theta_note
from lab.explore.voc_view import class_names_for

CLUSTERS_SOURCE = "Colour clusters (built-in)"
LEFT, RIGHT = (31, 200, 97), (250, 10, 180)


def png(arr):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def two_halves(h=32, w=48):
    """A dark left half and a bright right half, with a 4-px bright bar in the dark half (a speck to remove)."""
    img = np.full((h, w, 3), 40, np.uint8)
    img[:, w // 2 :] = 210
    return img


def start(size=64, **state):
    at = AppTest.from_file(APP, default_timeout=300)
    at.session_state["work_size"] = size
    at.session_state["unary_source"] = CLUSTERS_SOURCE
    for k, v in state.items():
        at.session_state[k] = v
    at.run()
    assert not at.exception, at.exception
    return at


def annotated(at, img, ann):
    """The app on an uploaded image with an annotation unary of two colours (every pixel labelled)."""
    at.sidebar.radio(key="image_source").set_value("Upload").run()
    at.sidebar.file_uploader(key="image_upload").set_value(("two.png", png(img), "image/png")).run()
    at.sidebar.radio(key="unary_source").set_value("Annotation image").run()
    at.sidebar.file_uploader(key="annotation_upload").set_value(("ann.png", png(ann), "image/png")).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    return at


@pytest.fixture(scope="module")
def halves():
    img = two_halves()
    ann = np.zeros(img.shape, np.uint8)
    ann[:, :24] = LEFT
    ann[:, 24:] = RIGHT
    ann[10:14, 4:8] = RIGHT  # a wrong speck inside the dark half: the CRF should flip it to LEFT's class
    return annotated(start(view_tab="Pixel inspector"), img, ann)


def inspector_table(at):
    return next(d.value for d in at.dataframe if "µQ̌ (penalty)" in d.value.columns or "Q_0" in d.value.columns)


# ------------------------------------------------------------------------------ 1. the pixel inspector
@pytest.mark.parametrize("displayed", [512, 700, 333])
def test_a_click_on_the_enlarged_image_maps_to_its_working_pixel(displayed):
    h, w = 48, 64
    ids = np.arange(h * w).reshape(h, w)
    big = upscale_nearest(ids)  # the image as the app enlarges it (whole pixels), then the browser fits it
    k = big.shape[1] // w
    assert k > 1
    scale = displayed / big.shape[1]
    rng = np.random.default_rng(0)
    for _ in range(50):
        # a click somewhere inside a displayed pixel: which working pixel is it, read off the enlarged ids?
        bx, by = rng.uniform(0, big.shape[1]), rng.uniform(0, big.shape[0])
        truth = int(big[int(by), int(bx)])
        click = {"x": bx * scale, "y": by * scale, "width": displayed, "height": big.shape[0] * scale}
        y, x = display_to_pixel(click, (h, w))
        assert y * w + x == truth
    assert display_to_pixel({"x": displayed, "y": 0, "width": displayed, "height": 1}, (h, w)) == (0, w - 1)
    with pytest.raises(ValueError, match="click"):
        display_to_pixel({"x": 1, "y": 1}, (h, w))
    with pytest.raises(ValueError, match="click"):
        display_to_pixel({"x": float("nan"), "y": 1, "width": 2, "height": 2}, (h, w))


def test_the_inspector_explains_the_speck_that_flipped(halves):
    at = halves
    at.number_input(key="inspect_x").set_value(5).run()
    at.number_input(key="inspect_y").set_value(11).run()
    assert not at.exception
    text = next(m.value for m in at.markdown if m.value.startswith("Pixel (x=5, y=11)"))
    first, second = class_names_for(2, None)
    # the unary says the speck's class (1), the CRF turns it into the surrounding class (0)
    assert f"the unary says {second}" in text and f"it is {first}" in text and f"{second} → {first}" in text, text
    table = inspector_table(at)
    q = table["Q_5"].to_numpy()
    assert q.sum() == pytest.approx(1.0, abs=1e-5) and q.argmax() == 0
    scores = table["U − µQ̌"].to_numpy()
    np.testing.assert_allclose(np.exp(scores) / np.exp(scores).sum(), q, atol=1e-5)  # Q_t = softmax(U − µQ̌)
    weighted, penalty = table["Q̌ = Σ w·message"].to_numpy(), table["µQ̌ (penalty)"].to_numpy()
    np.testing.assert_allclose(penalty, weighted.sum() - weighted, atol=1e-5)  # Potts: the votes for the others
    np.testing.assert_allclose(scores, table["U (unary)"].to_numpy() - penalty, atol=1e-5)
    captions = [c for img in at.get("image") for c in img.captions]
    assert any(c.startswith("The bilateral kernel's footprint") for c in captions)
    assert any(c.startswith("The spatial kernel's footprint") for c in captions)
    assert any("over the iterations, one line per class" in c.value for c in at.caption)


def test_the_inspector_follows_t_and_says_what_t_zero_is(halves):
    at = halves
    at.slider(key="t_view").set_value(2).run()
    assert "bilateral message (from Q_1)" in inspector_table(at).columns
    at.slider(key="t_view").set_value(0).run()
    assert not at.exception
    assert list(inspector_table(at).columns) == ["class", "U", "Q_0"]
    assert any("no message has been sent" in c.value for c in at.caption)
    at.slider(key="t_view").set_value(5).run()


def test_inspector_inputs_stay_inside_a_smaller_image():
    at = start(size=128, view_tab="Pixel inspector")
    at.number_input(key="inspect_x").set_value(120).run()
    at.sidebar.slider(key="work_size").set_value(64).run()
    assert not at.exception
    assert at.number_input(key="inspect_x").value < 64


def test_footprint_and_marker_images():
    img = two_halves(16, 16)
    k = np.zeros((16, 16))
    k[3, 4] = 1.0
    k[3, 5] = 0.25
    out = footprint_image(img, k, 3, 4)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert (out[3, 4] != out[12, 4]).any()  # the voter differs from a pixel that does not vote
    assert tuple(out[2, 4]) == (0, 255, 255)  # the cross's arm above the pixel
    assert tuple(mark_pixel(img, 0, 0)[0, 0]) == tuple(img[0, 0])  # the pixel keeps its own colour
    with pytest.raises(ValueError, match="footprint"):
        footprint_image(img, np.full((16, 16), 2.0), 3, 4)
    with pytest.raises(ValueError, match="footprint"):
        footprint_image(img, np.ones((8, 8)), 3, 4)


def test_strokes_from_a_drawing_at_twice_the_working_size():
    colours = [(230, 159, 0), (0, 114, 178)]
    rgba = np.zeros((8, 12, 4), np.uint8)
    rgba[0:2, 0:2] = (*colours[0], 255)
    rgba[4, 11] = (*colours[1], 255)  # one pixel of a 2 × 2 block marks it
    strokes = strokes_from_drawing(rgba, (4, 6), colours)
    expected = np.zeros((4, 6), np.int64)
    expected[0, 0], expected[2, 5] = 1, 2
    np.testing.assert_array_equal(strokes, expected)
    rgb = np.zeros((4, 6, 3), np.uint8)  # an uploaded PNG: black is unmarked
    rgb[1, 1] = colours[1]
    strokes = strokes_from_drawing(rgb, (4, 6), colours)
    assert strokes[1, 1] == 2 and strokes.sum() == 2
    with pytest.raises(ValueError, match="whole multiple"):
        strokes_from_drawing(np.zeros((5, 6, 4), np.uint8), (4, 6), colours)


def test_theta_note():
    assert theta_note(80, 256) == "80 px = 31 % of the longer side (256 px)"
    assert theta_note(3, 256) == "3 px = 1.2 % of the longer side (256 px)"
    assert theta_note(200, 64) == "200 px = 312 % of the longer side (64 px)"
    with pytest.raises(ValueError, match="side"):
        theta_note(3, 0)


# ------------------------------------------------------------------------------ 2. the Algorithm-1 figure
def test_the_algorithm_view_is_one_figure_per_t_with_scales_shared_across_t(monkeypatch):
    import lab.viz.algorithm as algorithm

    calls = []
    real = algorithm.step_figure

    def recording(trace, unary, t, label, class_name=None, limits=None):
        calls.append((t, label, class_name, limits, algorithm.step_limits(trace, unary, label)))
        return real(trace, unary, t, label, class_name, limits)

    monkeypatch.setattr(algorithm, "step_figure", recording)
    at = start()
    assert not calls  # its tab is closed: nothing drawn
    open_tab(at, "Algorithm 1")
    at.slider(key="t_view").set_value(0).run()
    assert not at.exception
    heads = [s.value for s in at.subheader]
    assert any(h.startswith("Algorithm 1 at t = 0: the initialisation") for h in heads), heads
    assert not any(h.startswith("Algorithm 1, iteration") for h in heads)
    at.slider(key="t_view").set_value(2).run()
    at.slider(key="t_view").set_value(4).run()
    assert any(s.value.startswith("Algorithm 1, iteration 4, class") for s in at.subheader)
    caption = next(c for img in at.get("image") for c in img.captions if c.startswith("From Q_3 to Q_4"))
    assert "the same for every t" in caption
    options = at.selectbox(key="step_class").options
    assert len(options) == 4 and all(": " in o for o in options)  # every class, by name
    at.selectbox(key="step_class").set_value(3).run()
    assert not at.exception
    ts = [c[0] for c in calls]
    assert ts[:4] == [5, 0, 2, 4] and calls[-1][1] == 3  # opening the tab drew t = T first
    for _, _, name, limits, own in calls:
        assert limits == own  # the run's scales for the class, whatever t: shared across t
        assert name and not name.startswith("label ")
    assert len({c[3] for c in calls if c[1] == calls[0][1]}) == 1


# ------------------------------------------------------------------------------ 3. the impulse response
@pytest.mark.parametrize("kernel", ["bilateral", "spatial"])
def test_the_impulse_response_states_the_gaussian_sums(halves, kernel):
    import re

    from lab.explore.defaults import DEFAULT_PARAMS as P

    at = halves
    at.number_input(key="inspect_x").set_value(20).run()
    at.number_input(key="inspect_y").set_value(16).run()
    at.toggle(key="show_impulse").set_value(True).run()
    at.radio(key="impulse_kernel").set_value(kernel).run()
    assert not at.exception
    caption = next(c for img in at.get("image") for c in img.captions if c.startswith("What pixel (x=20, y=16)"))
    # the Gaussian from its formula, over the uploaded image (48 × 32, below the working size: not resized)
    img = two_halves().astype(np.float64)
    yy, xx = np.mgrid[0:32, 0:48]
    d2 = (xx - 20) ** 2 + (yy - 16) ** 2
    if kernel == "bilateral":
        k = np.exp(-d2 / (2 * P.theta_alpha**2) - ((img - img[16, 20]) ** 2).sum(-1) / (2 * P.theta_beta**2))
    else:
        k = np.exp(-d2 / (2 * P.theta_gamma**2))
    r = P.window_size // 2
    inside = (abs(xx - 20) <= r) & (abs(yy - 16) <= r)
    sums = [float(v) for v in re.findall(r"Σ = (\d+\.\d)", caption)]
    assert sums[0] == pytest.approx(k.sum(), abs=0.06)  # exact
    assert sums[1] == pytest.approx(k[inside].sum(), abs=0.06)  # window: the Gaussian cut to its square
    lost = float(re.search(r"loses ([\d.]+) %", caption).group(1))
    assert lost == pytest.approx(100 * (1 - k[inside].sum() / k.sum()), abs=0.06)
    assert "The window truncates" in caption and "The lattice approximates" in caption
    at.toggle(key="show_impulse").set_value(False).run()


# ------------------------------------------------------------------------------ 4. scribbles
def scribbled(at, strokes_png):
    at.sidebar.radio(key="unary_source").set_value("Scribbles (draw a few strokes per class)").run()
    at.sidebar.file_uploader(key="stroke_upload").set_value(("strokes.png", strokes_png, "image/png")).run()
    assert not at.exception
    return at


def test_scribbles_from_an_uploaded_stroke_png_label_each_half():
    from lab.explore.display import class_colours

    img = two_halves()
    colours = class_colours(2)
    strokes = np.zeros((32, 48, 4), np.uint8)  # transparent: nothing marked
    strokes[4:6, 2:10] = (*colours[0], 255)
    strokes[26:28, 30:44] = (*colours[1], 255)
    at = start(view_tab="Pixel inspector")
    at.sidebar.radio(key="image_source").set_value("Upload").run()
    at.sidebar.file_uploader(key="image_upload").set_value(("two.png", png(img), "image/png")).run()
    scribbled(at, png(strokes))
    assert not at.error, [e.value for e in at.error]
    assert "scribbles: 44 marked pixels, T = 1" in at.caption[0].value
    for x, y, name in ((3, 20, "scribble 1"), (40, 10, "scribble 2")):  # unmarked pixels, one in each half
        at.number_input(key="inspect_x").set_value(x).run()
        at.number_input(key="inspect_y").set_value(y).run()
        text = next(m.value for m in at.markdown if m.value.startswith(f"Pixel (x={x}, y={y})"))
        assert f"the unary says {name}" in text and f"it is {name}" in text, text
    u1 = inspector_table(at)["U (unary)"].to_numpy()
    at.sidebar.slider(key="scribble_temperature").set_value(2.0).run()
    u2 = inspector_table(at)["U (unary)"].to_numpy()
    s = u1 / 2.0
    np.testing.assert_allclose(u2, s - np.log(np.exp(s).sum()), atol=1e-4)  # U_T = log softmax(U_1 / T)
    # one class unmarked: the source says which, and offers nothing it cannot do
    strokes[26:28, 30:44] = 0
    at.sidebar.file_uploader(key="stroke_upload").set_value(("one.png", png(strokes), "image/png")).run()
    assert not at.exception
    assert any("Draw strokes for scribble 2" in i.value for i in at.info)
    at.sidebar.file_uploader(key="stroke_upload").set_value(("bad.png", png(strokes[:10]), "image/png")).run()
    assert any("bad.png" in e.value and "whole multiple" in e.value for e in at.error)
    at.sidebar.file_uploader(key="stroke_upload").set_value(("junk.png", b"not a png", "image/png")).run()
    assert not at.exception and any("junk.png" in e.value for e in at.error)


def test_without_the_canvas_the_scribble_source_says_why(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_canvas(name, *args, **kwargs):
        if name == "streamlit_drawable_canvas":
            raise ImportError("No module named 'streamlit_drawable_canvas'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_canvas)
    at = start()
    at.sidebar.radio(key="unary_source").set_value("Scribbles (draw a few strokes per class)").run()
    assert not at.exception
    info = next(i.value for i in at.sidebar.info if "Drawing needs the canvas" in i.value)
    assert "streamlit-drawable-canvas could not be loaded" in info and "Upload a stroke PNG" in info


def test_the_canvas_is_offered_with_the_class_brushes():
    at = start()
    at.sidebar.radio(key="unary_source").set_value("Scribbles (draw a few strokes per class)").run()
    at.sidebar.slider(key="scribble_classes").set_value(3).run()
    assert not at.exception and not at.error
    assert at.radio(key="scribble_class").options == ["scribble 1", "scribble 2", "scribble 3"]
    assert any(c.value.startswith("Draw a few strokes of each class") for c in at.caption)
    assert any("No unary from 'Scribbles" in i.value for i in at.info)  # nothing drawn yet: clusters meanwhile


# ------------------------------------------------------------------------------ 5. A/B compare
def test_a_b_compare_counts_the_pixels_that_differ():
    import re

    at = start(view_tab="A/B")
    assert any(c.value.startswith("No B yet") for c in at.caption)
    at.button(key="keep_b").click().run()
    assert not at.exception
    table = next(d.value for d in at.dataframe if "B (kept)" in d.value.columns)
    assert not (table["differs"] == "yes").any()
    caption = next(c for img in at.get("image") for c in img.captions if c.startswith("Where A and B disagree"))
    assert caption.startswith("Where A and B disagree: 0 of ")
    at.sidebar.slider(key="w_spatial").set_value(20.0).run()
    at.sidebar.slider(key="iterations").set_value(3).run()
    assert not at.exception
    table = next(d.value for d in at.dataframe if "B (kept)" in d.value.columns)
    assert set(table.loc[table["differs"] == "yes", "knob"]) == {"w spatial", "iterations T"}
    caption = next(c for img in at.get("image") for c in img.captions if c.startswith("Where A and B disagree"))
    differ = int(re.match(r"Where A and B disagree: (\d+) of", caption).group(1))
    assert differ == at.session_state["ab_differ"] > 0
    # the count is that of the two runs' own label maps, from the changes since the unary of each
    pairs = next(m.value for m in at.markdown if m.value.startswith("A → B class"))
    total = sum(int(n) for n in re.findall(r": (\d+) px", pairs))
    assert total == differ
    at.button(key="forget_b").click().run()
    assert "params_b" not in at.session_state and any(c.value.startswith("No B yet") for c in at.caption)


# ------------------------------------------------------------------------------ 6.–7. θ as a share; the sidebar
def widget_keys(block):
    """The keys of the widgets under ``block``, in page order (expanders and columns walked into)."""
    for child in getattr(block, "children", {}).values():
        key = getattr(child, "key", None)
        if key and not key.startswith("$$"):
            yield key
        yield from widget_keys(child)


def test_the_knobs_come_first_in_the_sidebar_and_theta_is_also_a_share_of_the_image():
    import re

    at = start(size=96)
    keys = list(widget_keys(at.sidebar))
    knobs = ["theta_alpha", "theta_beta", "theta_gamma", "w_bilateral", "w_spatial", "iterations"]
    assert keys[: len(knobs)] == knobs, keys  # nothing above the knobs (no trained CRF here)
    assert keys.index("image_source") > keys.index("iterations") and keys.index("unary_source") > keys.index(
        "iterations"
    )
    labels = [e.label for e in at.sidebar.get("expander")]
    assert labels[0] == "Image and unary source" and labels[1].startswith("More CRF options")
    w, h = map(int, re.search(r"working at (\d+)×(\d+)", at.caption[0].value).groups())
    side = max(w, h)
    assert side == 96
    notes = [c.value for c in at.sidebar.caption]
    alpha = at.sidebar.slider(key="theta_alpha").value
    assert any(
        n.startswith(f"θα: {alpha:g} px = {100 * alpha / side:.0f} % of the longer side ({side} px)") for n in notes
    )
    at.sidebar.slider(key="theta_gamma").set_value(4.8).run()
    assert f"θγ: 4.8 px = 5 % of the longer side ({side} px)." in [c.value for c in at.sidebar.caption]


# ------------------------------------------------------------------------------ 6. energy
def test_the_energy_split_is_explained_and_a_rise_is_warned():
    at = start(view_tab="Energy and KL")
    at.toggle(key="show_energy").set_value(True).run()
    assert not at.exception
    caption = next(c for img in at.get("image") for c in img.captions if c.startswith("Left: the mean-field free"))
    assert "densecrf's printed 'KL'" in caption and "log Z" in caption and "11 × 11 window" in caption
    assert not any(w.value.startswith("The KL rose") for w in at.warning)  # Potts, positive weights: it falls
    # a negative weight: mean field oscillates, the KL goes up, and the page says so
    at.sidebar.slider(key="w_bilateral").set_value(-10.0).run()
    at.sidebar.slider(key="iterations").set_value(8).run()
    assert not at.exception
    warned = [w.value for w in at.warning if w.value.startswith("The KL rose at iteration(s) ")]
    assert warned and "oscillation" in warned[0], [w.value for w in at.warning]


def test_rises_ignores_float_noise():
    source = Path(APP).read_text()
    start_at, end_at = source.index("ENERGY_RISE ="), source.index("def energy_figure")
    namespace = {"np": np}
    exec(source[start_at:end_at], namespace)  # the two definitions alone, without running the page
    rises = namespace["rises"]
    assert rises(np.array([5.0, 3.0, 3.0 + 1e-9, 2.0])) == []
    assert rises(np.array([5.0, 3.0, 3.5, 2.0, 2.2])) == [2, 4]
