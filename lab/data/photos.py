"""Real photos that ship inside installed packages, and a tolerant image loader.

Every photo here is read from a file installed with scikit-image or matplotlib: nothing touches the network.
(Some ``skimage.data`` images, e.g. ``eagle``, ``brain``, ``cells3d``, are fetched from the internet on first
use and are deliberately not offered.)
"""

from __future__ import annotations

import functools
import io
import os
import re
import warnings
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lab.errors import LabError

__all__ = ["DEFAULT_MAX_PIXELS", "SAMPLE_IMAGE_NAMES", "ImageTooLargeError", "load_image", "sample_images"]


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        return getattr(skimage.data, name)()

    return load


def _grace_hopper() -> np.ndarray:
    from matplotlib.cbook import get_sample_data

    with get_sample_data("grace_hopper.jpg") as f:
        return load_image(f.read(), name="grace_hopper.jpg")


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


DEFAULT_MAX_PIXELS = 50_000_000
"""The pixel cap of :func:`load_image`: 50 MP, e.g. 8660 × 5773, above the 48 MP of current phone cameras.

Decoded as RGB such an image takes 150 MB, and the CRF works on far fewer pixels (the app downscales to a
working size, the CLI takes ``--max-side``). The cap is checked from the file's header, before anything is
decoded, so a small compressed file that claims to be 12000 × 12000 is refused without using the memory."""

_SVG_START = re.compile(rb"^\s*(<\?xml[^>]*>\s*)?(<!--.*?-->\s*)*(<!DOCTYPE svg[^>]*>\s*)?<svg[\s>]", re.S | re.I)


class ImageTooLargeError(LabError, ValueError):
    """An image whose header claims more pixels than the cap; raised before decoding.

    Attributes:
        width: the image's width in pixels, from its header.
        height: its height in pixels.
        max_pixels: the cap it exceeds.
    """

    def __init__(self, message: str, width: int, height: int, max_pixels: int) -> None:
        super().__init__(message)
        self.width, self.height, self.max_pixels = width, height, max_pixels


def _describe_failure(err: BaseException, stream: object, label: str, head: bytes) -> str:
    """What went wrong, in words that name ``label`` and never Pillow's ``<_io.BytesIO object at 0x…>``."""
    if isinstance(err, UnidentifiedImageError):
        if _SVG_START.match(head):
            return "an SVG (vector) image, which is not supported; rasterise it first (e.g. export as PNG)"
        return "not an image in a format Pillow reads (PNG, JPEG, WebP, TIFF, GIF, BMP, ...)"
    if isinstance(err, PermissionError):
        return "cannot read the file (permission denied)"
    text = str(err).replace(repr(stream), label)
    text = re.sub(r"<[\w.]+ (name=\S+ )?object at 0x[0-9a-fA-F]+>", label, text)
    if isinstance(err, (SyntaxError, OSError)) and "truncated" in text.lower():
        return f"the file is truncated or corrupt ({text})"
    return f"corrupt or unsupported ({type(err).__name__}: {text})"


def load_image(
    source: str | os.PathLike | bytes | bytearray | memoryview,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    name: str | None = None,
) -> np.ndarray:
    """Decode an image file (PNG, JPEG, WebP, TIFF, GIF, BMP, ...) into RGB uint8.

    What comes in is normalised: the EXIF orientation tag is applied (a phone photo comes out upright),
    transparency is composited over white, greyscale and palette images become RGB, 16-bit images are scaled
    from 0..65535 to 0..255, float images from 0..1 (other float ranges are clipped to 0..255). Multi-frame
    files (GIF, APNG, multi-page TIFF) give their first frame.

    The image's size is read from its header and checked against ``max_pixels`` before it is decoded.
    Pillow's own decompression-bomb guard (``PIL.Image.MAX_IMAGE_PIXELS``, about 89 MP for its warning and
    twice that for its error) stays in force above the cap; its warning is never shown, its error becomes
    a ``ValueError`` like the others.

    Args:
        source: a file path, or the file's bytes (e.g. from an upload widget).
        max_pixels: refuse images with more pixels (width × height) than this; ``None`` lifts the cap.
            Default :data:`DEFAULT_MAX_PIXELS` (50 MP).
        name: what to call the file in error messages (e.g. the uploaded file's name); default the path,
            or "the uploaded bytes" for bytes.

    Returns:
        (H, W, 3) uint8 RGB array, values 0..255.

    Raises:
        TypeError: ``source`` is neither a path nor bytes.
        FileNotFoundError: the path does not exist.
        ImageTooLargeError: (a ``ValueError``) the header claims more than ``max_pixels`` pixels.
        ValueError: the data is not a decodable image (not an image, SVG, truncated, corrupt, empty), or
            ``max_pixels`` is not a positive integer or None. Every message starts with the file's name.

    Example:
        >>> from PIL import Image
        >>> buf = io.BytesIO()
        >>> Image.new("L", (5, 3), 7).save(buf, "PNG")
        >>> load_image(buf.getvalue(), name="grey.png").shape
        (3, 5, 3)
        >>> load_image(buf.getvalue(), max_pixels=10, name="grey.png")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
            ...
        lab.data.photos.ImageTooLargeError: grey.png: 5 × 3 = 15 pixels, more than max_pixels = 10; ...
    """
    if max_pixels is not None and (
        isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)) or max_pixels < 1
    ):
        raise ValueError(f"max_pixels: expected a positive integer or None, got {max_pixels!r}")
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name if name is not None else "the uploaded bytes"
        data = bytes(source)
        head = data[:4096]
        if not data:
            raise ValueError(f"{label}: could not decode as an image: empty (0 bytes)")
        stream: io.BytesIO | str | os.PathLike = io.BytesIO(data)
    elif isinstance(source, (str, os.PathLike)):
        label = name if name is not None else os.fspath(source)
        if not os.path.exists(source):
            raise FileNotFoundError(f"{label}: no such file")
        if os.path.isdir(source):
            raise ValueError(f"{label}: a folder, not an image file")
        stream = source
        head = b""
    else:
        raise TypeError(f"source: expected a path or bytes, got {type(source).__name__}")
    try:
        with warnings.catch_warnings():
            # the cap below decides; Pillow's warning would only repeat it, or warn about a size the caller allowed
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # Pillow's notes on damaged metadata (e.g. "Corrupt EXIF data"): a decodable image loads anyway
            warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
            with Image.open(stream) as image:
                width, height = image.size
                if max_pixels is not None and width * height > max_pixels:
                    raise ImageTooLargeError(
                        f"{label}: {width} × {height} = {width * height:,} pixels, more than max_pixels = "
                        f"{max_pixels:,}; refused before decoding. Pass a larger max_pixels (None lifts the cap) "
                        "or downscale the file first",
                        width,
                        height,
                        max_pixels,
                    )
                image.load()  # decode now: a truncated file fails here, not later
                upright = ImageOps.exif_transpose(image)
                return _to_rgb_uint8(upright)
    except ImageTooLargeError:
        raise
    except Image.DecompressionBombError as err:
        raise ValueError(
            f"{label}: larger than Pillow's decompression-bomb limit ({err}); refused before decoding. "
            "Raise PIL.Image.MAX_IMAGE_PIXELS (None lifts it) to open it anyway"
        ) from None
    except FileNotFoundError:
        raise FileNotFoundError(f"{label}: no such file") from None
    except Exception as err:  # Pillow's decoders raise many types for corrupt data
        if not head and isinstance(err, UnidentifiedImageError):
            try:
                with open(stream, "rb") as f:
                    head = f.read(4096)
            except OSError:
                pass
        raise ValueError(
            f"{label}: could not decode as an image: {_describe_failure(err, stream, label, head)}"
        ) from err
