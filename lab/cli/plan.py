"""What a run will read and write, settled before any image is refined.

:func:`collect` finds the images that the inputs name (files, folders, globs), reports entries that cannot
be read as files (symlink loops, broken links, FIFOs, unreadable files) and leaves out the PNGs this tool
wrote, recognised by their "Software: crf-lab refine" tag, so that refining a folder into itself is safe.
:func:`plan_outputs` gives each image its output names (NAME_labels.png, NAME_q.npy, NAME_overlay.png) and
refuses, as a :class:`UsageError`, two inputs that would write the same file or an output that would
overwrite an input or a companion file; :func:`outputs_complete` is what ``--skip-existing`` asks.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import glob
import os
import stat
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from lab.cli.args import UsageError
from lab.cli.writing import SOFTWARE_TAG
from lab.data.volumes import NIFTI_SUFFIXES, NIFTI_TAG, volume_stem, volume_suffix

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif")
# looked for in folders too, so that they get a clear "not supported" instead of being ignored
_REFUSED_SUFFIXES = (".svg",)
OUTPUT_SUFFIXES = {"labels": "_labels.png", "q": "_q.npy", "overlay": "_overlay.png"}


@dataclass
class Inputs:
    """What the inputs named: the images to refine, the entries skipped and why, this tool's own outputs."""

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
                    if key == b"Software" and value.startswith(SOFTWARE_TAG.encode()):
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


def _is_own_volume_output(path: Path, stems: set[str]) -> bool:
    """Whether ``path`` is a volume this tool wrote.

    That is NAME_labels / NAME_q beside an input NAME, or a NIfTI whose header's descrip field carries
    :data:`NIFTI_TAG` (read from the header only).
    """
    stem = volume_stem(path)
    for ending in ("_labels", "_q"):
        if stem.endswith(ending) and stem[: -len(ending)] in stems:
            return True
    if volume_suffix(path) in NIFTI_SUFFIXES:
        try:
            import nibabel as nib

            descrip = bytes(nib.load(os.fspath(path)).header["descrip"].item()).rstrip(b"\0")
        except Exception:  # no nibabel, or not readable: certainly not ours; reading it reports the problem
            return False
        return descrip.startswith(NIFTI_TAG.encode())
    return False


def _add_candidate(found: Inputs, path: Path) -> None:
    problem = _entry_problem(path)
    if problem == "a folder":
        return  # folders are only refined when given themselves; their subfolders are not searched
    if problem:
        found.problems.append((str(path), problem))
    elif _is_own_output(path):
        found.own_outputs.append(path)
    else:
        found.files.append(path)


def _matches(name: str, volumes: bool) -> bool:
    if volumes:
        return volume_suffix(name) is not None
    return Path(name).suffix.lower() in IMAGE_SUFFIXES + _REFUSED_SUFFIXES


def collect(inputs: list[str], volumes: bool = False) -> Inputs:
    """The images (``volumes``: the volumes) that files, folders (not searched recursively) and globs name.

    Each once, in order. Entries that cannot be read as files go to ``problems``; PNGs (volumes) this tool
    wrote to ``own_outputs``. A name that is no file, folder or matching glob is a :class:`UsageError`.
    """
    found = Inputs()
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
                if _matches(n, volumes):
                    _add_candidate(found, p / n)
        elif os.path.lexists(p):  # a file, or a link that does not lead to one (reported by _add_candidate)
            if not volumes and volume_suffix(p) is not None and not _entry_problem(p):
                found.problems.append((str(p), "a volume (.nii, .nii.gz, .npy): add --volume to refine it in 3-D"))
                continue
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
    if volumes:
        stems = {volume_stem(f) for f in found.files}
        found.own_outputs += [f for f in found.files if _is_own_volume_output(f, stems)]
        found.files = [f for f in found.files if f not in found.own_outputs]
    return found


def count_volumes(inputs: list[str]) -> int:
    """How many volume files the folders among ``inputs`` hold (for the hint when no image is found)."""
    count = 0
    for item in inputs:
        if Path(item).is_dir():
            with contextlib.suppress(OSError), os.scandir(item) as it:
                count += sum(1 for e in it if volume_suffix(e.name) is not None)
    return count


def input_stem(path: Path, args: argparse.Namespace) -> str:
    """NAME of an input, which its outputs and companion files are named after (``ct.nii.gz`` → ``ct``)."""
    return volume_stem(path) if getattr(args, "volume", False) else path.stem


def find_companion(folder: Path, stem: str, suffixes: tuple[str, ...], what: str) -> Path:
    """``folder/STEM.SUFFIX`` for the first suffix that exists; a ValueError naming what is missing."""
    for s in suffixes:
        candidate = folder / f"{stem}{s}"
        if candidate.is_file():
            return candidate
    raise ValueError(f"no {what} named {stem}{{{','.join(suffixes)}}} in {folder}")


def companions(args: argparse.Namespace) -> tuple[Path, tuple[str, ...], str] | None:
    """Where each image's companion file is looked for: (folder, suffixes, what it is), or None."""
    if args.prob_dir:
        if getattr(args, "volume", False):
            return Path(args.prob_dir), (".npy", ".npz", *NIFTI_SUFFIXES), "probability volume"
        return Path(args.prob_dir), (".npy", ".npz"), "probability map"
    if args.annotation_dir:
        return Path(args.annotation_dir), IMAGE_SUFFIXES, "annotation"
    return None


def _targets(path: Path, out: Path, args: argparse.Namespace) -> dict[str, Path]:
    keys = ["labels"] + (["q"] if args.save_q else []) + (["overlay"] if args.overlay else [])
    suffixes = dict(OUTPUT_SUFFIXES)
    if getattr(args, "volume", False):  # label volumes in the input's format: NIfTI beside NIfTI, else .npy
        suffix = volume_suffix(path)
        suffixes["labels"] = f"_labels{suffix if suffix in NIFTI_SUFFIXES else '.npy'}"
    stem = input_stem(path, args)
    return {k: out / f"{stem}{suffixes[k]}" for k in keys}


def plan_outputs(files: list[Path], out: Path, args: argparse.Namespace) -> dict[Path, dict[str, Path]]:
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
    where = companions(args)
    if where:
        folder, suffixes, _ = where
        for f in files:
            for s in suffixes:
                c = folder / f"{input_stem(f, args)}{s}"
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


def prepare_out(out: Path) -> None:
    """Create the ``--out`` folder and check that files can be written into it; a :class:`UsageError` if not."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out: {out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise UsageError(f"--out: cannot write into {out} ({exc.strerror})") from None


def outputs_complete(targets: dict[str, Path]) -> bool:
    """Whether every output file of an image exists and is not empty (``--skip-existing``)."""
    return all(t.is_file() and t.stat().st_size > 0 for t in targets.values())
