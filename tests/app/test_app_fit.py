"""The app's "Fit the CRF to this ground truth": the knobs and µ move to the fit, the curve and its note show."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("streamlit", reason="the app extra is not installed (pip install -e .[app])")
from apptest import APP, TIMEOUT, open_tab
from streamlit.testing.v1 import AppTest

from lab.data.synthetic import render_scene
from lab.unary import unary_from_labels

KNOBS = ("theta_alpha", "theta_beta", "theta_gamma", "w_bilateral", "w_spatial")


def png_bytes(arr):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def npy_bytes(arr):
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


@pytest.fixture(scope="module")
def scene():
    """The bundled 'synthetic scene 1' (160 px), its label map, and a noisy 6-class probability map at 64 px."""
    s = render_scene([7, 1], 160)
    small = np.asarray(Image.fromarray(s.label.astype(np.uint8)).resize((64, 64), Image.Resampling.NEAREST))
    g = torch.Generator().manual_seed(0)
    u = unary_from_labels(torch.from_numpy(small.astype(np.int64))[None], 6, gt_prob=0.5, zero_unsure=False)
    prob = (u + 1.5 * torch.randn(u.shape, generator=g)).softmax(1)[0].permute(1, 2, 0).numpy()  # (H, W, L)
    return s.label.astype(np.uint8), prob.astype(np.float32)


def scene_with_prob_map(prob):
    """The app at 64 px on 'synthetic scene 1' with ``prob`` uploaded as the unary (not yet run after the upload)."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    at.sidebar.slider(key="work_size").set_value(64).run()
    at.sidebar.selectbox(key="photo").set_value("synthetic scene 1").run()
    at.sidebar.radio(key="unary_source").set_value("Probability map (.npy/.npz)").run()
    open_tab(at, "What changed")  # the ground truth's uploader and the fit are there
    at.sidebar.file_uploader(key="prob_upload").set_value(("p.npy", npy_bytes(prob), "application/octet-stream"))
    return at


def test_fit_moves_the_knobs_and_mu_and_shows_the_curve(scene):
    label, prob = scene
    at = scene_with_prob_map(prob)
    at.run()
    assert "fit_crf" not in [b.key for b in at.button]  # no ground truth yet: no fit
    at.file_uploader(key="truth_upload").set_value(("ids.png", png_bytes(label), "image/png")).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    before = {k: at.sidebar.slider(key=k).value for k in KNOBS}
    at.button(key="fit_crf").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]

    fit = at.session_state["crf_fit"]
    after = {k: at.sidebar.slider(key=k).value for k in KNOBS}
    assert after == pytest.approx(fit.knobs) and after != before
    assert at.sidebar.radio(key="compat_choice").value == "Fitted µ"
    assert fit.num_labels == 6 and fit.result.steps_run > 0 and fit.result.miou_on == "train"
    summary = next(m.value for m in at.markdown if m.value.startswith("**Fitted:**"))
    assert f"{fit.result.steps_run} gradient steps" in summary and "mIoU on this image" in summary
    assert any("not how well it generalises" in c.value for c in at.caption)

    at.sidebar.selectbox(key="photo").set_value("synthetic scene 2").run()  # another image: the fit is not shown
    assert not at.exception
    assert not any(m.value.startswith("**Fitted:**") for m in at.markdown)


def test_with_zero_iterations_the_fit_says_to_move_t(scene):
    label, prob = scene
    at = scene_with_prob_map(prob)
    at.file_uploader(key="truth_upload").set_value(("ids.png", png_bytes(label), "image/png"))
    at.sidebar.slider(key="iterations").set_value(0).run()
    at.button(key="fit_crf").click().run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        "The fit failed: iterations: expected T >= 1 to fit (with T = 0 the CRF does nothing); move the T knob"
    ]
    assert "crf_fit" not in at.session_state
