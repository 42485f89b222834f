import hashlib
import stat
import sys
import zipfile

import numpy as np
import pytest

from lab.unary import mediapipe_source as source
from lab.unary.mediapipe_source import (
    SelfieSegmenter,
    SourceUnavailable,
    extract_selfie_model,
    fetch_selfie_model,
    selfie_status,
)

FAKE_MODEL = b"not really a tflite model"


def _wheel(path, member=source.SELFIE_MEMBER, data=FAKE_MODEL):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, data)
    return path


def test_model_path_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path))
    assert source.selfie_model_path() == tmp_path / "mediapipe" / "selfie_segmentation.tflite"


def test_status_without_model_file(tmp_path):
    ok, reason = selfie_status(tmp_path)
    assert not ok
    assert "selfie_segmentation.tflite is missing" in reason and "fetch_selfie_model.py" in reason


def test_status_without_mediapipe(monkeypatch, tmp_path):
    extract_selfie_model(_wheel(tmp_path / "mp.whl"), tmp_path, sha256=hashlib.sha256(FAKE_MODEL).hexdigest())
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # makes `import mediapipe` raise ImportError
    ok, reason = selfie_status(tmp_path)
    assert not ok and reason.startswith("mediapipe is not importable")


def test_segmenter_unavailable_is_clean(monkeypatch, tmp_path):
    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path))
    with pytest.raises(SourceUnavailable, match=r"is missing; run `python scripts/fetch_selfie_model\.py`"):
        SelfieSegmenter()
    with pytest.raises(SourceUnavailable, match="model_path: no file"):
        SelfieSegmenter(tmp_path / "absent.tflite")


def test_extract_checks_hash_and_writes_atomically(tmp_path):
    wheel = _wheel(tmp_path / "mp.whl")
    digest = hashlib.sha256(FAKE_MODEL).hexdigest()
    path = extract_selfie_model(wheel, tmp_path / "cache", sha256=digest)
    assert path.read_bytes() == FAKE_MODEL
    assert not list(path.parent.glob("*.part"))
    with pytest.raises(SourceUnavailable, match=f"has SHA-256 {digest}, expected {source.SELFIE_SHA256}"):
        extract_selfie_model(wheel, tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_extract_bad_wheels(tmp_path):
    with pytest.raises(SourceUnavailable, match="holds no mediapipe/modules/selfie_segmentation"):
        extract_selfie_model(_wheel(tmp_path / "a.whl", member="mediapipe/other.txt"), tmp_path)
    (tmp_path / "b.whl").write_text("not a zip")
    with pytest.raises(SourceUnavailable, match="wheel: cannot read"):
        extract_selfie_model(tmp_path / "b.whl", tmp_path)


def _fake_python(tmp_path, body: str):
    script = tmp_path / "fake-python"
    script.write_text(f"#!{sys.executable}\nimport sys, zipfile\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_fetch_reports_pip_failure(tmp_path):
    python = _fake_python(tmp_path, "print('ERROR: No matching distribution found', file=sys.stderr); sys.exit(1)")
    with pytest.raises(SourceUnavailable, match=r"pip could not download mediapipe==0\.10\.21: ERROR: No matching"):
        fetch_selfie_model(tmp_path / "cache", python=python)
    assert not source.selfie_model_path(tmp_path / "cache").exists()


def test_fetch_downloads_then_verifies(tmp_path):
    # A stand-in pip that "downloads" a wheel with the wrong file: the hash check must refuse it.
    body = (
        "dest = sys.argv[sys.argv.index('--dest') + 1]\n"
        "assert sys.argv[1:5] == ['-m', 'pip', 'download', '--no-deps'] and '--only-binary=:all:' in sys.argv\n"
        f"zipfile.ZipFile(dest + '/mediapipe-0.10.21-py3-none-any.whl', 'w').writestr({source.SELFIE_MEMBER!r}, 'x')"
    )
    with pytest.raises(SourceUnavailable, match="has SHA-256"):
        fetch_selfie_model(tmp_path / "cache", python=_fake_python(tmp_path, body))


@pytest.mark.skipif(not selfie_status()[0], reason="selfie segmenter unavailable here: " + selfie_status()[1])
def test_real_segmenter_on_grace_hopper():
    from lab.data import sample_images

    photo = sample_images(["grace_hopper"])["grace_hopper"]
    with SelfieSegmenter() as seg:
        prob = seg.person_probability(photo)
        unary = seg.unary(photo)
    assert prob.shape == photo.shape[:2] and prob.dtype == np.float32
    assert prob[:60, :60].mean() < 0.1  # the flag, top left
    assert prob[450:, 180:330].mean() > 0.9  # her uniform, bottom centre
    assert unary.shape == (1, 2, *photo.shape[:2])
    np.testing.assert_allclose(unary.exp().sum(1).numpy(), 1.0, atol=1e-4)
