"""An image's outputs, encoded and written all or nothing.

:func:`encode_outputs` turns labels, Q and the image into file contents: the label map as a palette PNG, Q as
float32 ``.npy``, the overlay as PNG, both PNGs tagged "Software: crf-lab refine" (:data:`SOFTWARE_TAG`,
which :mod:`lab.cli.plan` reads back so that they are never taken as inputs). :func:`write_outputs` writes
each file under a temporary ``.NAME.*.part`` name in its folder and renames the whole set into place (with
signals deferred), so an output file is either complete or absent. A full disk, an exceeded quota or a
read-only file system raises :class:`StopBatch`, naming the file: every later write would fail too.
"""

from __future__ import annotations

import errno
import io
import os
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np

from lab.cli.signals import Signals

# the tag in the PNGs this tool writes; files carrying it are never taken as inputs
SOFTWARE_TAG = "crf-lab refine"
# write errors after which no other image can be written either: the batch stops
STOP_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


class StopBatch(Exception):
    """A write failed in a way that every later write would too (disk full, read-only)."""


def tag_png(data: bytes) -> bytes:
    """The PNG ``data`` with a tEXt chunk "Software: crf-lab refine" right after its IHDR chunk."""
    body = b"Software\0" + SOFTWARE_TAG.encode()
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    end_of_ihdr = 8 + 4 + 4 + 13 + 4  # signature, then IHDR: length, type, 13 bytes, CRC
    return data[:end_of_ihdr] + chunk + data[end_of_ihdr:]


def _write_bytes(f: io.BufferedWriter, data: bytes) -> None:
    """Write ``data`` to the open file ``f`` (one place, so tests can make the disk fill up)."""
    f.write(data)


def write_outputs(payloads: dict[Path, bytes], signals: Signals, mode: int) -> None:
    """Write each file under a temporary name in its folder, then rename all into place, or leave none.

    The renames run with signals deferred (:meth:`Signals.check` raises them afterwards). An OSError names
    the file it happened on; after it no temporary file is left and none of the set is in place. One of
    :data:`STOP_ERRNOS` raises :class:`StopBatch` instead.
    """
    try:
        _write_set(payloads, signals, mode)
    except OSError as exc:
        if exc.errno in STOP_ERRNOS:
            raise StopBatch(f"{exc.filename}: {exc.strerror}") from None
        raise


def _write_set(payloads: dict[Path, bytes], signals: Signals, mode: int) -> None:
    temps: dict[Path, Path] = {}
    try:
        for target, data in payloads.items():
            try:
                fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
                os.close(fd)
                temps[target] = Path(tmp)
                with open(tmp, "wb") as f:
                    os.fchmod(f.fileno(), mode)
                    _write_bytes(f, data)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as exc:
                exc.filename = str(target)
                raise
        with signals.deferred():
            placed: list[Path] = []
            try:
                for target, tmp in temps.items():
                    os.replace(tmp, target)
                    placed.append(target)
            except BaseException:
                for t in placed:  # a rename failed half-way: the set is incomplete, so none of it stays
                    t.unlink(missing_ok=True)
                raise
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)


def encode_outputs(
    targets: dict[str, Path],
    image: np.ndarray,
    labels: np.ndarray,
    q: np.ndarray | None,
    *,
    names: tuple[str, ...] | None = None,
    before: np.ndarray | None = None,
    titles: tuple[str, str] = ("unary (arg-max)", "CRF"),
    legend: bool = True,
) -> dict[Path, bytes]:
    """Each target file's contents: ``targets`` maps "labels" / "q" / "overlay" to a path.

    Args:
        targets: where each output goes; "labels" always, "q" and "overlay" when asked for.
        image: (H, W, 3) uint8, the image at the outputs' size.
        labels: (H, W) integer labels, 0..255.
        q: (L, H, W) the marginals, stored as float32 (None when "q" is not among ``targets``).
        names: the class names for the overlay's legend (None: the label numbers).
        before: (H, W) the unary's arg-max: the overlay is then before | after (:func:`lab.cli.legend.overlay_figure`).
        titles: the two panels' titles.
        legend: whether the overlay has a legend.
    """
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from lab.cli.legend import overlay_figure
    from lab.explore import label_png

    payloads = {targets["labels"]: tag_png(label_png(labels))}
    if "q" in targets:
        buf = io.BytesIO()
        np.save(buf, q.astype(np.float32))
        payloads[targets["q"]] = buf.getvalue()
    if "overlay" in targets:
        info = PngInfo()
        info.add_text("Software", SOFTWARE_TAG)
        buf = io.BytesIO()
        figure = overlay_figure(image, labels, names, before=before, titles=titles, legend=legend)
        Image.fromarray(figure).save(buf, format="PNG", pnginfo=info)
        payloads[targets["overlay"]] = buf.getvalue()
    return payloads
