"""`crf-lab refine --unary voc`: the bundled VOC network as the unary, its temperature, and when it cannot run."""

import sys

import numpy as np
import pytest
from inputs import cli_main
from PIL import Image

from lab.cli.args import build_parser
from lab.cli.report import class_summary
from lab.data import sample_images
from lab.unary import VOC_CLASS_NAMES, voc_status

AVAILABLE, REASON = voc_status()
needs_mediapipe = pytest.mark.skipif(not AVAILABLE, reason=f"VOC segmenter unavailable here: {REASON}")
FAST = ("--iterations", "2", "--max-side", "120")  # chelsea at 120 × 80: about a second on 2 cores


run = cli_main  # (exit code, stderr) of crf-lab in this process


@pytest.fixture
def chelsea(tmp_path):
    path = tmp_path / "in" / "chelsea.png"
    path.parent.mkdir()
    Image.fromarray(sample_images(["chelsea"])["chelsea"]).save(path)
    return path


@needs_mediapipe
def test_voc_unary_writes_the_outputs(chelsea, tmp_path, capfd):
    out = tmp_path / "out"
    rc, err = run(capfd, "refine", chelsea, "--unary", "voc", "--out", out, "--save-q", "--overlay", *FAST)
    assert rc == 0, err
    labels = np.asarray(Image.open(out / "chelsea_labels.png"))
    q = np.load(out / "chelsea_q.npy")
    assert q.shape == (21, *labels.shape) and labels.shape == (300, 451)  # refined at 120 × 80, written at 451
    assert np.array_equal(labels, q.argmax(0))
    np.testing.assert_allclose(q.sum(0), 1, atol=1e-5)
    assert (labels == VOC_CLASS_NAMES.index("cat")).mean() > 0.6  # 0.77 at full size, before the CRF
    overlay = Image.open(out / "chelsea_overlay.png")
    assert overlay.size[1] == 300 and overlay.size[0] > 451  # the input's size, and the legend beside it
    line = next(s for s in err.splitlines() if "chelsea.png: ok" in s)
    assert "L=21" in line and "VOC unary, T=1; cat " in line and " %, background " in line
    assert "Traceback" not in err and "XNNPACK" not in err  # MediaPipe's load log stays off stderr (fd 2)


@needs_mediapipe
def test_temperature_reaches_the_unary(chelsea, tmp_path, capsys):
    rc, err = run(capsys, "refine", chelsea, "--unary", "voc", "--unary-temperature", "4", "--out", tmp_path, *FAST)
    assert rc == 0 and "VOC unary, T=4; " in err


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "--unary-temperature: expected a finite number > 0, got 0.0"),
        ("-2", "--unary-temperature: expected a finite number > 0, got -2.0"),
        ("nan", "--unary-temperature: expected a finite number > 0, got nan"),
        ("inf", "--unary-temperature: expected a finite number > 0, got inf"),
        ("warm", "argument --unary-temperature: invalid float value: 'warm'"),
    ],
)
def test_bad_temperature_exit_2(chelsea, tmp_path, capsys, value, message):
    rc, err = run(capsys, "refine", chelsea, "--unary", "voc", "--unary-temperature", value, "--out", tmp_path / "o")
    assert rc == 2 and message in err
    assert not (tmp_path / "o").exists()  # refused before anything is written


def test_option_combinations_refused(chelsea, tmp_path, capsys):
    rc, err = run(capsys, "refine", chelsea, "--unary-temperature", "2", "--out", tmp_path / "o")
    assert rc == 2 and "--unary-temperature: applies to --unary voc only" in err
    rc, err = run(capsys, "refine", chelsea, "--unary", "voc", "--prob-dir", tmp_path, "--out", tmp_path / "o")
    assert rc == 2 and "argument --prob-dir: not allowed with argument --unary" in err


def test_unavailable_is_a_usage_error(chelsea, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # `import mediapipe` raises ImportError
    rc, err = run(capsys, "refine", chelsea, "--unary", "voc", "--out", tmp_path / "o")
    assert rc == 2 and "--unary voc: unavailable here: VOC segmenter: mediapipe is not importable" in err


def test_help_names_the_default():
    text = " ".join(build_parser()._subparsers._group_actions[0].choices["refine"].format_help().split())
    assert "unary (default: built-in colour clusters, --unary clusters)" in text
    assert "--unary {clusters,voc}" in text and "clusters (the default)" in text and "21 PASCAL VOC classes" in text
    assert "(default 1.0)" in text


def test_class_summary():
    names = ("background", "cat", "dog", "bird", "cow", "sofa")
    labels = np.array([1] * 770 + [0] * 226 + [2, 3, 4, 5])
    assert class_summary(labels, names) == "cat 77 %, background 23 %, dog <1 %, bird <1 %, +2 more"
    assert class_summary(np.zeros((2, 2), np.int64), names) == "background 100 %"


@needs_mediapipe
def test_a_sharp_voc_unary_gets_the_near_one_hot_warning(chelsea, tmp_path, capsys):
    rc, err = run(capsys, "refine", chelsea, "--unary", "voc", "--unary-temperature", "0.2", "--out", tmp_path, *FAST)
    assert rc == 0, err
    lines = err.splitlines()
    at = next(i for i, s in enumerate(lines) if "chelsea.png: ok" in s)
    assert lines[at + 1].startswith("    unary: log-probabilities, ")
    assert any("near one-hot" in s and "temperature" in s for s in lines[at + 2 :] if s.startswith("    warning: "))


@needs_mediapipe
def test_voc_overlay_legend_names_the_classes_present(chelsea, tmp_path, capsys, drawn):
    texts = drawn
    rc, err = run(capsys, "refine", chelsea, "--unary", "voc", "--out", tmp_path / "o", "--before-after", *FAST)
    assert rc == 0, err
    assert texts[:2] == ["unary (arg-max)", "CRF, T = 2"]
    assert "cat" in texts[2:] and all(t in VOC_CLASS_NAMES for t in texts[2:])
    labels = np.asarray(Image.open(tmp_path / "o" / "chelsea_labels.png"))
    assert {VOC_CLASS_NAMES[i] for i in np.unique(labels)} <= set(texts[2:])  # every class shown is named
