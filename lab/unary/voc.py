"""A real 21-class semantic unary: DeepLabV3 (MobileNetV2) trained on PASCAL VOC 2012, bundled with the lab.

The network is the TensorFlow Lite segmentation example model (``lite-model_deeplabv3_1_metadata_2.tflite``,
TensorFlow Hub, Apache License 2.0 as its embedded metadata states; see ``lab/unary/models/NOTICE``), shipped
as package data (2.8 MB) and checked against :data:`VOC_MODEL_SHA256` at load: nothing is downloaded, ever.
MediaPipe Tasks' ``ImageSegmenter`` runs it (the ``mediapipe`` extra): it resizes the photo to 257 × 257,
normalises it as the metadata says and returns 21 confidence masks at the photo's resolution. Those masks are
raw logits (about −5 … 45 on the bundled photos), not probabilities, so the unary is

    U = log_softmax(logits / T)    (1, 21, H, W), the ``lab.crf`` convention: U = log p

with a temperature T > 0. The network is over-confident (a near-one-hot unary leaves the CRF nothing to do
but erode edges); T > 1 softens it, T = 1 is the network's own softmax. Labels are the 21 VOC classes in
:data:`VOC_CLASS_NAMES` (the model's embedded ``labelmap.txt``). Measured on 2 cores: about 70 ms per
300 × 451 photo, 0.8 s for the first import of mediapipe.

:class:`VOCSegmenter` holds one native segmenter for repeated calls; :func:`voc_unary` shares one per
process. Where mediapipe cannot be imported, both raise :class:`VOCUnavailable` with the reason, and
:func:`voc_status` says so without raising; nothing else in the lab needs mediapipe.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import tempfile
import threading
import weakref
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from lab._checks import check_finite, check_positive, check_shape, data_checks_enabled
from lab.errors import Unavailable

__all__ = [
    "VOC_CLASS_NAMES",
    "VOC_MODEL_PATH",
    "VOC_MODEL_SHA256",
    "VOCSegmenter",
    "VOCUnavailable",
    "embedded_labels",
    "voc_status",
    "voc_unary",
]

# the model's embedded labelmap.txt, in its order (tests/unary/test_voc.py reads the file and compares)
VOC_CLASS_NAMES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "dining table", "dog", "horse", "motorbike", "person", "potted plant", "sheep", "sofa", "train", "tv",
)  # fmt: skip
VOC_MODEL_PATH = Path(__file__).parent / "models" / "deeplabv3_mobilenetv2_voc21.tflite"
# sha256sum of the file as vendored from ../shared/models (2,780,051 bytes; 2026-12-02)
VOC_MODEL_SHA256 = "9711334db2b01d5894feb8ed0f5cb3e97d125b8d229f8d8692f625801818f5ef"


class VOCUnavailable(Unavailable):
    """The VOC segmenter cannot run here (mediapipe missing, model file missing or altered); the message says why."""


def embedded_labels(model_path: str | os.PathLike = VOC_MODEL_PATH) -> tuple[str, ...]:
    """The class names in the model's TFLite metadata (``labelmap.txt``, a zip appended to the file).

    Args:
        model_path: the ``.tflite`` file.

    Returns:
        The names, one per output channel, in order.

    Example:
        >>> embedded_labels() == VOC_CLASS_NAMES
        True
    """
    with zipfile.ZipFile(model_path) as zf:
        return tuple(line.strip() for line in zf.read("labelmap.txt").decode().splitlines() if line.strip())


def _import_vision():
    try:
        import mediapipe
        from mediapipe.tasks.python import BaseOptions, vision
    except Exception as err:  # ImportError, or a broken native library
        raise VOCUnavailable(
            f"VOC segmenter: mediapipe is not importable ({type(err).__name__}: {err}); "
            "install it with `pip install 'crf-rnn-lab[mediapipe]'`"
        ) from err
    return mediapipe, BaseOptions, vision


def _checked_model(model_path: str | os.PathLike | None) -> Path:
    path = Path(model_path) if model_path is not None else VOC_MODEL_PATH
    name = "model_path" if model_path is not None else "bundled model"
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as err:
        raise VOCUnavailable(f"{name}: cannot read {os.fspath(path)!r} ({err.strerror or err})") from err
    if digest != VOC_MODEL_SHA256:
        raise VOCUnavailable(
            f"{name}: {os.fspath(path)!r} has SHA-256 {digest}, expected {VOC_MODEL_SHA256} "
            "(an altered or different file; reinstall crf-rnn-lab)"
        )
    return path


def voc_status() -> tuple[bool, str]:
    """Whether the VOC segmenter can run here, and why not.

    Returns:
        (available, reason): reason is ``"ok"`` or a sentence saying what is missing and how to get it.

    Example:
        >>> ok, reason = voc_status()
        >>> ok or reason.startswith(("VOC segmenter:", "bundled model:"))
        True
    """
    try:
        _import_vision()
        _checked_model(None)
    except VOCUnavailable as err:
        return False, str(err)
    return True, "ok"


@contextlib.contextmanager
def _native_stderr_captured(log: list[str]) -> Iterator[None]:
    """Send file descriptor 2 to a temporary file for the block; what was written there goes into ``log``.

    MediaPipe's C++ logging (glog: "Created TensorFlow Lite XNNPACK delegate", ...) writes there while the
    graph is built; the lab's CLI prints its own lines to stderr. For the ~60 ms of the build only.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real stderr (an embedded interpreter): nothing to capture
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            log.append(tmp.read().decode(errors="replace"))


# Close every live segmenter while Python's thread pools still run: MediaPipe's close() goes through a
# ThreadPoolExecutor, which the interpreter shuts down (threading._shutdown) *before* atexit handlers, so a
# segmenter left open would raise "cannot schedule new futures after shutdown" from __del__ at exit.
_LIVE: weakref.WeakSet[VOCSegmenter] = weakref.WeakSet()
_EXIT_HOOK = threading.Lock()
_exit_hook_installed = False


def _close_all() -> None:
    for seg in list(_LIVE):
        seg.close()


def _install_exit_hook() -> None:
    global _exit_hook_installed
    with _EXIT_HOOK:
        if _exit_hook_installed:
            return
        register = getattr(threading, "_register_atexit", None)  # runs before the thread pools stop (LIFO)
        try:
            if register is None:
                raise RuntimeError("no threading._register_atexit")
            register(_close_all)
        except RuntimeError:
            import atexit

            atexit.register(_close_all)
        _exit_hook_installed = True


def _as_image(image: object) -> np.ndarray:
    """``image`` as a C-contiguous (H, W, 3) uint8 array; an error naming ``image`` otherwise."""
    want = "an (H, W, 3) uint8 RGB numpy array or a (1, 3, H, W) tensor in 0..255"
    if isinstance(image, torch.Tensor):
        check_shape(image, "image", [1, 3, "H", "W"])
        if image.dtype != torch.uint8:
            if not (image.is_floating_point() or image.dtype in (torch.int16, torch.int32, torch.int64)):
                raise TypeError(f"image: expected {want}, got a {image.dtype} tensor")
            check_finite(image, "image")
            if data_checks_enabled() and image.numel() and not bool(((image >= 0) & (image <= 255)).all()):
                lo, hi = float(image.min()), float(image.max())
                raise ValueError(f"image: expected values in 0..255, got {lo:g} .. {hi:g}")
            image = image.detach().round().clamp(0, 255).to(torch.uint8)
        array = image.detach().cpu()[0].permute(1, 2, 0).numpy()  # (H, W, 3)
    elif isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            extra = " (RGBA? drop the alpha channel: image[..., :3])" if image.ndim == 3 and image.shape[2] == 4 else ""
            raise ValueError(f"image: expected {want}, got shape {image.shape}{extra}")
        if image.dtype != np.uint8:
            raise TypeError(f"image: expected {want}, got dtype {image.dtype}")
        array = image
    else:
        raise TypeError(f"image: expected {want}, got {type(image).__name__}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"image: expected at least 1 × 1 pixels, got {array.shape[0]} × {array.shape[1]}")
    return np.ascontiguousarray(array)


class VOCSegmenter:
    """The bundled VOC network, loaded once: logits and unaries for photos.

    Close it (or use it as a context manager) to release the native graph; one left open is closed at
    interpreter exit, quietly. Calls from several threads are serialised (a lock per segmenter).

    Args:
        model_path: the ``.tflite`` file; default the bundled one. Either way its SHA-256 must be
            :data:`VOC_MODEL_SHA256`.

    Raises:
        VOCUnavailable: mediapipe is not importable, or the model file is missing or altered.

    Example:
        >>> from lab.data import sample_images
        >>> photo = sample_images(["chelsea"])["chelsea"]
        >>> import pytest; _ = pytest.importorskip("mediapipe")  # the `mediapipe` extra
        >>> with VOCSegmenter() as seg:
        ...     unary, names = seg(photo[:64, 100:164])
        >>> unary.shape, names[8]
        (torch.Size([1, 21, 64, 64]), 'cat')
    """

    def __init__(self, model_path: str | os.PathLike | None = None):
        self._segmenter = None
        self._lock = threading.Lock()
        self._mp, base_options, vision = _import_vision()
        path = _checked_model(model_path)
        options = vision.ImageSegmenterOptions(
            base_options=base_options(model_asset_path=str(path)),
            running_mode=vision.RunningMode.IMAGE,
            output_confidence_masks=True,
            output_category_mask=False,
        )
        log: list[str] = []
        try:
            with _native_stderr_captured(log):
                segmenter = vision.ImageSegmenter.create_from_options(options)
        except Exception as err:
            native = " ".join("".join(log).split())[-500:]
            raise VOCUnavailable(
                f"VOC segmenter: MediaPipe could not load {path.name} ({type(err).__name__}: {err})"
                + (f"; its log: {native}" if native else "")
            ) from err
        self.load_log = "".join(log)  # what MediaPipe's C++ side printed while loading
        self._segmenter = segmenter
        _install_exit_hook()
        _LIVE.add(self)

    @property
    def class_names(self) -> tuple[str, ...]:
        """The 21 labels, one per unary channel (:data:`VOC_CLASS_NAMES`)."""
        return VOC_CLASS_NAMES

    def logits(self, image: np.ndarray | torch.Tensor) -> torch.Tensor:
        """The network's raw scores (MediaPipe's confidence masks) at the image's resolution.

        Args:
            image: (H, W, 3) uint8 RGB numpy array, or a (1, 3, H, W) tensor with values in 0..255.

        Returns:
            (1, 21, H, W) float32 logits (not normalised).
        """
        array = _as_image(image)
        h, w = array.shape[:2]
        frame = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=array)
        with self._lock:
            if self._segmenter is None:
                raise RuntimeError("VOCSegmenter: closed; create a new one")
            masks = self._segmenter.segment(frame).confidence_masks
            out = np.empty((len(masks), h, w), np.float32)  # (L, H, W)
            for i, mask in enumerate(masks):
                out[i] = mask.numpy_view().reshape(h, w)
        return torch.from_numpy(out).unsqueeze(0)

    def __call__(
        self, image: np.ndarray | torch.Tensor, temperature: float = 1.0
    ) -> tuple[torch.Tensor, tuple[str, ...]]:
        """U = log_softmax(logits / temperature) for the image, and the class names.

        Args:
            image: (H, W, 3) uint8 RGB numpy array, or a (1, 3, H, W) tensor with values in 0..255.
            temperature: T > 0, finite; T > 1 softens the network's over-confident scores.

        Returns:
            (unary, class_names): unary (1, 21, H, W) float32 log-probabilities (logsumexp over dim 1 is 0);
            class_names the 21 names, index = channel.
        """
        check_positive(temperature, "temperature")
        unary = torch.log_softmax(self.logits(image) / float(temperature), dim=1)
        return unary, VOC_CLASS_NAMES

    def close(self) -> None:
        """Release the native segmenter (idempotent)."""
        with self._lock:
            segmenter, self._segmenter = self._segmenter, None
        _LIVE.discard(self)
        if segmenter is not None:
            segmenter.close()

    def __enter__(self) -> VOCSegmenter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter exit the hook has closed it already
            self.close()


_SHARED: VOCSegmenter | None = None
_SHARED_LOCK = threading.Lock()


def _shared() -> VOCSegmenter:
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None or _SHARED._segmenter is None:
            _SHARED = VOCSegmenter()
        return _SHARED


def voc_unary(image: np.ndarray | torch.Tensor, temperature: float = 1.0) -> tuple[torch.Tensor, tuple[str, ...]]:
    """The VOC network's unary for one photo, with one segmenter shared by the process (created on first use).

    Args:
        image: (H, W, 3) uint8 RGB numpy array, or a (1, 3, H, W) tensor with values in 0..255.
        temperature: T > 0, finite: U = log_softmax(logits / T). T = 1 is the network's softmax; larger T
            gives the CRF more to work with.

    Returns:
        (unary, class_names): unary (1, 21, H, W) float32 log-probabilities at the image's resolution;
        class_names :data:`VOC_CLASS_NAMES`, index = channel.

    Raises:
        TypeError, ValueError: a bad ``image`` or ``temperature`` (the message names it).
        VOCUnavailable: mediapipe cannot be imported here (the message says why).

    Example:
        >>> import pytest; _ = pytest.importorskip("mediapipe")  # the `mediapipe` extra
        >>> from lab.data import sample_images
        >>> photo = sample_images(["chelsea"])["chelsea"][::4, ::4]  # a cat, 75 × 113 pixels
        >>> unary, names = voc_unary(photo, temperature=2.0)
        >>> unary.shape
        torch.Size([1, 21, 75, 113])
        >>> counts = torch.bincount(unary.argmax(1).flatten(), minlength=21)
        >>> [(names[i], round(float(counts[i] / counts.sum()), 2)) for i in counts.nonzero().flatten()]
        [('background', 0.24), ('cat', 0.76)]
    """
    check_positive(temperature, "temperature")
    array = _as_image(image)  # the argument errors before the (slow) first load
    return _shared()(array, temperature)
