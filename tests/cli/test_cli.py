"""`python -m lab refine` on folders with good and corrupted files, as a user runs it."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from inputs import synthetic_photo
from PIL import Image

from lab.cli import main


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(synthetic_photo(40, 50)).save(d / "good1.png")
    Image.fromarray(synthetic_photo(40, 50, seed=1)).save(d / "good2.jpg")
    (d / "notes.png").write_text("this is text, not a PNG")
    data = (d / "good1.png").read_bytes()
    (d / "truncated.png").write_bytes(data[: len(data) // 2])
    (d / "readme.txt").write_text("ignored: not an image suffix")
    return d


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "lab", *map(str, args)], capture_output=True, text=True, timeout=300)


def test_folder_with_bad_files(folder, tmp_path):
    out = tmp_path / "out"
    res = run_cli("refine", folder, "--out", out, "--save-q", "--overlay", "--iterations", "3")
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    assert "notes.png: FAILED" in res.stderr and "truncated.png: FAILED" in res.stderr
    assert "2 of 4 images refined" in res.stderr
    for stem in ("good1", "good2"):
        labels = np.asarray(Image.open(out / f"{stem}_labels.png"))
        q = np.load(out / f"{stem}_q.npy")
        assert labels.shape == (40, 50) and q.shape == (4, 40, 50)
        np.testing.assert_allclose(q.sum(0), 1, atol=1e-5)
        assert np.array_equal(labels, q.argmax(0))
        assert (out / f"{stem}_overlay.png").exists()
    assert not (out / "notes_labels.png").exists()


def test_probability_maps_and_a_wrong_one(tmp_path):
    d = tmp_path / "in"
    probs = tmp_path / "probs"
    d.mkdir()
    probs.mkdir()
    for name in ("a", "b", "c"):
        Image.fromarray(synthetic_photo(40, 50)).save(d / f"{name}.png")
    rng = np.random.default_rng(0)
    np.save(probs / "a.npy", rng.dirichlet(np.ones(3), size=(40, 50)))  # (H, W, L) probabilities
    np.save(probs / "b.npy", rng.normal(size=(3, 20, 25)))  # half-size logits: resized
    np.save(probs / "c.npy", rng.normal(size=(40, 50)))  # wrong rank
    res = run_cli("refine", d, "--prob-dir", probs, "--out", tmp_path / "out", "--iterations", "2")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "c.png: FAILED" in res.stderr and "3-D" in res.stderr
    assert (tmp_path / "out" / "a_labels.png").exists() and (tmp_path / "out" / "b_labels.png").exists()


def test_params_json_from_the_app_and_flag_override(folder, tmp_path):
    from lab.crf import CRFParams
    from lab.explore import params_to_json

    pj = tmp_path / "p.json"
    pj.write_text(params_to_json(CRFParams(w_bilateral=0.0, w_spatial=0.0), iterations=4))
    out = tmp_path / "out"
    # zero weights: the result is the unary's argmax, i.e. the blocky clusters
    assert main(["refine", str(folder / "good1.png"), "--params", str(pj), "--out", str(out), "--save-q"]) == 0
    from lab.unary import coarse_colour_clusters

    _, blocky = coarse_colour_clusters(synthetic_photo(40, 50), n_labels=4, block=16, confidence=0.6)
    assert np.array_equal(np.load(out / "good1_q.npy").argmax(0), blocky)
    assert json.loads(pj.read_text())["iterations"] == 4


def test_never_overwrites_an_input(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(synthetic_photo(40, 50)).save(d / "x.png")
    Image.fromarray(synthetic_photo(40, 50)).save(d / "x_labels.png")  # what refine would write for x.png
    before = (d / "x_labels.png").read_bytes()
    res = run_cli("refine", d / "x.png", d / "x_labels.png", "--out", d, "--iterations", "1")
    # found while planning, before any image is refined: a usage error
    assert res.returncode == 2 and "would overwrite the input" in res.stderr and "x_labels.png" in res.stderr
    assert (d / "x_labels.png").read_bytes() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["refine", "/nonexistent/dir", "--out", "o"], "inputs"),
        (["refine", "IN", "--out", "o", "--theta-alpha", "-3"], "--theta-alpha"),
        (["refine", "IN", "--out", "o", "--iterations", "-1"], "--iterations"),
        (["refine", "IN", "--out", "o", "--params", "/nonexistent.json"], "--params"),
        (["refine", "IN", "--out", "o", "--normalize", "l2"], "--normalize"),
    ],
)
def test_usage_errors_exit_2_without_traceback(folder, args, message):
    res = run_cli(*[str(folder) if a == "IN" else a for a in args])
    assert res.returncode == 2
    assert message in res.stderr and "Traceback" not in res.stderr


def test_help_documents_the_options():
    res = run_cli("refine", "--help")
    assert res.returncode == 0
    for flag in (
        "--prob-dir",
        "--annotation-dir",
        "--params",
        "--save-q",
        "--overlay",
        "--theta-alpha",
        "--skip-existing",
        "--max-pixels",
    ):
        assert flag in res.stdout


def test_console_script_runs():
    script = Path(sys.executable).parent / "crf-lab"
    if not script.exists():
        pytest.skip("crf-lab is not installed in this environment (pip install -e . installs it)")
    res = subprocess.run([str(script), "refine", "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "--prob-dir" in res.stdout
