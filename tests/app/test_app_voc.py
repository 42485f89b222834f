"""The VOC network as the app's default unary: class names in the legend, the unary check, what the CRF changed."""

import io

import numpy as np
import pytest
import torch

pytest.importorskip("streamlit", reason="the app extra is not installed (pip install -e .[app])")
from apptest import APP, TIMEOUT, open_tab
from PIL import Image
from streamlit.testing.v1 import AppTest

from lab.data import sample_images
from lab.explore import fit_image
from lab.explore.voc_view import class_names_for, flip_view, present_classes, report_sample, truth_from_image
from lab.unary import voc_status, voc_unary
from lab.viz.palette import PALETTE, VOC_PALETTE

VOC_SOURCE = "PASCAL VOC network (21 classes)"
CLUSTERS_SOURCE = "Colour clusters (built-in)"

VOC_OK, VOC_REASON = voc_status()
needs_voc = pytest.mark.skipif(not VOC_OK, reason=f"the VOC network cannot run here: {VOC_REASON}")


def png_bytes(arr):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def legend(at):
    return next(m.value for m in at.markdown if m.value.startswith("Classes shown:"))


@pytest.fixture
def chelsea():
    """The app on the bundled cat photo at 128 px, VOC unary by default."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    at.sidebar.slider(key="work_size").set_value(128).run()
    at.sidebar.selectbox(key="photo").set_value("chelsea").run()
    assert not at.exception, at.exception
    return at


# --------------------------------------------------------------------------------- the app, VOC available
@needs_voc
def test_voc_is_the_default_source_and_the_legend_names_the_cat(chelsea):
    assert chelsea.sidebar.radio(key="unary_source").value == VOC_SOURCE
    assert "L = 21 labels" in chelsea.caption[0].value and "VOC network" in chelsea.caption[0].value
    shown = legend(chelsea)
    assert "cat" in shown and "background" in shown
    assert "aeroplane" not in shown and "sofa" not in shown  # only the classes present are listed
    picker = chelsea.selectbox(key="class_view")
    assert picker.value == 8 and "8: cat" in picker.options and len(picker.options) < 21
    assert not chelsea.error and not chelsea.warning


@needs_voc
def test_the_change_table_and_the_flip_map_appear(chelsea):
    open_tab(chelsea, "What changed")
    assert any("What the CRF changed" in s.value for s in chelsea.subheader)
    table = chelsea.dataframe[0].value
    assert {"class", "before", "after", "gained", "lost"} <= set(table.columns)
    assert "cat" in set(table["class"])
    h, w = 85, 128  # chelsea (300 × 451) at a 128 px working size
    assert table["before"].sum() == table["after"].sum() == h * w
    assert (table["after"] - table["before"] == table["gained"] - table["lost"]).all()
    assert any(m.value.startswith("The CRF changed") for m in chelsea.markdown)
    assert any("Every pixel the CRF relabelled" in c for img in chelsea.get("image") for c in img.captions)


@needs_voc
def test_temperature_changes_the_unary_and_the_check_flags_a_near_one_hot_one(chelsea):
    open_tab(chelsea, "What changed")
    before = chelsea.dataframe[0].value
    open_tab(chelsea, "Unary check")
    assert any(s.value == "Unary check: looks fine" for s in chelsea.subheader)
    assert not any(w.value.startswith("The unary check found") for w in chelsea.warning)
    chelsea.sidebar.slider(key="voc_temperature").set_value(0.1).run()  # 10× sharper: near one-hot almost everywhere
    assert not chelsea.exception
    assert "T = 0.1" in chelsea.caption[0].value
    assert any(s.value.startswith("Unary check:") and "problem(s) found" in s.value for s in chelsea.subheader)
    assert any("near one-hot" in m.value and "temperature" in m.value for m in chelsea.markdown)
    open_tab(chelsea, "Up close")  # its tab closed, the problem is still said above the tabs
    assert any(w.value.startswith("The unary check found") and "near one-hot" in w.value for w in chelsea.warning)
    chelsea.sidebar.slider(key="voc_temperature").set_value(4.0).run()
    open_tab(chelsea, "What changed")
    assert not chelsea.exception and not chelsea.error
    assert not chelsea.dataframe[0].value.equals(before)  # a softer unary: the CRF moves other pixels


@needs_voc
def test_a_ground_truth_adds_iou_and_a_bad_one_is_refused(chelsea):
    photo = fit_image(sample_images(["chelsea"])["chelsea"], 128)  # the app's working image
    truth = voc_unary(photo)[0].argmax(1)[0].numpy()  # (85, 128): the unary's own argmax as the "truth"
    truth[:4] = 255  # a void band, as VOC draws object outlines
    open_tab(chelsea, "What changed")
    chelsea.file_uploader(key="truth_upload").set_value(("gt.png", png_bytes(VOC_PALETTE[truth]), "image/png")).run()
    assert not chelsea.exception and not chelsea.error, [e.value for e in chelsea.error]
    shown = {m.label: m for m in chelsea.metric}
    assert "vs the unary's 1.000" in shown["mIoU after the CRF"].delta  # the unary matches its own argmax
    assert "vs the unary's 1.000" in shown["Pixel accuracy after the CRF"].delta
    table = chelsea.dataframe[0].value
    assert {"truth", "iou_before", "iou_after"} <= set(table.columns)
    assert (table["iou_before"] == 1.0).all()

    ids = np.full((85, 128, 3), 30, np.uint8)  # grey 30: class id 30, beyond VOC's 21
    chelsea.file_uploader(key="truth_upload").set_value(("ids.png", png_bytes(ids), "image/png")).run()
    assert not chelsea.exception
    assert any("ids.png" in e.value and "L = 21" in e.value for e in chelsea.error)
    assert "mIoU after the CRF" not in {m.label for m in chelsea.metric}
    small = np.zeros((10, 10, 3), np.uint8)
    chelsea.file_uploader(key="truth_upload").set_value(("small.png", png_bytes(small), "image/png")).run()
    assert not chelsea.exception
    assert any("small.png" in e.value and "differs" in e.value for e in chelsea.error)
    assert "Pixels changed vs unary" in {m.label for m in chelsea.metric}


@needs_voc
def test_other_sources_stay_and_name_their_classes(chelsea):
    chelsea.sidebar.radio(key="unary_source").set_value(CLUSTERS_SOURCE).run()
    assert not chelsea.exception and "L = 4 labels" in chelsea.caption[0].value
    assert "cat" not in legend(chelsea)
    chelsea.sidebar.radio(key="unary_source").set_value(VOC_SOURCE).run()
    assert not chelsea.exception and "cat" in legend(chelsea)


# --------------------------------------------------------------------------------- the app, VOC unavailable
def test_without_the_voc_network_the_app_falls_back_and_says_why(monkeypatch):
    import lab.unary

    reason = "VOC segmenter: mediapipe is not importable (test double)"
    monkeypatch.setattr(lab.unary, "voc_status", lambda: (False, reason))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    assert at.sidebar.radio(key="unary_source").value == CLUSTERS_SOURCE
    assert any(reason in i.value for i in at.sidebar.info)
    assert "L = 4 labels" in at.caption[0].value
    at.sidebar.slider(key="work_size").set_value(64).run()
    at.sidebar.radio(key="unary_source").set_value(VOC_SOURCE).run()  # picked anyway: a warning, still results
    assert not at.exception and not at.error
    assert any("unavailable here" in w.value and reason in w.value for w in at.warning)
    assert "Pixels changed vs unary" in {m.label for m in at.metric}


# --------------------------------------------------------------------------------- lab.explore.voc_view
def test_flip_view_colours_flips_by_their_new_class_and_dims_the_rest():
    image = np.full((4, 5, 3), 155, np.uint8)
    before = np.zeros((4, 5), np.int64)
    after = before.copy()
    after[1, 2], after[3, 4] = 8, 15  # background → cat, background → person
    out = flip_view(image, before, after, 21)
    assert out.shape == (4, 5, 3) and out.dtype == np.uint8
    assert (out[1, 2] == PALETTE[8]).all() and (out[3, 4] == PALETTE[15]).all()
    assert (out[0, 0] == 225).all()  # unchanged: faded to white, 0.3 of its contrast (255 − 0.3 · 100)
    with pytest.raises(ValueError, match="before"):
        flip_view(image, before[:3], after[:3], 21)


def test_truth_from_image_reads_palette_colours_or_grey_ids_and_refuses_others():
    ids = np.array([[0, 8, 15], [255, 8, 0]])
    assert (truth_from_image(VOC_PALETTE[ids], 21) == ids).all()  # a VOC SegmentationClass PNG's colours
    assert (truth_from_image(PALETTE[ids], 21) == ids).all()  # a label PNG the lab wrote
    grey = np.repeat(np.array([[3, 20]], np.uint8)[..., None], 3, axis=2)  # an "L" PNG of class ids
    assert truth_from_image(grey, 21).tolist() == [[3, 20]]
    with pytest.raises(ValueError, match=r"gt\.png: colours"):
        truth_from_image(np.array([[[1, 2, 3]]], np.uint8), 21, name="gt.png")
    with pytest.raises(ValueError, match="L = 2"):
        truth_from_image(PALETTE[ids], 2)


def test_present_classes_and_names():
    assert present_classes(torch.tensor([[0, 8]]), np.array([[15]])) == [0, 8, 15]
    rng = np.random.default_rng(0)
    maps = [rng.choice([2, 5, 19], (40, 30)).astype(dt) for dt in (np.int64, np.uint8, np.int32)]
    assert present_classes(*maps) == [2, 5, 19] == sorted(set(np.unique(np.concatenate([m.ravel() for m in maps]))))
    assert present_classes(np.array([[-1, 3]]), np.array([[3.0, 70000.0]])) == [-1, 3, 70000]  # no bincount there
    assert present_classes(np.zeros((0, 4), np.int64)) == []
    assert class_names_for(21, None)[8] == "8"


def test_report_sample_keeps_small_unaries_and_strides_large_ones():
    small = torch.zeros(1, 21, 128, 128)
    assert report_sample(small)[0] is small and report_sample(small)[1] == 1
    sample, s = report_sample(torch.zeros(1, 21, 1024, 683))
    assert s == 4 and tuple(sample.shape) == (1, 21, 256, 171)  # ⌈√(1024·683 / 256²)⌉ = 4
