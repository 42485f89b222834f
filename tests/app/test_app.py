"""The real app script under Streamlit's AppTest: renders, reacts to knobs and uploads, survives bad files."""

import io

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("streamlit", reason="the app extra is not installed (pip install -e .[app])")
from apptest import APP, TIMEOUT, open_tab
from streamlit.testing.v1 import AppTest


def png_bytes(arr):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def npy_bytes(arr):
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def metrics(at):
    return {m.label: m.value for m in at.metric}


@pytest.fixture
def app():
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


def small(at, size=64):
    at.sidebar.slider(key="work_size").set_value(size).run()
    assert not at.exception


def test_default_run_refines_the_unary(app):
    m = metrics(app)
    assert int(m["Pixels changed vs unary"]) > 0  # 5 iterations move the blocky cluster edges
    assert len(app.error) == 0
    assert "working at" in app.caption[0].value


def test_zero_iterations_show_the_unary_unchanged(app):
    small(app)
    app.sidebar.slider(key="iterations").set_value(0).run()
    assert not app.exception
    assert metrics(app)["Pixels changed vs unary"] == "0"


def test_weights_zero_change_nothing(app):
    small(app)
    app.sidebar.slider(key="w_bilateral").set_value(0.0).run()
    app.sidebar.slider(key="w_spatial").set_value(0.0).run()
    assert metrics(app)["Pixels changed vs unary"] == "0"


def test_weight_change_reuses_the_lattice(app):
    small(app)
    before = metrics(app)["Lattice build (ms)"]
    app.sidebar.slider(key="w_bilateral").set_value(8.0).run()
    assert metrics(app)["Lattice build (ms)"] == before  # cached: same build, same time shown


def test_returning_to_an_earlier_theta_reuses_its_lattice(app):
    small(app)
    first = metrics(app)["Lattice build (ms)"]
    app.sidebar.slider(key="theta_beta").set_value(20.0).run()
    app.sidebar.slider(key="theta_beta").set_value(13.0).run()  # the default again: still in the app's cache
    assert not app.exception
    assert metrics(app)["Lattice build (ms)"] == first


def test_upload_image(app):
    app.sidebar.radio(key="image_source").set_value("Upload").run()
    img = np.zeros((48, 64, 3), np.uint8)
    img[:, 32:] = (200, 40, 40)
    app.sidebar.file_uploader(key="image_upload").set_value(("two.png", png_bytes(img), "image/png")).run()
    assert not app.exception
    assert "two.png: 64×48" in app.caption[0].value


def test_bad_image_upload_shows_an_error_and_keeps_running(app):
    app.sidebar.radio(key="image_source").set_value("Upload").run()
    app.sidebar.file_uploader(key="image_upload").set_value(("notes.png", b"hello, not a png", "image/png")).run()
    assert not app.exception
    assert any("notes.png" in e.value for e in app.error)
    assert "Pixels changed vs unary" in metrics(app)  # still showing results on the bundled photo


def test_annotation_unary(app):
    app.sidebar.selectbox(key="photo").set_value("astronaut").run()  # square: 64 × 64 at the working size
    small(app)
    h, w = 64, 64
    ann = np.zeros((h, w, 3), np.uint8)
    ann[:10, :10] = (255, 0, 0)
    ann[-10:, -10:] = (0, 0, 255)
    app.sidebar.radio(key="unary_source").set_value("Annotation image").run()
    app.sidebar.file_uploader(key="annotation_upload").set_value(("ann.png", png_bytes(ann), "image/png")).run()
    assert not app.exception and len(app.error) == 0
    assert "L = 2 labels" in app.caption[0].value


def test_probability_map_unary_and_bad_map(app):
    small(app)
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3), size=(32, 32)).astype(np.float32)  # (32, 32, 3): half the image's size
    app.sidebar.radio(key="unary_source").set_value("Probability map (.npy/.npz)").run()
    app.sidebar.file_uploader(key="prob_upload").set_value(("p.npy", npy_bytes(p), "application/octet-stream")).run()
    assert not app.exception and len(app.error) == 0
    assert "L = 3 labels" in app.caption[0].value and "resized" in app.caption[0].value
    app.sidebar.file_uploader(key="prob_upload").set_value(("bad.npy", b"garbage", "application/octet-stream")).run()
    assert not app.exception
    assert any("bad.npy" in e.value for e in app.error)


def test_step_by_step_view(app):
    small(app)
    assert not any("Algorithm 1" in s.value for s in app.subheader)  # a closed tab's view does not run
    open_tab(app, "Algorithm 1")
    assert any("Algorithm 1, iteration" in s.value for s in app.subheader)


def test_exact_message_passing_on_a_small_image(app):
    small(app)  # 64 × 64 is within the exact limit
    app.sidebar.selectbox(key="message_passing").set_value("exact").run()
    assert not app.exception and len(app.warning) == 0
    assert int(metrics(app)["Pixels changed vs unary"]) > 0


def test_mediapipe_unary_or_a_clear_reason(app):
    from lab.unary.mediapipe_source import selfie_status

    small(app, 128)
    app.sidebar.selectbox(key="photo").set_value("grace_hopper").run()
    app.sidebar.radio(key="unary_source").set_value("Person vs background (MediaPipe)").run()
    assert not app.exception
    ok, reason = selfie_status()
    if ok:
        assert "L = 2 labels" in app.caption[0].value and "MediaPipe" in app.caption[0].value
        assert len(app.error) == 0
    else:
        assert any("unavailable" in w.value for w in app.warning), reason


def test_fcn_unary_from_a_checkpoint_and_without_one(tmp_path, monkeypatch):
    import torch

    from lab.models import FCN

    monkeypatch.setenv("LAB_TRAIN_DIR", str(tmp_path / "none"))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    at.sidebar.selectbox(key="photo").set_value("synthetic scene 1").run()
    at.sidebar.radio(key="unary_source").set_value("Small FCN (synthetic shapes)").run()
    assert not at.exception
    assert any("python -m lab.train --quick" in w.value for w in at.warning)

    ckpt = tmp_path / "runs" / "seed0" / "fcn.pt"
    ckpt.parent.mkdir(parents=True)
    weights = {f"unary_net.{k}": v for k, v in FCN(6, width=8).state_dict().items()}
    torch.save({"config": {"width": 8}, "model": weights}, ckpt)
    monkeypatch.setenv("LAB_TRAIN_DIR", str(tmp_path / "runs"))
    at.run()
    assert not at.exception and len(at.error) == 0
    assert "L = 6 labels" in at.caption[0].value and "FCN seed0" in at.caption[0].value


def test_trained_crf_sets_the_knobs_and_mu(tmp_path, monkeypatch):
    import torch

    from lab.crf import CRFRNN, CRFParams, load_trained_crf
    from lab.models import FCN
    from lab.train import SegmentationCRFRNN

    torch.manual_seed(0)
    params = CRFParams(theta_alpha=7.0, theta_beta=12.0, theta_gamma=2.0, w_bilateral=60.0, w_spatial=1.5)
    crf = CRFRNN(6, params=params, learnable_bandwidths=True)
    with torch.no_grad():
        crf.log_theta_alpha.add_(0.25)  # as if training had moved θα
        crf.compat.add_(0.2 * torch.randn(6, 6))
    net = SegmentationCRFRNN(FCN(6, width=8), crf)
    run = tmp_path / "runs" / "seed0"
    run.mkdir(parents=True)
    config = {"stage": "crf-rnn-learned-theta", "grid": {"fcn": {"data": {"image_size": 64}, "width": 8}}}
    torch.save({"config": config, "epoch": 5, "model": net.state_dict()}, run / "crf-rnn-learned-theta.pt")
    torch.save({"config": {"width": 8}, "model": net.state_dict()}, run / "fcn.pt")
    monkeypatch.setenv("LAB_TRAIN_DIR", str(tmp_path / "runs"))

    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    at.sidebar.selectbox(key="trained_crf").set_value("runs/seed0/crf-rnn-learned-theta").run()
    assert not at.exception and len(at.error) == 0
    trained = load_trained_crf(run / "crf-rnn-learned-theta.pt")
    assert any("θα = 8.99 px" in c.value and "(learned)" in c.value for c in at.sidebar.caption)  # 7·e^0.25
    at.sidebar.button(key="use_trained").click().run()
    assert not at.exception and len(at.error) == 0
    for name, value in trained.summary().items():
        want = 50.0 if name == "w_bilateral" else round(value, 2)  # 60 is beyond the knob's 50: clamped
        assert at.sidebar.slider(key=name).value == pytest.approx(want), name
    assert any("w_bilateral = 60" in w.value for w in at.sidebar.warning)
    assert at.sidebar.radio(key="compat_choice").value == "Trained CRF-RNN's µ"
    # the default unary (VOC: L = 21, or the colour clusters: L = 4): the 6×6 µ does not fit, Potts is used, said so
    assert any("the unary has L = " in w.value for w in at.sidebar.warning)  # 21 (VOC) or 4 (clusters)
    at.sidebar.selectbox(key="photo").set_value("synthetic scene 1").run()
    at.sidebar.radio(key="unary_source").set_value("Small FCN (synthetic shapes)").run()
    assert not at.exception and len(at.error) == 0
    assert not any("the unary has L" in w.value for w in at.sidebar.warning)
    assert "L = 6 labels" in at.caption[0].value
