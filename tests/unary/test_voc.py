"""The bundled VOC network as a unary: against MediaPipe's own output, the unary's algebra, bad inputs, failures."""

import hashlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from lab.data import sample_images
from lab.unary import VOC_CLASS_NAMES, VOCSegmenter, VOCUnavailable, voc_status, voc_unary
from lab.unary.voc import VOC_MODEL_PATH, VOC_MODEL_SHA256, embedded_labels

AVAILABLE, REASON = voc_status()
needs_mediapipe = pytest.mark.skipif(not AVAILABLE, reason=f"VOC segmenter unavailable here: {REASON}")

# The share of pixels that the network's argmax gives each class, measured with mediapipe 1.2.3 on 2 cores
# (python -c "from lab.unary import voc_unary; ..."; 2026-12-02):
#   chelsea    (300 × 451)  cat 0.768, background 0.232                      ~70 ms
#   astronaut  (512 × 512)  background 0.535, person 0.462, chair 0.003      ~75 ms
#   coffee     (400 × 600)  background 0.793, dining table 0.129, bottle 0.078
#   grace_hopper (600×512)  person 0.627, background 0.373                   ~100 ms
# The bounds below leave a margin of a few points for other MediaPipe / XNNPACK builds.
EXPECTED = {
    "chelsea": ("cat", 0.70),
    "astronaut": ("person", 0.40),
    "grace_hopper": ("person", 0.55),
}
# float32 log_softmax subtracts one number per pixel: only near-ties (|Δlogit| ~ 1e-6) can change the argmax
ARGMAX_AGREEMENT = 0.9999
LOGSUMEXP_ATOL = 1e-5  # float32 log_softmax over 21 channels: measured max |logsumexp| 4.8e-7


@pytest.fixture(scope="module")
def segmenter():
    if not AVAILABLE:
        pytest.skip(f"VOC segmenter unavailable here: {REASON}")
    with VOCSegmenter() as seg:
        yield seg


def _mediapipe_logits(photo):
    """The confidence masks straight from MediaPipe, without lab code: (21, H, W)."""
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.ImageSegmenterOptions(
        base_options=BaseOptions(model_asset_path=str(VOC_MODEL_PATH)), output_confidence_masks=True
    )
    with vision.ImageSegmenter.create_from_options(options) as seg:
        masks = seg.segment(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(photo)))
        return np.stack([m.numpy_view().reshape(photo.shape[:2]) for m in masks.confidence_masks])


def test_bundled_model_file():
    assert hashlib.sha256(VOC_MODEL_PATH.read_bytes()).hexdigest() == VOC_MODEL_SHA256
    assert embedded_labels() == VOC_CLASS_NAMES and len(VOC_CLASS_NAMES) == 21
    notice = (VOC_MODEL_PATH.parent / "NOTICE").read_text()
    assert VOC_MODEL_SHA256 in notice and "Apache License 2.0" in notice


@needs_mediapipe
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_argmax_is_the_models_own(segmenter, name):
    photo = sample_images([name])[name]
    unary, names = segmenter(photo)
    assert names == VOC_CLASS_NAMES
    assert unary.shape == (1, 21, *photo.shape[:2]) and unary.dtype == torch.float32
    labels = unary[0].argmax(0).numpy()
    raw = _mediapipe_logits(photo).argmax(0)
    assert (labels == raw).mean() >= ARGMAX_AGREEMENT
    cls, at_least = EXPECTED[name]
    share = (labels == VOC_CLASS_NAMES.index(cls)).mean()
    assert share >= at_least, f"{name}: {cls} on {share:.3f} of the pixels"


@needs_mediapipe
def test_log_probabilities_and_temperature(segmenter):
    photo = sample_images(["chelsea"])["chelsea"][::2, ::2]
    logits = segmenter.logits(photo)
    u1, _ = segmenter(photo)
    u2, _ = segmenter(photo, temperature=2.0)
    for u in (u1, u2):
        assert torch.logsumexp(u, 1).abs().max() < LOGSUMEXP_ATOL
    torch.testing.assert_close(u1, torch.log_softmax(logits.double(), 1).float(), atol=1e-4, rtol=0)
    torch.testing.assert_close(u2, torch.log_softmax(logits.double() / 2, 1).float(), atol=1e-4, rtol=0)
    # U_2 is U_1 / 2, renormalised: log_softmax(U_1 / 2) (the constant log Z_1 / 2 cancels)
    torch.testing.assert_close(u2, torch.log_softmax(u1 / 2, 1), atol=1e-4, rtol=0)

    def entropy(u):
        return -(u.exp() * u).sum(1).mean()

    assert entropy(u1) < entropy(u2) < entropy(segmenter(photo, temperature=8.0)[0])
    assert torch.equal(u1.argmax(1), u2.argmax(1))  # T changes confidence, never the ranking


@needs_mediapipe
def test_tensor_input_equals_numpy(segmenter):
    photo = sample_images(["astronaut"])["astronaut"][::4, ::4]
    tensor = torch.from_numpy(photo).permute(2, 0, 1).unsqueeze(0)  # (1, 3, H, W)
    expected, _ = segmenter(photo)
    assert torch.equal(segmenter(tensor)[0], expected)  # uint8
    assert torch.equal(segmenter(tensor.float())[0], expected)  # float 0..255
    assert torch.equal(voc_unary(tensor.double(), temperature=1.0)[0], expected)  # the shared segmenter
    noncontiguous = torch.from_numpy(np.ascontiguousarray(photo[:, ::-1])).flip(1).permute(2, 0, 1)[None]
    assert torch.equal(segmenter(noncontiguous)[0], expected)


BAD_INPUTS = [
    # (image, temperature, exception, message)
    (np.zeros((8, 8), np.uint8), 1.0, ValueError, r"image: expected an \(H, W, 3\) uint8 .* got shape \(8, 8\)"),
    (np.zeros((8, 8, 4), np.uint8), 1.0, ValueError, r"got shape \(8, 8, 4\) \(RGBA\? drop the alpha"),
    (np.zeros((8, 8, 3), np.float32), 1.0, TypeError, "image: expected .* got dtype float32"),
    (np.zeros((0, 8, 3), np.uint8), 1.0, ValueError, r"image: expected at least 1 × 1 pixels, got 0 × 8"),
    (torch.zeros(3, 8, 8), 1.0, ValueError, r"image: expected shape \(1, 3, H, W\), got \(3, 8, 8\)"),
    (torch.zeros(1, 4, 8, 8), 1.0, ValueError, r"image: expected shape \(1, 3, H, W\), got \(1, 4, 8, 8\)"),
    (torch.zeros(1, 3, 0, 8), 1.0, ValueError, "image: expected at least 1 × 1 pixels, got 0 × 8"),
    (torch.full((1, 3, 8, 8), 300.0), 1.0, ValueError, r"image: expected values in 0\.\.255, got 300 \.\. 300"),
    (torch.full((1, 3, 8, 8), float("nan")), 1.0, ValueError, "image: expected finite values"),
    (torch.zeros(1, 3, 8, 8, dtype=torch.bool), 1.0, TypeError, "image: expected .* got a torch.bool tensor"),
    ([[0, 0, 0]], 1.0, TypeError, "image: expected .* got list"),
    (np.zeros((8, 8, 3), np.uint8), 0.0, ValueError, "temperature: expected a finite number > 0, got 0.0"),
    (np.zeros((8, 8, 3), np.uint8), -1, ValueError, "temperature: expected a finite number > 0, got -1"),
    (np.zeros((8, 8, 3), np.uint8), float("inf"), ValueError, "temperature: expected a finite number > 0, got inf"),
    (np.zeros((8, 8, 3), np.uint8), float("nan"), ValueError, "temperature: expected a finite number > 0, got nan"),
    (np.zeros((8, 8, 3), np.uint8), "2", TypeError, "temperature: expected a number, got str"),
]


@pytest.mark.parametrize(("image", "temperature", "exc", "message"), BAD_INPUTS)
def test_bad_inputs(image, temperature, exc, message):
    # checked before the segmenter loads: these errors need no mediapipe
    with pytest.raises(exc, match=message):
        voc_unary(image, temperature)


@needs_mediapipe
@pytest.mark.parametrize(("image", "temperature", "exc", "message"), BAD_INPUTS[:4] + BAD_INPUTS[-4:])
def test_bad_inputs_segmenter(segmenter, image, temperature, exc, message):
    with pytest.raises(exc, match=message):
        segmenter(image, temperature)


@needs_mediapipe
def test_altered_model_refused(tmp_path):
    data = bytearray(VOC_MODEL_PATH.read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "voc.tflite").write_bytes(bytes(data))
    with pytest.raises(VOCUnavailable, match=f"model_path: .* has SHA-256 [0-9a-f]{{64}}, expected {VOC_MODEL_SHA256}"):
        VOCSegmenter(tmp_path / "voc.tflite")
    with pytest.raises(VOCUnavailable, match=r"model_path: cannot read .*absent\.tflite"):
        VOCSegmenter(tmp_path / "absent.tflite")
    good = tmp_path / "copy.tflite"
    good.write_bytes(VOC_MODEL_PATH.read_bytes())
    with VOCSegmenter(good) as seg:
        assert seg(np.zeros((4, 4, 3), np.uint8))[0].shape == (1, 21, 4, 4)


@needs_mediapipe
def test_closed_segmenter():
    seg = VOCSegmenter()
    seg.close()
    seg.close()  # idempotent
    with pytest.raises(RuntimeError, match="VOCSegmenter: closed"):
        seg(np.zeros((4, 4, 3), np.uint8))


def _python(code):
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120, check=False
    )


@needs_mediapipe
def test_left_open_exits_quietly():
    run = _python("""
        import numpy as np
        from lab.unary import VOCSegmenter, voc_unary
        seg = VOCSegmenter()  # never closed
        seg(np.zeros((16, 16, 3), np.uint8))
        voc_unary(np.zeros((16, 16, 3), np.uint8))  # the shared one, never closed either
        print("done")
    """)
    assert run.returncode == 0 and run.stdout == "done\n"
    assert run.stderr == ""  # no "Exception ignored in ... __del__", and MediaPipe's load log kept off stderr


def test_unavailable_without_mediapipe():
    run = _python("""
        import sys
        sys.modules["mediapipe"] = None  # `import mediapipe` raises ImportError
        import numpy as np
        from lab.unary import VOCSegmenter, VOCUnavailable, voc_status, voc_unary
        print(*voc_status())
        for make in (VOCSegmenter, lambda: voc_unary(np.zeros((4, 4, 3), np.uint8))):
            try:
                make()
            except VOCUnavailable as err:
                print(type(err).__mro__[1].__name__, err)
    """)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("False VOC segmenter: mediapipe is not importable (ModuleNotFoundError")
    assert len(lines) == 3 and all(
        line.startswith("Unavailable VOC segmenter: mediapipe is not importable") for line in lines[1:]
    )
    assert "pip install 'crf-rnn-lab[mediapipe]'" in lines[1]


@needs_mediapipe
def test_shared_segmenter_from_threads():
    from concurrent.futures import ThreadPoolExecutor

    photos = [sample_images(["chelsea"])["chelsea"][::3, ::3], sample_images(["astronaut"])["astronaut"][::4, ::4]]
    expected = [voc_unary(p)[0] for p in photos]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: voc_unary(photos[i % 2])[0], range(8)))
    for i, u in enumerate(results):
        assert torch.equal(u, expected[i % 2])
