"""``crf-lab refine`` writes summary.json / summary.csv: what it did per image, with the parameters it used."""

import csv
import json
import signal

import numpy as np
import pytest
from inputs import cli_main, synthetic_photo
from PIL import Image

import lab.cli.batch
from lab.cli.signals import Interrupted
from lab.explore import params_from_json


@pytest.fixture
def batch(tmp_path):
    """Three photos with probability maps (one of them the wrong shape), and a text file named .png."""
    d, probs = tmp_path / "in", tmp_path / "probs"
    d.mkdir()
    probs.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        Image.fromarray(synthetic_photo(30, 40, seed=ord(name))).save(d / f"{name}.png")
        np.save(probs / f"{name}.npy", rng.dirichlet(np.ones(3), size=(30, 40)).astype(np.float32))
    np.save(probs / "c.npy", np.zeros((30, 40), np.float32))  # 2-D: refused
    return d, probs


def _read(out):
    doc = json.loads((out / "summary.json").read_text())
    with open(out / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return doc, rows


def test_summary_of_a_batch(batch, tmp_path, capsys):
    d, probs = batch
    out = tmp_path / "out"
    flags = ["--theta-beta", "20", "--iterations", "3"]
    rc, err = cli_main(capsys, "refine", d, "--prob-dir", probs, "--out", out, *flags)
    assert rc == 1 and f"summary: {out / 'summary.json'}, {out / 'summary.csv'}" in err
    doc, rows = _read(out)
    assert doc["tool"] == "crf-lab refine" and doc["counts"] == {"ok": 2, "failed": 1}
    assert doc["command"] == ["crf-lab", "refine", str(d), "--prob-dir", str(probs), "--out", str(out),
                              "--theta-beta", "20", "--iterations", "3"]  # fmt: skip
    entries = {e["input"]: e for e in doc["images"]}
    for name in ("a", "b"):
        e = entries[str(d / f"{name}.png")]
        assert e["status"] == "ok" and e["size"] == "40x30" and e["labels"] == 3
        assert "values are probabilities" in e["unary"] and e["verdict"].startswith("log-probabilities")
        assert e["outputs"] == [str(out / f"{name}_labels.png")]
        # the share relabelled, against the files: the probability map's argmax and the written label map
        before = np.load(probs / f"{name}.npy").argmax(2)
        after = np.asarray(Image.open(out / f"{name}_labels.png"))
        assert e["changed"] == pytest.approx((before != after).mean(), abs=1e-6)
    failed = entries[str(d / "c.png")]
    assert failed["status"] == "failed" and "expected a 3-D numeric array" in failed["error"]
    # the CSV holds the same entries, in the same order
    assert [r["input"] for r in rows] == [e["input"] for e in doc["images"]]
    assert [r["status"] for r in rows] == [e["status"] for e in doc["images"]]
    # the parameters recorded are the ones used: they read back through --params
    params, extra = params_from_json(json.dumps(doc["parameters"]))
    assert params.theta_beta == 20.0 and extra["iterations"] == 3


def test_resumed_run_keeps_the_earlier_entries(batch, tmp_path, capsys):
    d, probs = batch
    out = tmp_path / "out"
    cli_main(capsys, "refine", d, "--prob-dir", probs, "--out", out, "--iterations", "2")
    first, _ = _read(out)
    rc, _ = cli_main(capsys, "refine", d, "--prob-dir", probs, "--out", out, "--iterations", "2", "--skip-existing")
    assert rc == 1  # the bad map fails again
    doc, _ = _read(out)
    assert doc["counts"] == {"failed": 1, "existing": 2}
    earlier = {e["input"]: e for e in first["images"]}
    for e in doc["images"]:
        if e["status"] == "existing":
            assert e["ms"] == earlier[e["input"]]["ms"] and e["changed"] == earlier[e["input"]]["changed"]


@pytest.mark.parametrize("name", ["summary.json", "summary.csv"])
def test_a_summary_someone_else_wrote_is_never_overwritten(batch, tmp_path, capsys, name):
    d, probs = batch
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_text("my own notes\n")
    rc, err = cli_main(capsys, "refine", d, "--prob-dir", probs, "--out", out)
    assert rc == 2 and f"{out / name} exists and was not written by crf-lab refine" in err
    assert (out / name).read_text() == "my own notes\n"
    assert sorted(p.name for p in out.iterdir()) == [name]  # nothing was refined


def test_interrupted_run_marks_what_was_not_reached(batch, tmp_path, capsys, monkeypatch):
    d, probs = batch
    out = tmp_path / "out"
    real = lab.cli.batch._refine_one
    calls = []

    def stop_at_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise Interrupted(signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(lab.cli.batch, "_refine_one", stop_at_the_second)
    rc, err = cli_main(capsys, "refine", d, "--prob-dir", probs, "--out", out, "--iterations", "1")
    assert rc == 130 and "interrupted by SIGINT" in err
    doc, rows = _read(out)
    assert [e["status"] for e in doc["images"]] == ["ok", "not reached", "not reached"]
    assert len(rows) == 3


def test_bad_usage_writes_no_summary(batch, tmp_path, capsys):
    d, probs = batch
    rc, _ = cli_main(capsys, "refine", d, "--prob-dir", probs, "--out", tmp_path / "out", "--theta-alpha", "-1")
    assert rc == 2 and not (tmp_path / "out").exists()
