"""MediaPipe's selfie segmenter (person vs background, Apache-2.0) as a CRF unary for real photos.

The model file ``selfie_segmentation.tflite`` (249 505 bytes) ships inside the mediapipe 0.10.21 wheel, the last
release that bundles it. At set-up time :func:`fetch_selfie_model` (or ``python scripts/fetch_selfie_model.py``)
downloads that wheel from the package registry with ``pip download --no-deps --only-binary=:all:``, extracts the
one file into a cache, checks its SHA-256 and deletes the wheel. At run time nothing is downloaded: the current
mediapipe's Tasks ``ImageSegmenter`` runs the cached file (``output_confidence_masks=True``).

Everything degrades cleanly: without the file or without mediapipe, :func:`selfie_status` says why, and
:class:`SelfieSegmenter` raises :class:`SourceUnavailable` with that reason; nothing else in the lab needs it.

The cache is ``$LAB_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/crf-rnn-lab``, else ``~/.cache/crf-rnn-lab``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

from lab.errors import Unavailable
from lab.unary.convert import unary_from_softmax

__all__ = [
    "SELFIE_CLASS_NAMES",
    "SelfieSegmenter",
    "SourceUnavailable",
    "extract_selfie_model",
    "fetch_selfie_model",
    "selfie_model_path",
    "selfie_status",
]

SELFIE_CLASS_NAMES: tuple[str, ...] = ("background", "person")
SELFIE_WHEEL = "mediapipe==0.10.21"
SELFIE_MEMBER = "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite"
# sha256 of the member, as listed in the wheel's RECORD (checked 2026-11-25).
SELFIE_SHA256 = "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c"
# Used when this interpreter has no 0.10.21 wheel of its own (e.g. a newer Python): the file inside is the same.
_FALLBACK_PLATFORM = ["--platform", "manylinux_2_28_x86_64", "--python-version", "3.11", "--implementation", "cp"]


class SourceUnavailable(Unavailable):
    """The selfie segmenter cannot run here; the message says why and how to fix it."""


def _cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("LAB_CACHE_DIR"):
        return Path(os.environ["LAB_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "crf-rnn-lab"


def selfie_model_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the model file lives (whether or not it is there yet).

    Args:
        cache_dir: the cache folder; default as in the module docstring.

    Returns:
        ``<cache>/mediapipe/selfie_segmentation.tflite``.

    Example:
        >>> selfie_model_path("/tmp/cache").as_posix()
        '/tmp/cache/mediapipe/selfie_segmentation.tflite'
    """
    return _cache_dir(cache_dir) / "mediapipe" / "selfie_segmentation.tflite"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def extract_selfie_model(
    wheel: str | os.PathLike, cache_dir: str | os.PathLike | None = None, *, sha256: str = SELFIE_SHA256
) -> Path:
    """Copy the model file out of a downloaded mediapipe wheel into the cache.

    Args:
        wheel: path to a mediapipe 0.10.21 ``.whl`` (any platform).
        cache_dir: the cache folder; default as in the module docstring.
        sha256: the expected SHA-256 of the file (hex).

    Returns:
        The path of the extracted file.

    Raises:
        SourceUnavailable: the wheel is unreadable, lacks the file, or the file's hash differs.

    Example:
        >>> extract_selfie_model("/nonexistent.whl")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        lab.unary.mediapipe_source.SourceUnavailable: wheel: cannot read '/nonexistent.whl' ...
    """
    try:
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(SELFIE_MEMBER)
    except KeyError as err:
        raise SourceUnavailable(f"wheel: {os.fspath(wheel)!r} holds no {SELFIE_MEMBER}") from err
    except (OSError, zipfile.BadZipFile) as err:
        raise SourceUnavailable(f"wheel: cannot read {os.fspath(wheel)!r} ({err})") from err
    if _sha256(data) != sha256:
        raise SourceUnavailable(f"wheel: {SELFIE_MEMBER} has SHA-256 {_sha256(data)}, expected {sha256}")
    target = selfie_model_path(cache_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".part")
    tmp.write_bytes(data)
    os.replace(tmp, target)  # atomic: a reader never sees half a file
    return target


def fetch_selfie_model(
    cache_dir: str | os.PathLike | None = None, *, python: str = sys.executable, timeout_s: float = 600.0
) -> Path:
    """Set-up step: download the mediapipe 0.10.21 wheel with pip, keep only the model file.

    Does nothing if the file is already cached with the right hash. Needs network access to the package
    index (or a pip configuration that points at a local mirror).

    Args:
        cache_dir: the cache folder; default as in the module docstring.
        python: the interpreter whose pip downloads the wheel.
        timeout_s: limit for each pip call, in seconds.

    Returns:
        The path of the model file.

    Raises:
        SourceUnavailable: pip could not download the wheel, or the file in it is not the expected one.

    Example:
        >>> path = fetch_selfie_model()  # doctest: +SKIP
    """
    target = selfie_model_path(cache_dir)
    if target.is_file() and _sha256(target.read_bytes()) == SELFIE_SHA256:
        return target
    errors = []
    with tempfile.TemporaryDirectory(prefix="selfie-wheel-") as tmp:
        base = [python, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", tmp, SELFIE_WHEEL]
        for extra in ([], _FALLBACK_PLATFORM):
            try:
                run = subprocess.run(base + extra, capture_output=True, text=True, timeout=timeout_s, check=False)
            except (OSError, subprocess.TimeoutExpired) as err:
                errors.append(str(err))
                continue
            wheels = sorted(Path(tmp).glob("mediapipe-*.whl"))
            if run.returncode == 0 and wheels:
                return extract_selfie_model(wheels[0], cache_dir)
            lines = (run.stderr or run.stdout or "").strip().splitlines()
            errors.append(lines[-1] if lines else f"pip exited with {run.returncode}")
    raise SourceUnavailable(f"pip could not download {SELFIE_WHEEL}: " + " | ".join(errors))


def _import_vision():
    """Import mediapipe and its Tasks vision module, or raise SourceUnavailable."""
    try:
        import mediapipe
        from mediapipe.tasks.python import BaseOptions, vision
    except Exception as err:  # ImportError, or a broken native library
        raise SourceUnavailable(
            f"mediapipe is not importable ({type(err).__name__}: {err}); install it with `pip install mediapipe`"
        ) from err
    return mediapipe, BaseOptions, vision


def selfie_status(cache_dir: str | os.PathLike | None = None) -> tuple[bool, str]:
    """Whether the selfie segmenter can run here, and why not.

    Args:
        cache_dir: the cache folder; default as in the module docstring.

    Returns:
        (available, reason): reason is ``"ok"`` or a sentence saying what is missing and how to get it.

    Example:
        >>> selfie_status("/nonexistent")[1]  # doctest: +ELLIPSIS
        'model file /nonexistent/mediapipe/selfie_segmentation.tflite is missing; ...'
    """
    path = selfie_model_path(cache_dir)
    if not path.is_file():
        return False, f"model file {path} is missing; run `python scripts/fetch_selfie_model.py` once (needs pip)"
    try:
        _import_vision()
    except SourceUnavailable as err:
        return False, str(err)
    return True, "ok"


class SelfieSegmenter:
    """Person-vs-background probabilities and unaries from MediaPipe's selfie segmenter.

    Soft, blurry edges by construction (the network runs at 256×256): what a dense CRF should sharpen.
    Close it (or use it as a context manager) to release the native graph.

    Args:
        model_path: the ``.tflite`` file; default :func:`selfie_model_path`.

    Raises:
        SourceUnavailable: the model file or mediapipe is missing; the message says how to fix it.

    Example:
        >>> with SelfieSegmenter() as seg:  # doctest: +SKIP
        ...     u = seg.unary(lab.data.sample_images(["astronaut"])["astronaut"])
        >>> u.shape  # doctest: +SKIP
        torch.Size([1, 2, 512, 512])
    """

    def __init__(self, model_path: str | os.PathLike | None = None):
        path = Path(model_path) if model_path is not None else selfie_model_path()
        if not path.is_file():
            reason = selfie_status()[1] if model_path is None else f"model_path: no file {os.fspath(path)!r}"
            raise SourceUnavailable(reason)
        self._mp, base_options, vision = _import_vision()
        options = vision.ImageSegmenterOptions(
            base_options=base_options(model_asset_path=str(path)),
            running_mode=vision.RunningMode.IMAGE,
            output_confidence_masks=True,
            output_category_mask=False,
        )
        self._segmenter = vision.ImageSegmenter.create_from_options(options)

    def person_probability(self, image: np.ndarray) -> np.ndarray:
        """P(person) per pixel.

        Args:
            image: (H, W, 3) uint8 RGB, 0..255 (e.g. from ``lab.data.load_image``).

        Returns:
            (H, W) float32 in 0..1.
        """
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image: expected an (H, W, 3) uint8 array, got {image.shape} {image.dtype}")
        frame = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=np.ascontiguousarray(image))
        masks = self._segmenter.segment(frame).confidence_masks
        return np.array(masks[0].numpy_view(), dtype=np.float32).reshape(image.shape[:2])

    def unary(self, image: np.ndarray, clip: float = 1e-5) -> torch.Tensor:
        """U = log p for (background, person), the ``lab.crf`` unary convention.

        Args:
            image: (H, W, 3) uint8 RGB, 0..255.
            clip: probabilities are clipped to [clip, 1] before the log.

        Returns:
            (1, 2, H, W) float32 U.
        """
        person = torch.from_numpy(self.person_probability(image))
        prob = torch.stack([1 - person, person]).unsqueeze(0)  # (1, 2, H, W)
        return unary_from_softmax(prob, clip=clip)

    def close(self) -> None:
        """Release the native segmenter (idempotent)."""
        segmenter, self._segmenter = getattr(self, "_segmenter", None), None
        if segmenter is not None:
            segmenter.close()

    def __enter__(self) -> SelfieSegmenter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
