"""Bad uploads and options that cannot run, through the real app script under AppTest.

Each case: an error names the uploaded file (never a ``<_io.BytesIO ...>`` repr), no exception escapes the
script (``at.exception`` is empty), and the page stays usable: results are still shown, and a good file
uploaded afterwards is used.
"""

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("streamlit", reason="the app extra is not installed (pip install -e .[app])")
from streamlit.testing.v1 import AppTest

from lab.explore import MAX_LABELS, app_cache

APP = str(Path(__file__).resolve().parents[2] / "app" / "streamlit_app.py")
TIMEOUT = 180  # importing torch and the first lattice build take well over AppTest's 3 s default
SIDE = 64  # working size: the astronaut (512 × 512) at 64 × 64


def png_bytes(arr, **save):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", **save)
    return buf.getvalue()


def npy_bytes(arr):
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def two_colour_image(h=48, w=64):
    img = np.zeros((h, w, 3), np.uint8)
    img[:, w // 2 :] = (200, 40, 40)
    return img


@pytest.fixture
def app():
    app_cache().clear()  # each test starts from an empty app cache (it is process-wide, like st.cache_resource)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    at.sidebar.selectbox(key="photo").set_value("astronaut").run()  # square: SIDE × SIDE at the working size
    at.sidebar.slider(key="work_size").set_value(SIDE).run()
    assert not at.exception, at.exception
    return at


def errors(at):
    return [e.value for e in at.error]


def assert_refused(at, name, *phrases):
    """An error names ``name`` (and says ``phrases``), nothing escaped, and the page still shows results."""
    assert not at.exception, [e.value for e in at.exception]
    shown = errors(at)
    assert any(name in e and all(p in e for p in phrases) for e in shown), shown
    assert not any("_io.BytesIO" in e or "object at 0x" in e for e in shown), shown
    assert "Pixels changed vs unary" in {m.label for m in at.metric}  # still showing results


def upload_image(at, name, data, mime="image/png"):
    at.sidebar.radio(key="image_source").set_value("Upload").run()
    at.sidebar.file_uploader(key="image_upload").set_value((name, data, mime)).run()


def upload_prob(at, name, data):
    at.sidebar.radio(key="unary_source").set_value("Probability map (.npy/.npz)").run()
    at.sidebar.file_uploader(key="prob_upload").set_value((name, data, "application/octet-stream")).run()


def upload_annotation(at, name, data, mime="image/png"):
    at.sidebar.radio(key="unary_source").set_value("Annotation image").run()
    at.sidebar.file_uploader(key="annotation_upload").set_value((name, data, mime)).run()


# ------------------------------------------------------------------------------------------- labels
def test_probability_map_with_300_labels_is_refused(app):
    logits = np.random.default_rng(0).normal(size=(8, 8, 300)).astype(np.float32)  # (H, W, L), L = 300
    upload_prob(app, "many.npy", npy_bytes(logits))
    assert_refused(app, "many.npy", "300 labels", str(MAX_LABELS))
    assert "L = 4 labels" in app.caption[0].value  # the built-in clusters meanwhile
    rng = np.random.default_rng(1)
    good = rng.dirichlet(np.ones(3), size=(16, 16)).astype(np.float32)
    app.sidebar.file_uploader(key="prob_upload").set_value(("good.npy", npy_bytes(good), "application/x-npy")).run()
    assert not app.exception and not errors(app)
    assert "L = 3 labels" in app.caption[0].value


def test_probability_map_with_256_labels_is_used(app):
    logits = np.random.default_rng(0).normal(size=(8, 8, MAX_LABELS)).astype(np.float32)
    upload_prob(app, "exactly256.npy", npy_bytes(logits))
    assert not app.exception and not errors(app), errors(app)
    assert f"L = {MAX_LABELS} labels" in app.caption[0].value


def test_annotation_with_more_than_256_colours_is_refused(app):
    codes = np.arange(1, 301)  # 300 distinct non-black colours, the rest of the image black (unknown)
    ann = np.zeros((SIDE * SIDE, 3), np.uint8)
    ann[:300] = np.stack([(codes >> 16) & 255, (codes >> 8) & 255, codes & 255], 1)
    upload_annotation(app, "rainbow.png", png_bytes(ann.reshape(SIDE, SIDE, 3)))
    assert_refused(app, "rainbow.png", "300 labels", str(MAX_LABELS))


# ------------------------------------------------------------------------------------------- images
def test_svg_image_is_refused(app):
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>'
    upload_image(app, "logo.svg", svg, "image/svg+xml")
    assert_refused(app, "logo.svg")
    assert any("Showing the bundled photo" in i.value for i in app.info)


def test_gif_image_gives_its_first_frame(app):
    first = Image.fromarray(two_colour_image())
    second = Image.fromarray(np.full((48, 64, 3), 255, np.uint8))
    buf = io.BytesIO()
    first.save(buf, format="GIF", save_all=True, append_images=[second])
    upload_image(app, "anim.gif", buf.getvalue(), "image/gif")
    assert not app.exception and not errors(app), errors(app)
    assert "anim.gif: 64×48" in app.caption[0].value


def test_truncated_png_is_refused(app):
    data = png_bytes(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    upload_image(app, "cut.png", data[: len(data) // 2])
    assert_refused(app, "cut.png")


def test_huge_png_is_refused_before_decoding(app):
    buf = io.BytesIO()
    Image.new("1", (12000, 12000)).save(buf, format="PNG")  # one colour: ≈ 20 KB on disk, 144 MP
    assert len(buf.getvalue()) < 100_000
    upload_image(app, "huge.png", buf.getvalue())
    assert_refused(app, "huge.png", "12000")


def test_good_image_after_a_bad_one_is_used(app):
    upload_image(app, "notes.png", b"hello, not a png")
    assert_refused(app, "notes.png")
    app.sidebar.file_uploader(key="image_upload").set_value(("two.png", png_bytes(two_colour_image()), "image/png"))
    app.run()
    assert not app.exception and not errors(app)
    assert "two.png: 64×48" in app.caption[0].value


def test_image_with_an_unlisted_extension_is_decoded_or_refused_by_the_loader(app):
    upload_image(app, "scan.bmp.txt", b"plain text, not an image", "text/plain")
    assert_refused(app, "scan.bmp.txt")


# ------------------------------------------------------------------------------------------- arrays
def corrupt_npz():
    """A compressed .npz whose member's data is damaged after the zip directory (the directory reads fine)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, prob=np.random.default_rng(0).dirichlet(np.ones(3), size=(16, 16)))
    data = bytearray(buf.getvalue())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as z:
        info = z.getinfo("prob.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)  # the member's compressed bytes
    for i in range(start + 10, start + 60):
        data[i] ^= 0xA5
    return bytes(data)


def test_corrupt_npz_is_refused(app):
    upload_prob(app, "broken.npz", corrupt_npz())
    assert_refused(app, "broken.npz")


def test_truncated_npz_is_refused(app):
    buf = io.BytesIO()
    np.savez(buf, prob=np.ones((16, 16, 3)) / 3)
    upload_prob(app, "half.npz", buf.getvalue()[: len(buf.getvalue()) // 2])
    assert_refused(app, "half.npz")


def test_corrupt_npz_as_compatibility_is_refused(app):
    app.sidebar.radio(key="compat_choice").set_value("Upload (L×L .npy)").run()
    app.sidebar.file_uploader(key="compat_upload").set_value(("mu.npz", corrupt_npz(), "application/octet-stream"))
    app.run()
    assert_refused(app, "mu.npz")


def test_png_as_probability_map_is_refused(app):
    upload_prob(app, "photo.png", png_bytes(two_colour_image()))
    assert_refused(app, "photo.png")


def test_corrupt_annotation_is_refused(app):
    upload_annotation(app, "ann.gif", b"GIF89a not really")
    assert_refused(app, "ann.gif")


# ------------------------------------------------------------------------------------------- options
def test_backends_offered_are_those_that_run_here(app):
    import torch

    from lab.lattice.backend import triton_available

    offered = app.sidebar.selectbox(key="backend").options
    assert offered[:2] == ["auto", "torch"]
    if not torch.cuda.is_available() or not triton_available():
        assert "triton" not in offered  # the app computes on the CPU: Triton cannot run its tensors here
    for choice in offered:
        app.sidebar.selectbox(key="backend").set_value(choice).run()
        assert not app.exception and not errors(app), (choice, errors(app))


def test_a_stale_triton_choice_does_not_blank_the_page():
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state["backend"] = "triton"  # e.g. a session state kept from where Triton was offered
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    if "triton" not in at.sidebar.selectbox(key="backend").options:
        assert at.sidebar.selectbox(key="backend").value == "auto"
    assert "Pixels changed vs unary" in {m.label for m in at.metric}


def test_exact_message_passing_at_a_large_size_falls_back_to_the_lattice(app):
    app.sidebar.slider(key="work_size").set_value(256).run()
    app.sidebar.selectbox(key="message_passing").set_value("exact").run()
    assert not app.exception and not errors(app)
    assert any("Exact message passing is O(N²)" in w.value for w in app.warning)
    assert int({m.label: m.value for m in app.metric}["Pixels changed vs unary"]) > 0


def test_a_non_finite_q_is_shown_as_an_error(app, monkeypatch):
    """mean_field raises FloatingPointError rather than return NaN; the page shows it and stays usable."""
    import lab.explore

    def nan_run(*args, **kwargs):
        raise FloatingPointError("mean field: Q became NaN/Inf with w_bilateral=5, w_spatial=3")

    monkeypatch.setattr(lab.explore, "run_crf", nan_run)
    app.sidebar.slider(key="theta_alpha").set_value(70.0).run()
    assert not app.exception, [e.value for e in app.exception]
    assert any("Inference failed" in e and "Q became NaN" in e for e in errors(app)), errors(app)
