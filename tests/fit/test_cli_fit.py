"""crf-lab fit: the round trip into crf-lab refine --params, and the refusals (exit 2, a message, nothing written)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from inputs import cli_main
from PIL import Image

from lab.data.synthetic import render_scene
from lab.explore import label_png


def _write_set(root, sizes=(24, 28, 32), rgb_labels=False):
    images, labels, probs = root / "img", root / "lab", root / "prob"
    for d in (images, labels, probs):
        d.mkdir(exist_ok=True)
    for i, size in enumerate(sizes):
        s = render_scene(i, size)
        Image.fromarray(s.image).save(images / f"s{i}.png")
        if rgb_labels:
            Image.fromarray(np.stack([s.label * 40] * 3, -1)).save(labels / f"s{i}.png")
        else:
            (labels / f"s{i}.png").write_bytes(label_png(s.label))  # paletted, VOC style
        rng = np.random.default_rng(i)
        p = np.exp(2.0 * np.eye(6)[s.label] + rng.normal(0, 1.5, (*s.label.shape, 6)))
        np.save(probs / f"s{i}.npy", (p / p.sum(-1, keepdims=True)).astype(np.float32))
    return images, labels, probs


def _fit_args(images, labels, probs, out, *extra):
    return ("fit", "--images", images, "--labels", labels, "--prob-dir", probs, "--out", out, *extra)


def test_fit_then_refine_reads_the_json(tmp_path, capsys):
    images, labels, probs = _write_set(tmp_path)
    out = tmp_path / "params.json"
    rc, err = cli_main(capsys, *_fit_args(images, labels, probs, out, "--steps", "3", "--val-fraction", "0.34",
                                          "--learn", "weights,compat"))  # fmt: skip
    assert rc == 0, err
    assert "1 validation images" in err and "mIoU on the validation images" in err and "wrote" in err
    doc = json.loads(out.read_text())
    assert doc["iterations"] == 5 and doc["fit"]["learned"] == ["weights", "compat"]
    assert len(doc["compat"]) == 6 and doc["theta_alpha"] == 80.0
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left
    rc, err = cli_main(capsys, "refine", images, "--prob-dir", probs, "--params", out, "--out", tmp_path / "out")
    assert rc == 0, err
    assert len(list((tmp_path / "out").glob("*_labels.png"))) == 3
    # --force replaces; --params starts from the fitted file
    rc, err = cli_main(capsys, *_fit_args(images, labels, probs, tmp_path / "again.json", "--steps", "1",
                                          "--learn", "weights", "--params", out))  # fmt: skip
    assert rc == 0, err
    assert json.loads((tmp_path / "again.json").read_text())["compat"] == doc["compat"]


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing label", "images without a label map NAME.png"),
        ("extra label", "label maps without an image"),
        ("label size", "is 30 × 30 pixels but its image"),
        ("prob size", "the probability map must have the image's size"),
        ("label value", "holds the values 9; expected class ids 0..5"),
        ("rgb labels", "is a RGB colour image; expected a label map"),
        ("missing prob", "--prob-dir: no probability map"),
        ("existing out", "exists; choose another name, or --force"),
        ("bad learn", "--learn: expected a comma-separated subset"),
        ("no unary", "one of the arguments --prob-dir --unary is required"),
    ],
)
def test_refusals_exit_2_and_write_nothing(tmp_path, capsys, case, message):
    images, labels, probs = _write_set(tmp_path, rgb_labels=case == "rgb labels")
    out = tmp_path / "params.json"
    extra = []
    if case == "missing label":
        (labels / "s1.png").unlink()
    elif case == "extra label":
        (labels / "zz.png").write_bytes((labels / "s0.png").read_bytes())
    elif case == "label size":
        (labels / "s1.png").write_bytes(label_png(np.zeros((30, 30), np.uint8)))
    elif case == "prob size":
        np.save(probs / "s2.npy", np.full((20, 20, 6), 1 / 6, np.float32))
    elif case == "label value":
        lab = np.asarray(Image.open(labels / "s0.png")).copy()
        lab[0, 0] = 9
        (labels / "s0.png").write_bytes(label_png(lab))
    elif case == "missing prob":
        (probs / "s0.npy").unlink()
    elif case == "existing out":
        out.write_text("mine")
    elif case == "bad learn":
        extra = ["--learn", "weights,theta"]
    argv = _fit_args(images, labels, probs, out, "--steps", "1", *extra)
    if case == "no unary":
        argv = ("fit", "--images", images, "--labels", labels, "--out", out)
    before = sorted(p.name for p in tmp_path.iterdir())
    rc, err = cli_main(capsys, *argv)
    assert rc == 2 and message in err, err
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    if case == "existing out":
        assert out.read_text() == "mine"


def test_an_interrupt_leaves_nothing(tmp_path, capsys, monkeypatch):
    import lab.fit.fitting as fitting
    from lab.cli.signals import Interrupted

    images, labels, probs = _write_set(tmp_path, sizes=(24, 24))

    def stop(*a, **k):
        raise Interrupted(2)  # SIGINT, as the handler raises it

    monkeypatch.setattr(fitting, "_fit", stop)
    out = tmp_path / "params.json"
    rc, err = cli_main(capsys, *_fit_args(images, labels, probs, out))
    assert rc == 130 and "nothing was written" in err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
