"""The batch command line: ``crf-lab refine`` (also ``python -m lab refine``).

Refines one image, a folder or a glob of images with mean-field inference and writes label maps (palette
PNG), optionally Q (.npy) and an overlay, into an output folder. A bad file is reported (which file, what is
wrong) and skipped; the others are still processed. Bad options are refused before any image is read.

Exit codes: 0 all good; 1 some inputs failed or were unreadable, or the disk filled up; 2 bad usage
(including two inputs that would write the same output names); 130 / 143 stopped by SIGINT / SIGTERM.

Files: outputs are written as NAME_labels.png, NAME_q.npy and NAME_overlay.png (NAME = the input's stem)
under a temporary name in the output folder and renamed into place once all of an image's outputs are
written, so an output file is either complete or absent, also after a full disk, Ctrl-C or SIGTERM. Inputs
are never overwritten; the PNGs this tool writes carry a "Software: crf-lab" tag and are never taken as
inputs (so refining a folder into itself is safe). --skip-existing resumes an interrupted batch. A full
disk stops the batch, naming the file. Images above --max-pixels are refused from their header, before
decoding; --message-passing exact is refused above 96 × 96 pixels (it is O(N²)). Label maps hold at most
256 labels (a palette PNG's pixel values are 0..255).

Example:
    crf-lab refine photos/ --out refined/                      # built-in colour-cluster unary
    crf-lab refine "shots/*.jpg" --prob-dir probs/ --out out/  # probs/NAME.npy per image
    crf-lab refine img.png --annotation-dir ann/ --params crf_params.json --save-q --overlay --out out/
    crf-lab refine photos/ --out refined/ --skip-existing      # finish an interrupted run
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import glob
import io
import json
import math
import os
import signal
import stat
import struct
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lab.errors import LabError

__all__ = ["EXACT_MAX_PIXELS", "IMAGE_SUFFIXES", "main"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif")
# looked for in folders too, so that they get a clear "not supported" instead of being ignored
_REFUSED_SUFFIXES = (".svg",)
_OVERRIDES = ("theta_alpha", "theta_beta", "theta_gamma", "w_bilateral", "w_spatial", "normalize")
_OUTPUT_SUFFIXES = {"labels": "_labels.png", "q": "_q.npy", "overlay": "_overlay.png"}
# O(N²) message passing, here and in the app: about a second per iteration at this size on 2 cores; an
# 800 × 600 image would take hours
EXACT_MAX_PIXELS = 96 * 96
# the tag in the PNGs this tool writes; files carrying it are never taken as inputs
_SOFTWARE_TAG = "crf-lab refine"
# write errors after which no other image can be written either: the batch stops
_STOP_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


class UsageError(LabError):
    """Bad arguments: reported with exit code 2."""


class _Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; a BaseException so that no per-file handler swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _StopBatch(Exception):
    """A write failed in a way that every later write would too (disk full, read-only)."""


class _Signals:
    """SIGINT / SIGTERM become :class:`_Interrupted`; inside :meth:`deferred` they wait for :meth:`check`.

    The renames that put an image's outputs in place run deferred, and the batch calls :meth:`check` once
    it has counted the image, so a signal never leaves half a set or a wrong count.
    """

    def __init__(self) -> None:
        self.pending: int | None = None
        self.depth = 0
        self.previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: object) -> None:
        if self.depth:
            self.pending = signum
            return
        raise _Interrupted(signum)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        try:
            for s in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(s) is not signal.SIG_IGN:  # e.g. nohup: an ignored signal stays ignored
                    self.previous[s] = signal.signal(s, self._handle)
        except ValueError:  # not the main thread (e.g. main() called from a worker): signals stay as they are
            pass
        try:
            yield
        finally:
            for s, handler in self.previous.items():
                signal.signal(s, handler)
            self.previous.clear()

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1

    def check(self) -> None:
        """Raise :class:`_Interrupted` for a signal that arrived while deferred."""
        if self.pending is not None and not self.depth:
            signum, self.pending = self.pending, None
            raise _Interrupted(signum)


# --- inputs


@dataclass
class _Inputs:
    files: list[Path] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (entry, why it was skipped)
    own_outputs: list[Path] = field(default_factory=list)


def _is_own_output(path: Path) -> bool:
    """Whether ``path`` is a PNG this tool wrote: a tEXt "Software" chunk before its image data says so.

    Reads the chunk headers only, without Pillow: nothing is decoded.
    """
    if path.suffix.lower() != ".png":
        return False
    try:
        with open(path, "rb") as f:
            if f.read(8) != b"\x89PNG\r\n\x1a\n":
                return False
            for _ in range(64):  # the tag sits right after IHDR; other writers put a few chunks first
                head = f.read(8)
                if len(head) < 8:
                    return False
                length, kind = struct.unpack(">I4s", head)
                if kind in (b"IDAT", b"IEND"):
                    return False
                if kind == b"tEXt" and length < 1024:
                    key, _, value = f.read(length).partition(b"\0")
                    if key == b"Software" and value.startswith(_SOFTWARE_TAG.encode()):
                        return True
                    f.seek(4, os.SEEK_CUR)
                else:
                    f.seek(length + 4, os.SEEK_CUR)
    except OSError:  # unreadable: certainly not ours; reading it as an input reports the problem
        return False
    return False


def _entry_problem(path: Path) -> str | None:
    """Why the entry ``path`` cannot be read as a file (symlink loop, broken link, FIFO, unreadable), or None."""
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symlink loop"
        if exc.errno == errno.ENOENT and path.is_symlink():
            return f"a broken symlink (to {os.readlink(path)})"
        return f"cannot be read ({exc.strerror})"
    if stat.S_ISDIR(st.st_mode):
        return "a folder"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file (a device, FIFO or socket)"
    if not os.access(path, os.R_OK):
        return "cannot be read (permission denied)"
    return None


def _add_candidate(found: _Inputs, path: Path) -> None:
    problem = _entry_problem(path)
    if problem == "a folder":
        return  # folders are only refined when given themselves; their subfolders are not searched
    if problem:
        found.problems.append((str(path), problem))
    elif _is_own_output(path):
        found.own_outputs.append(path)
    else:
        found.files.append(path)


def _collect(inputs: list[str]) -> _Inputs:
    found = _Inputs()
    wanted = IMAGE_SUFFIXES + _REFUSED_SUFFIXES
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            try:
                with os.scandir(p) as it:
                    names = sorted(e.name for e in it)
            except OSError as exc:
                found.problems.append((str(p), f"the folder cannot be listed ({exc.strerror})"))
                continue
            for n in names:
                if Path(n).suffix.lower() in wanted:
                    _add_candidate(found, p / n)
        elif os.path.lexists(p):  # a file, or a link that does not lead to one (reported by _add_candidate)
            _add_candidate(found, p)
        else:
            matches = sorted(Path(m) for m in glob.glob(item))
            if not matches:
                raise UsageError(f"inputs: {item!r} is not a file, a folder or a glob that matches anything")
            for m in matches:
                _add_candidate(found, m)
    seen, unique = set(), []
    for f in found.files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    found.files = unique
    return found


def _find_companion(folder: Path, stem: str, suffixes: tuple[str, ...], what: str) -> Path:
    for s in suffixes:
        candidate = folder / f"{stem}{s}"
        if candidate.is_file():
            return candidate
    raise ValueError(f"no {what} named {stem}{{{','.join(suffixes)}}} in {folder}")


def _companions(args: argparse.Namespace) -> tuple[Path, tuple[str, ...], str] | None:
    """Where each image's companion file is looked for: (folder, suffixes, what it is), or None."""
    if args.prob_dir:
        return Path(args.prob_dir), (".npy", ".npz"), "probability map"
    if args.annotation_dir:
        return Path(args.annotation_dir), IMAGE_SUFFIXES, "annotation"
    return None


def _targets(path: Path, out: Path, args: argparse.Namespace) -> dict[str, Path]:
    keys = ["labels"] + (["q"] if args.save_q else []) + (["overlay"] if args.overlay else [])
    return {k: out / f"{path.stem}{_OUTPUT_SUFFIXES[k]}" for k in keys}


def _plan(files: list[Path], out: Path, args: argparse.Namespace) -> dict[Path, dict[str, Path]]:
    """Each input's output files; a usage error if two inputs would write the same file or one an input."""
    plan = {f: _targets(f, out, args) for f in files}
    writers: dict[str, list[Path]] = {}
    for f, targets in plan.items():
        for t in targets.values():
            writers.setdefault(os.path.normcase(t.name), []).append(f)
    clashes = {name: fs for name, fs in writers.items() if len(fs) > 1}
    if clashes:
        lines = "\n".join(f"  {', '.join(map(str, fs))} -> {name}" for name, fs in sorted(clashes.items()))
        raise UsageError(
            f"--out: inputs with the same name would overwrite each other's outputs in {out}:\n{lines}\n"
            "rename them, or refine them into separate --out folders"
        )
    given = {f.resolve(): f for f in files}
    companions = _companions(args)
    if companions:
        folder, suffixes, _ = companions
        for f in files:
            for s in suffixes:
                c = folder / f"{f.stem}{s}"
                if c.is_file():
                    given.setdefault(c.resolve(), c)
    for f, targets in plan.items():
        for t in targets.values():
            if t.resolve() in given:
                raise UsageError(
                    f"--out: {t} (an output of {f}) would overwrite the input {given[t.resolve()]}; "
                    "choose another --out"
                )
    return plan


# --- options


def _max_pixels(text: str) -> int | None:
    """``--max-pixels``: a positive integer, or 0 / none for no cap."""
    if text.strip().lower() in ("0", "none"):
        return None
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, or 0 / none for no cap, got {text!r}")
    return value


def _is_number(v: object) -> bool:
    """A finite JSON number (not true / false, not NaN / Infinity, not an integer beyond float's range)."""
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def _check_params_doc(doc: object, where: str) -> None:
    """The types of the keys the CLI reads from a parameters JSON, each error naming its key."""
    if not isinstance(doc, dict):
        raise UsageError(f"{where}: expected a JSON object (the app's parameters download), got {type(doc).__name__}")

    def bad(key: str, expected: str) -> UsageError:
        return UsageError(f'{where}: "{key}": expected {expected}, got {json.dumps(doc[key])}')

    for key in ("theta_alpha", "theta_beta", "theta_gamma"):
        if key in doc and not _is_number(doc[key]):
            raise bad(key, "a number > 0")
    for key in ("w_bilateral", "w_spatial"):
        v = doc.get(key)
        if key in doc and not (_is_number(v) or (isinstance(v, list) and v and all(map(_is_number, v)))):
            raise bad(key, "a finite number or a list of finite numbers (one per label)")
    if "normalize" in doc and not isinstance(doc["normalize"], str):
        raise bad("normalize", 'one of "after", "symmetric", "none"')
    if "compat" in doc:
        v = doc["compat"]
        square = (
            isinstance(v, list)
            and v
            and all(isinstance(r, list) and len(r) == len(v) and all(map(_is_number, r)) for r in v)
        )
        if v != "potts" and not square:
            raise bad("compat", '"potts" or an L × L list of lists of finite numbers')
    for key, least in (("window_size", 1), ("iterations", 0)):
        v = doc.get(key)
        if key in doc and not (isinstance(v, int) and not isinstance(v, bool) and v >= least):
            raise bad(key, f"an integer >= {least}")


def _params(args: argparse.Namespace):
    from lab.crf import CRFParams
    from lab.explore import params_from_json

    base: dict = {}
    extra: dict = {}
    if args.params:
        where = f"--params {args.params}"
        try:
            raw = Path(args.params).read_bytes()
        except OSError as exc:
            raise UsageError(f"--params: cannot read {args.params} ({exc.strerror})") from None
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise UsageError(
                f"{where}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at position {exc.start}); "
                "expected the JSON the app downloads"
            ) from None
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{where}: not valid JSON ({exc})") from None
        except RecursionError:
            raise UsageError(f"{where}: not valid parameters (nested too deeply)") from None
        _check_params_doc(doc, where)
        try:
            params, extra = params_from_json(text)
        except (ValueError, TypeError, ArithmeticError, RuntimeError) as exc:  # float() of 1e999 overflows
            raise UsageError(f"{where}: {exc}") from None
        base = {name: getattr(params, name) for name in (*_OVERRIDES, "compat", "window_size")}
    for name in _OVERRIDES:
        value = getattr(args, name)
        if value is not None:
            try:
                CRFParams(**{name: value})  # the flag alone, so that the message names the flag
            except (ValueError, TypeError, ArithmeticError, RuntimeError) as exc:
                raise UsageError(f"--{name.replace('_', '-')}: {str(exc).removeprefix(f'{name}: ')}") from None
            base[name] = value
    try:
        params = CRFParams(**base)
    except (ValueError, TypeError, ArithmeticError, RuntimeError) as exc:
        raise UsageError(str(exc)) from None
    iterations = args.iterations if args.iterations is not None else extra.get("iterations", 5)
    if iterations < 0:
        raise UsageError(f"--iterations: expected an integer >= 0, got {iterations}")
    return params, iterations


def _check_options(args: argparse.Namespace) -> None:
    """Every option's value, before any image is read; each error names the option and what it expects."""
    import torch

    from lab.lattice import resolve_backend
    from lab.unary.sources import MAX_LABELS

    if not 2 <= args.labels <= MAX_LABELS:
        raise UsageError(
            f"--labels: expected an integer from 2 to {MAX_LABELS} (label maps are palette PNGs), got {args.labels}"
        )
    if args.block < 1:
        raise UsageError(f"--block: expected a tile size in pixels >= 1, got {args.block}")
    if args.prob_dir is None and args.annotation_dir is None:
        low, why = 1 / args.labels, f" (1/L for --labels {args.labels})"
    else:
        low, why = 0.0, ""
    if not low < args.confidence < 1:  # also refuses NaN
        raise UsageError(f"--confidence: expected a probability in ({low:.3g}, 1){why}, got {args.confidence}")
    if args.max_side != 0 and args.max_side < 8:
        raise UsageError(f"--max-side: expected 0 (keep the size) or a size in pixels >= 8, got {args.max_side}")
    for option, folder in (("--prob-dir", args.prob_dir), ("--annotation-dir", args.annotation_dir)):
        if folder is not None and not Path(folder).is_dir():
            raise UsageError(f"{option}: {folder} is not a folder")
    try:
        resolve_backend(args.backend, torch.device("cpu"))  # crf-lab computes on the CPU
    except (RuntimeError, ValueError) as exc:
        raise UsageError(f"--backend {args.backend}: {exc}") from None


def _prepare_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out: {out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise UsageError(f"--out: cannot write into {out} ({exc.strerror})") from None


# --- outputs


def _tag_png(data: bytes) -> bytes:
    """The PNG ``data`` with a tEXt chunk "Software: crf-lab refine" right after its IHDR chunk."""
    body = b"Software\0" + _SOFTWARE_TAG.encode()
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    end_of_ihdr = 8 + 4 + 4 + 13 + 4  # signature, then IHDR: length, type, 13 bytes, CRC
    return data[:end_of_ihdr] + chunk + data[end_of_ihdr:]


def _write_bytes(f: io.BufferedWriter, data: bytes) -> None:
    """Write ``data`` to the open file ``f`` (one place, so tests can make the disk fill up)."""
    f.write(data)


def _write_outputs(payloads: dict[Path, bytes], signals: _Signals, mode: int) -> None:
    """Write each file under a temporary name in its folder, then rename all into place, or leave none.

    The renames run with signals deferred (:meth:`_Signals.check` raises them afterwards). An OSError names
    the file it happened on; after it no temporary file is left and none of the set is in place.
    """
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


def _encode_outputs(
    targets: dict[str, Path], image: np.ndarray, labels: np.ndarray, q: np.ndarray
) -> dict[Path, bytes]:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from lab.explore import label_png
    from lab.viz import overlay

    payloads = {targets["labels"]: _tag_png(label_png(labels))}
    if "q" in targets:
        buf = io.BytesIO()
        np.save(buf, q.astype(np.float32))
        payloads[targets["q"]] = buf.getvalue()
    if "overlay" in targets:
        info = PngInfo()
        info.add_text("Software", _SOFTWARE_TAG)
        buf = io.BytesIO()
        Image.fromarray(overlay(image, labels)).save(buf, format="PNG", pnginfo=info)
        payloads[targets["overlay"]] = buf.getvalue()
    return payloads


def _complete(targets: dict[str, Path]) -> bool:
    return all(t.is_file() and t.stat().st_size > 0 for t in targets.values())


# --- one image


def _unary(args: argparse.Namespace, path: Path, image: np.ndarray):
    from lab.data import load_image
    from lab.unary import coarse_colour_clusters, load_probability_map, unary_from_annotation

    h, w = image.shape[:2]
    companions = _companions(args)
    source = _find_companion(companions[0], path.stem, *companions[1:]) if companions else None
    if args.prob_dir:
        return load_probability_map(str(source), (h, w), name=str(source))
    if args.annotation_dir:
        ann = load_image(str(source), max_pixels=args.max_pixels)
        if ann.shape[:2] != (h, w):
            from PIL import Image

            ann = np.asarray(Image.fromarray(ann).resize((w, h), Image.Resampling.NEAREST))
        unary, _ = unary_from_annotation(ann, args.confidence, name=str(source))
        return unary, [f"annotation {source.name}"]
    unary, _ = coarse_colour_clusters(image, n_labels=args.labels, block=args.block, confidence=args.confidence)
    return unary, ["colour-cluster unary"]


def _refine_one(args: argparse.Namespace, path: Path, params, iterations: int):
    """The image, its labels and Q (L, H, W), and notes; a ValueError for what the user can fix."""
    import torch

    from lab.crf import mean_field
    from lab.data import load_image
    from lab.data.photos import ImageTooLargeError
    from lab.explore import fit_image, to_tensor

    try:
        image = load_image(str(path), max_pixels=args.max_pixels)
    except ImageTooLargeError as exc:
        raise ValueError(
            f"{exc.width} × {exc.height} = {exc.width * exc.height:,} pixels, more than --max-pixels "
            f"{exc.max_pixels:,}; refused before decoding (raise --max-pixels, or 0 for no cap)"
        ) from None
    if args.max_side:
        image = fit_image(image, args.max_side)
    h, w = image.shape[:2]
    if args.message_passing == "exact" and h * w > EXACT_MAX_PIXELS:
        raise ValueError(
            f"{w} × {h} = {h * w:,} pixels is more than the {EXACT_MAX_PIXELS:,} (96 × 96) that --message-passing "
            "exact allows (it is O(N²): hours at 800 × 600); use --message-passing lattice (the default) "
            "or downscale with --max-side 96"
        )
    unary, notes = _unary(args, path, image)
    with torch.no_grad():
        trace = mean_field(
            unary,
            to_tensor(image),
            params,
            iterations=iterations,
            keep=None,
            message_passing=args.message_passing,
            backend=args.backend,
        )
    q = trace.q[0].numpy()
    return image, q.argmax(0), q, notes


def _failure_text(exc: BaseException, path: Path) -> str:
    if isinstance(exc, MemoryError):
        text = f"out of memory{f' ({exc})' if str(exc) else ''}; try --max-side"
    elif isinstance(exc, (ValueError, TypeError, OSError, RuntimeError)):
        text = str(exc) or type(exc).__name__
    else:
        text = f"{type(exc).__name__}: {exc}"
    return text.removeprefix(f"{path}: ")


# --- the batch


def refine(args: argparse.Namespace) -> int:
    """Run ``refine``; returns the exit code."""
    signals = _Signals()
    with signals.installed():
        return _refine(args, signals)


def _refine(args: argparse.Namespace, signals: _Signals) -> int:
    refined, existing, total = 0, 0, 0
    current: Path | None = None
    out = Path(args.out)
    try:
        _check_options(args)
        params, iterations = _params(args)
        found = _collect(args.inputs)
        if not found.files and not found.problems:
            raise UsageError(
                f"inputs: no images ({', '.join(IMAGE_SUFFIXES)}) found in {args.inputs}"
                + (f" ({len(found.own_outputs)} files are this tool's outputs)" if found.own_outputs else "")
            )
        plan = _plan(found.files, out, args)
        _prepare_out(out)
        mask = os.umask(0)
        os.umask(mask)
        mode = 0o666 & ~mask  # what a plain open() would give the outputs
        for entry, why in found.problems:
            print(f"{entry}: SKIPPED: {why}", file=sys.stderr)
        if found.own_outputs:
            names = ", ".join(p.name for p in found.own_outputs[:3]) + (", ..." if len(found.own_outputs) > 3 else "")
            print(f"not taken as inputs: {len(found.own_outputs)} PNGs written by crf-lab ({names})", file=sys.stderr)
        total = len(found.files) + len(found.problems)
        failures = len(found.problems)
        for i, path in enumerate(found.files, 1):
            signals.check()
            current = path
            prefix = f"[{i}/{len(found.files)}] {path}"
            targets = plan[path]
            if args.skip_existing and _complete(targets):
                existing += 1
                print(f"{prefix}: skipped, its outputs exist (--skip-existing)", file=sys.stderr)
                continue
            t0 = time.perf_counter()
            try:
                image, labels, q, notes = _refine_one(args, path, params, iterations)
                payloads = _encode_outputs(targets, image, labels, q)
                try:
                    _write_outputs(payloads, signals, mode)
                except OSError as exc:
                    if exc.errno in _STOP_ERRNOS:
                        raise _StopBatch(f"{exc.filename}: {exc.strerror}") from None
                    raise
            except _StopBatch:
                raise
            except Exception as exc:  # a bad file, or one this machine cannot process: report, go on
                failures += 1
                print(f"{prefix}: FAILED: {_failure_text(exc, path)}", file=sys.stderr)
                continue
            refined += 1
            current = None
            ms = 1e3 * (time.perf_counter() - t0)
            print(
                f"{prefix}: ok, {image.shape[1]}x{image.shape[0]}, L={q.shape[0]}, {ms:.0f} ms ({'; '.join(notes)})",
                file=sys.stderr,
            )
        signals.check()
    except _StopBatch as exc:
        print(
            f"STOPPED: {exc}. Nothing partial was left ({current}'s outputs were not written); "
            f"{refined + existing} of {total} images are complete in {out}. "
            "Free some space, then rerun with --skip-existing to finish.",
            file=sys.stderr,
        )
        return 1
    except _Interrupted as exc:
        during = f" while refining {current} (its outputs were not written)" if current else ""
        print(
            f"interrupted by {exc}{during}; no partial file is left, {refined + existing} of {total} images are "
            f"complete in {out}. Rerun with --skip-existing to finish.",
            file=sys.stderr,
        )
        return 128 + exc.signum
    print(
        f"{refined + existing} of {total} images refined into {out}"
        + (f" ({existing} already there, skipped)" if existing else "")
        + (f"; {failures} failed" if failures else ""),
        file=sys.stderr,
    )
    return 1 if failures else 0


def _parser() -> argparse.ArgumentParser:
    from lab.data.photos import DEFAULT_MAX_PIXELS

    parser = argparse.ArgumentParser(prog="crf-lab", description="CRF-RNN Lab command line.")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser(
        "refine",
        help="refine images with mean-field inference in the dense CRF",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument(
        "inputs", nargs="+", help="image files, folders of images (not searched recursively), or globs (quote them)"
    )
    r.add_argument("--out", required=True, help="output folder (created); inputs are never overwritten")
    u = r.add_argument_group("unary (default: built-in colour clusters)")
    src = u.add_mutually_exclusive_group()
    src.add_argument("--prob-dir", help="folder of NAME.npy/.npz probability or score maps, (H,W,L) or (L,H,W)")
    src.add_argument("--annotation-dir", help="folder of NAME.png annotations: colours = labels, black = unknown")
    u.add_argument("--labels", type=int, default=4, help="colour clusters: number of labels L, 2..256 (default 4)")
    u.add_argument("--block", type=int, default=16, help="colour clusters: tile size in pixels, >= 1 (default 16)")
    u.add_argument(
        "--confidence",
        type=float,
        default=0.6,
        help="probability of the clustered label, in (1/L, 1), or of the annotated one, in (0, 1) (default 0.6)",
    )
    c = r.add_argument_group("CRF (a --params JSON from the app, then these flags override it)")
    c.add_argument("--params", help="parameters JSON (the app's download)")
    c.add_argument("--theta-alpha", dest="theta_alpha", type=float, help="bilateral spatial width θα, px (80)")
    c.add_argument("--theta-beta", dest="theta_beta", type=float, help="bilateral colour width θβ, 0..255 (13)")
    c.add_argument("--theta-gamma", dest="theta_gamma", type=float, help="smoothness width θγ, px (3)")
    c.add_argument("--w-bilateral", dest="w_bilateral", type=float, help="bilateral weight (10)")
    c.add_argument("--w-spatial", dest="w_spatial", type=float, help="spatial weight (3)")
    c.add_argument("--normalize", choices=("after", "symmetric", "none"), help="kernel normalisation (after)")
    c.add_argument("--iterations", type=int, help="mean-field iterations T, >= 0 (5)")
    c.add_argument(
        "--message-passing",
        dest="message_passing",
        default="lattice",
        choices=("lattice", "exact", "window"),
        help=f"lattice (default), exact O(N²) (images up to {EXACT_MAX_PIXELS} = 96 × 96 pixels), window",
    )
    c.add_argument(
        "--backend",
        default="auto",
        choices=("auto", "torch", "triton"),
        help="lattice backend; crf-lab computes on the CPU, where triton runs only under TRITON_INTERPRET=1",
    )
    c.add_argument(
        "--max-side",
        dest="max_side",
        type=int,
        default=0,
        help="downscale so the longer side is at most this, >= 8 (0 = keep the size)",
    )
    c.add_argument(
        "--max-pixels",
        dest="max_pixels",
        type=_max_pixels,
        default=DEFAULT_MAX_PIXELS,
        help=f"refuse images with more pixels than this, read from the header before decoding "
        f"(default {DEFAULT_MAX_PIXELS}; 0 or none: no cap)",
    )
    o = r.add_argument_group("outputs")
    o.add_argument("--save-q", action="store_true", help="also write Q as NAME_q.npy, (L, H, W) float32")
    o.add_argument("--overlay", action="store_true", help="also write the labels over the image, NAME_overlay.png")
    o.add_argument(
        "--skip-existing",
        dest="skip_existing",
        action="store_true",
        help="skip images whose outputs (all that this run would write) exist: resumes an interrupted batch",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``crf-lab`` / ``python -m lab``; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return refine(args)
    except UsageError as exc:
        parser.error(str(exc))  # exits with code 2 and the usage line
    except KeyboardInterrupt:
        print("interrupted (SIGINT); no partial file is left", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
