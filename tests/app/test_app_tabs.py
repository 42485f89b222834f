"""The app's results in tabs: only the open tab's view runs, a closed tab keeps what the user set in it, and
the θα × θβ grid agrees with the runs the knobs make."""

import io
import re

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("streamlit", reason="the app extra is not installed (pip install -e .[app])")
from apptest import APP, TIMEOUT, open_tab
from streamlit.testing.v1 import AppTest

CLUSTERS_SOURCE = "Colour clusters (built-in)"
# each tab and a heading (or, for the downloads, a button label) only its view draws
TABS = {
    "Up close": "Iteration 5 up close",
    "What changed": "What the CRF changed: unary argmax → Q_5 argmax",
    "Energy and KL": None,  # no heading: its KL caption
    "Pixel inspector": "Pixel inspector: why does this pixel have its label?",
    "Algorithm 1": "Algorithm 1, iteration 5, class",
    "θα × θβ grid": "θα × θβ: how far, and how alike",
    "A/B": "A/B compare: two parameter sets on the same image and unary",
    "Unary check": "Unary check: looks fine",
    "Download": None,
}


def png(arr):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def clusters_app(size=64):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state["work_size"] = size
    at.session_state["unary_source"] = CLUSTERS_SOURCE
    at.run()
    assert not at.exception, at.exception
    return at


def headings(at):
    return [s.value for s in at.subheader]


def changed_share(at) -> float:
    """The share of pixels the run on screen relabelled, from the metric and the working size."""
    w, h = map(int, re.search(r"working at (\d+)×(\d+)", at.caption[0].value).groups())
    changed = int(next(m.value for m in at.metric if m.label == "Pixels changed vs unary"))
    return changed / (w * h)


def test_only_the_open_tab_runs_and_every_tab_draws():
    at = clusters_app()
    assert [t.label for t in at.tabs] == list(TABS)
    for name, heading in TABS.items():
        open_tab(at, name)
        assert not at.error, (name, [e.value for e in at.error])
        others = [h for n, h in TABS.items() if n != name and h]
        shown = headings(at)
        if heading:
            assert any(s.startswith(heading) for s in shown), (name, shown)
        assert not any(s.startswith(h) for s in shown for h in others), (name, shown)
        # the two result images and their numbers stay above the tabs, whichever is open
        captions = [c for img in at.get("image") for c in img.captions]
        assert any(c.startswith("Unary argmax (t = 0)") for c in captions) and any(
            c.startswith("Q_5 argmax") for c in captions
        )
        assert "Pixels changed vs unary" in {m.label for m in at.metric}
    open_tab(at, "Energy and KL")
    assert any("KL(Q_t ‖ P)" in c.value for c in at.caption)
    open_tab(at, "Download")
    assert [b.key for b in at.get("download_button")] == ["dl_labels", "dl_q", "dl_params"]


def test_a_closed_tab_keeps_what_was_set_in_it():
    at = clusters_app()
    open_tab(at, "Pixel inspector")
    at.number_input(key="inspect_x").set_value(7).run()
    at.number_input(key="inspect_y").set_value(9).run()
    at.toggle(key="show_impulse").set_value(True).run()
    at.radio(key="impulse_kernel").set_value("spatial").run()
    open_tab(at, "Up close")
    present = at.selectbox(key="class_view").options
    at.selectbox(key="class_view").set_value(int(present[-1].split(":")[0])).run()
    open_tab(at, "Pixel inspector")  # Streamlit forgets the state of widgets it did not draw: the app does not
    assert at.number_input(key="inspect_x").value == 7 and at.number_input(key="inspect_y").value == 9
    assert at.toggle(key="show_impulse").value and at.radio(key="impulse_kernel").value == "spatial"
    assert any(m.value.startswith("Pixel (x=7, y=9)") for m in at.markdown)
    open_tab(at, "Up close")
    assert at.selectbox(key="class_view").value == int(present[-1].split(":")[0])


def test_an_uploaded_ground_truth_survives_closing_its_tab():
    at = clusters_app()
    w, h = map(int, re.search(r"working at (\d+)×(\d+)", at.caption[0].value).groups())
    ids = np.zeros((h, w, 3), np.uint8)  # grey levels = class ids: the left half class 0, the right class 1
    ids[:, w // 2 :] = 1
    open_tab(at, "What changed")
    at.file_uploader(key="truth_upload").set_value(("ids.png", png(ids), "image/png")).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    miou = next(m.value for m in at.metric if m.label == "mIoU after the CRF")
    open_tab(at, "Up close")
    open_tab(at, "What changed")
    assert any(c.value == "Using the ground truth 'ids.png' uploaded earlier." for c in at.caption)
    assert next(m.value for m in at.metric if m.label == "mIoU after the CRF") == miou
    at.button(key="forget_truth").click().run()
    assert "mIoU after the CRF" not in {m.label for m in at.metric}
    assert not any(c.value.startswith("Using the ground truth") for c in at.caption)


def test_the_theta_grid_agrees_with_the_runs_its_panels_stand_for():
    at = clusters_app()
    alpha = at.sidebar.slider(key="theta_alpha").value
    beta = at.sidebar.slider(key="theta_beta").value
    own = changed_share(at)
    open_tab(at, "θα × θβ grid")
    assert not at.error, [e.value for e in at.error]
    captions = [c for img in at.get("image") for c in img.captions if c.startswith("θα = ")]
    assert len(captions) == 9
    panel = {}
    for c in captions:
        a, b, share = re.match(r"θα = ([\d.]+) px \(\d+ % of the side\), θβ = ([\d.]+): ([\d.]+) %", c).groups()
        panel[float(a), float(b)] = (float(share), c)
    assert sorted({a for a, _ in panel}) == [alpha / 2, alpha, alpha * 2]
    assert sorted({b for _, b in panel}) == [beta / 2, beta, beta * 2]
    share, caption = panel[alpha, beta]
    assert caption.endswith("the knobs as set") and sum(c.endswith("the knobs as set") for c in captions) == 1
    assert share == pytest.approx(100 * own, abs=0.051)  # the centre is the run on screen
    # a corner panel is the run the knobs make when set to its θ
    at.sidebar.slider(key="theta_alpha").set_value(alpha * 2).run()
    at.sidebar.slider(key="theta_beta").set_value(beta / 2).run()
    assert panel[alpha * 2, beta / 2][0] == pytest.approx(100 * changed_share(at), abs=0.051)
    at.radio(key="grid_spread").set_value("×4 (a quarter, as set, four times)").run()
    assert not at.exception and not at.error
    captions = [c for img in at.get("image") for c in img.captions if c.startswith("θα = ")]
    alphas = sorted({float(re.match(r"θα = ([\d.]+)", c).group(1)) for c in captions})
    assert alphas == [alpha * 2 / 4, alpha * 2, min(alpha * 2 * 4, 200.0)]  # kept inside the knob's range


def test_with_zero_iterations_the_step_and_grid_views_say_why_they_are_empty():
    at = clusters_app()
    at.sidebar.slider(key="iterations").set_value(0).run()
    open_tab(at, "Algorithm 1")
    assert any(i.value.startswith("T = 0: no iteration ran") for i in at.info)
    open_tab(at, "θα × θβ grid")
    assert any(i.value.startswith("T = 0: every panel would be the unary's argmax") for i in at.info)


def test_an_oscillating_run_is_flagged_above_the_tabs_and_its_kl_rise_in_the_energy_tab():
    at = clusters_app()
    assert not any(w.value.startswith("Mean field is oscillating") for w in at.warning)  # the defaults converge
    at.sidebar.slider(key="w_bilateral").set_value(-10.0).run()  # rewards disagreement: parallel updates cycle
    at.sidebar.slider(key="iterations").set_value(8).run()
    assert not at.exception
    warned = [w.value for w in at.warning if w.value.startswith("Mean field is oscillating")]
    assert warned, [w.value for w in at.warning]
    flipped = int(re.search(r"oscillating: (\d+) pixels", warned[0]).group(1))
    assert "flipped at t = 7 and flipped back at t = 8" in warned[0]
    w, h = map(int, re.search(r"working at (\d+)×(\d+)", at.caption[0].value).groups())
    back = int(next(m.value for m in at.metric if m.label == "Pixels changed vs t−1"))
    assert 0.01 * w * h < flipped <= back  # a pixel that flipped back at t = 8 changed since t − 1
    open_tab(at, "Energy and KL")
    assert any(w.value.startswith("The KL rose at iteration(s)") for w in at.warning)


def _unary_image(at) -> tuple[object, bytes]:
    """The memo of the left image (the unary's arg-max, t = 0) and its PNG at the default opacity."""
    key, kept = at.session_state["unary_view_memo"]
    return key, kept[("png", ("argmax", 0, 0.5))]


def test_the_unary_image_is_kept_while_the_knobs_move_and_made_anew_for_a_new_unary():
    at = clusters_app()
    at.session_state["iterations"] = 0
    at.run()
    key, first = _unary_image(at)
    # T = 0: the right image is Q_0's arg-max too, encoded by the run's own memo: the same bytes
    _, run_memo = at.session_state["view_memo"]
    assert run_memo[("png", ("argmax", 0, 0.5))] == first
    at.session_state["w_spatial"] = 1.5
    at.run()
    assert not at.exception and _unary_image(at)[1] is first  # a new run, the unary image not made again
    at.session_state["n_clusters"] = 6
    at.run()
    new_key, other = _unary_image(at)
    assert new_key != key and other != first  # another unary: another image
    decoded = np.asarray(Image.open(io.BytesIO(other)))
    _, run_memo = at.session_state["view_memo"]
    assert np.array_equal(decoded, np.asarray(Image.open(io.BytesIO(run_memo[("png", ("argmax", 0, 0.5))]))))


def test_the_chart_libraries_are_imported_in_the_background_once(monkeypatch):
    import importlib
    import threading

    import streamlit as st

    seen = []
    real = importlib.import_module
    monkeypatch.setattr(importlib, "import_module", lambda name, *a: seen.append(name) or real(name, *a))
    st.cache_resource.clear()  # as on a fresh server
    at = clusters_app()
    loaders = [t for t in threading.enumerate() if t.name == "preload-chart-libraries"]
    for t in loaders:
        t.join(timeout=120)
    assert [n for n in seen if n in ("pandas", "pyarrow", "altair")] == ["pandas", "pyarrow", "altair"]
    at.session_state["w_spatial"] = 1.5
    at.run()
    assert not at.exception
    assert not any(t.name == "preload-chart-libraries" and t.is_alive() for t in threading.enumerate())
    assert [n for n in seen if n == "altair"] == ["altair"]  # once per server, not per rerun
