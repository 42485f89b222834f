"""Real photos that ship inside installed packages, and a tolerant image loader.

Every photo here is read from a file installed with scikit-image or matplotlib: nothing touches the network.
(Some ``skimage.data`` images, e.g. ``eagle``, ``brain``, ``cells3d``, are fetched from the internet on first
use and are deliberately not offered.)
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["SAMPLE_IMAGE_NAMES", "load_image", "sample_images"]


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        return getattr(skimage.data, name)()

    return load


def _grace_hopper() -> np.ndarray:
    from matplotlib.cbook import get_sample_data

    with get_sample_data("grace_hopper.jpg") as f:
        return load_image(f.read())


# name -> loader; the order is the order of ``sample_images()``. All files are bundled with the packages.
_LOADERS: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": _skimage("astronaut"),
    "chelsea": _skimage("chelsea"),
    "coffee": _skimage("coffee"),
    "rocket": _skimage("rocket"),
    "immunohistochemistry": _skimage("immunohistochemistry"),
    "hubble_deep_field": _skimage("hubble_deep_field"),
    "grace_hopper": _grace_hopper,
}
SAMPLE_IMAGE_NAMES: tuple[str, ...] = tuple(_LOADERS)


@functools.cache
def _cached(name: str) -> np.ndarray:
    image = np.ascontiguousarray(_LOADERS[name]())
    image.setflags(write=False)
    return image


def sample_images(names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Real photos bundled with scikit-image and matplotlib, loaded offline.

    The photos: astronaut (512×512), chelsea (300×451), coffee (400×600), rocket (427×640),
    immunohistochemistry (512×512), hubble_deep_field (872×1000) from scikit-image, and grace_hopper
    (600×512) from matplotlib. Files are decoded once per process; each call returns fresh copies.

    Args:
        names: which photos, in the order wanted; default all of ``SAMPLE_IMAGE_NAMES`` in that order.

    Returns:
        dict (insertion-ordered) name -> (H, W, 3) uint8 RGB array, values 0..255.

    Raises:
        ValueError: ``names`` holds a name that is not in ``SAMPLE_IMAGE_NAMES``.

    Example:
        >>> photos = sample_images(["chelsea"])
        >>> photos["chelsea"].shape, photos["chelsea"].dtype
        ((300, 451, 3), dtype('uint8'))
    """
    if names is None:
        names = SAMPLE_IMAGE_NAMES
    elif isinstance(names, str):
        names = [names]
    unknown = [n for n in names if n not in _LOADERS]
    if unknown:
        raise ValueError(f"names: unknown photo(s) {unknown}; expected names from {list(SAMPLE_IMAGE_NAMES)}")
    return {n: _cached(n).copy() for n in names}


def _to_rgb_uint8(image: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 from any Pillow mode: alpha over white, 16-bit and float rescaled to 0..255."""
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(image).astype(np.float64)
        if mode.startswith("I;16") or (mode == "I" and a.max(initial=0) > 255):
            a = a / 257.0  # 16-bit full range 0..65535 -> 0..255
        elif mode == "F" and a.size and 0.0 <= a.min() and a.max() <= 1.0:
            a = a * 255.0  # float images in 0..1
        grey = np.clip(np.rint(a), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode in ("RGBA", "LA", "La", "RGBa", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def load_image(source: str | os.PathLike | bytes | bytearray | memoryview) -> np.ndarray:
    """Decode an image file (PNG, JPEG, WebP, TIFF, GIF, BMP, ...) into RGB uint8.

    What comes in is normalised: the EXIF orientation tag is applied (a phone photo comes out upright),
    transparency is composited over white, greyscale and palette images become RGB, 16-bit images are scaled
    from 0..65535 to 0..255, float images from 0..1 (other float ranges are clipped to 0..255). Multi-frame
    files give their first frame.

    Args:
        source: a file path, or the file's bytes (e.g. from an upload widget).

    Returns:
        (H, W, 3) uint8 RGB array, values 0..255.

    Raises:
        TypeError: ``source`` is neither a path nor bytes.
        FileNotFoundError: the path does not exist.
        ValueError: the data is not a decodable image (not an image, truncated, corrupt, empty); the message
            names ``source``.

    Example:
        >>> from PIL import Image
        >>> buf = io.BytesIO()
        >>> Image.new("L", (5, 3), 7).save(buf, "PNG")
        >>> load_image(buf.getvalue()).shape
        (3, 5, 3)
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        what = f"{len(source)} bytes"
        stream: io.BytesIO | str | os.PathLike = io.BytesIO(bytes(source))
    elif isinstance(source, (str, os.PathLike)):
        what = repr(os.fspath(source))
        if not os.path.exists(source):
            raise FileNotFoundError(f"source: no such file {what}")
        stream = source
    else:
        raise TypeError(f"source: expected a path or bytes, got {type(source).__name__}")
    try:
        with Image.open(stream) as image:
            image.load()  # decode now: a truncated file fails here, not later
            upright = ImageOps.exif_transpose(image)
            return _to_rgb_uint8(upright)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise ValueError(f"source: could not decode {what} as an image ({type(err).__name__}: {err})") from err
