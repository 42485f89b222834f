"""``crf-lab fit``'s inputs: images matched to label maps (and probability maps) by name, read and checked.

:func:`match` pairs the images of ``--images`` with the ``NAME.png`` label maps of ``--labels`` (and
``NAME.npy`` / ``.npz`` of ``--prob-dir``), listing every missing or extra name; :func:`read_label_map`
reads a label PNG (palette indices or grey values are the class ids, 255 = ignore; RGB is refused);
:func:`load_set` reads everything and checks sizes (image, labels and probability map must agree) and
label values against L. Every problem is a :class:`~lab.cli.args.UsageError` naming the file.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lab.cli.args import UsageError
from lab.cli.plan import collect

__all__ = ["IGNORE", "LabelledImage", "load_set", "match", "read_label_map"]

IGNORE = 255  # the label value of unlabelled pixels (PASCAL VOC's "void")
_SHOWN = 8  # names listed in a message before "..."


@dataclass
class LabelledImage:
    """One image ready for the fit."""

    name: str
    image: np.ndarray  # (H, W, 3) uint8
    labels: np.ndarray  # (H, W) int64, IGNORE for unlabelled
    unary: object | None  # (1, L, H, W) tensor, or None for --unary voc (made from the image)


def _names(stems: list[str]) -> str:
    return ", ".join(stems[:_SHOWN]) + (f", ... ({len(stems)} in all)" if len(stems) > _SHOWN else "")


def _stems(files: list[Path], option: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for f in files:
        if f.stem in out:
            raise UsageError(f"{option}: two files named {f.stem}: {out[f.stem].name} and {f.name}; rename one")
        out[f.stem] = f
    return out


def _listed(folder: str, option: str, suffixes: tuple[str, ...] | None) -> dict[str, Path]:
    path = Path(folder)
    if not path.is_dir():
        raise UsageError(f"{option}: {folder} is not a folder")
    found = collect([folder])
    if found.problems:
        lines = "\n".join(f"  {entry}: {why}" for entry, why in found.problems)
        raise UsageError(f"{option}: files that cannot be read:\n{lines}")
    files = found.files + found.own_outputs  # label maps written by crf-lab refine are fine labels
    if suffixes is not None:
        files = [f for f in files if f.suffix.lower() in suffixes]
    return _stems(sorted(files), option)


Pairs = list[tuple[Path, Path, "Path | None"]]


def match(images_dir: str, labels_dir: str, prob_dir: str | None, what: str = "") -> Pairs:
    """(image, label map, probability map or None) per name; a UsageError listing missing or extra names."""
    io, lo = f"--{what}images", f"--{what}labels"
    images = _listed(images_dir, io, None)
    labels = _listed(labels_dir, lo, (".png",))
    if not images:
        raise UsageError(f"{io}: no images found in {images_dir}")
    missing = sorted(set(images) - set(labels))
    extra = sorted(set(labels) - set(images))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"images without a label map NAME.png in {labels_dir}: {_names(missing)}")
        if extra:
            parts.append(f"label maps without an image in {images_dir}: {_names(extra)}")
        raise UsageError(f"{lo}: the names do not match ({'; '.join(parts)})")
    probs: dict[str, Path] = {}
    if prob_dir is not None:
        folder = Path(prob_dir)
        for stem in images:
            for suffix in (".npy", ".npz"):
                if (folder / f"{stem}{suffix}").is_file():
                    probs[stem] = folder / f"{stem}{suffix}"
                    break
        lacking = sorted(set(images) - set(probs))
        if lacking:
            raise UsageError(f"--prob-dir: no probability map NAME.npy/.npz in {prob_dir} for {_names(lacking)}")
    return [(images[s], labels[s], probs.get(s)) for s in sorted(images)]


def read_label_map(path: Path) -> np.ndarray:
    """A label PNG as (H, W) int64 class ids: a palette PNG's indices, or a grayscale PNG's values.

    Raises:
        UsageError: unreadable, or a colour (RGB / RGBA) image, naming the file and what is expected.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode in ("P", "L", "I", "I;16", "I;16B", "I;16L", "1"):
                return np.asarray(im, dtype=np.int64) if mode != "1" else np.asarray(im).astype(np.int64)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise UsageError(f"--labels: cannot read {path} ({exc})") from None
    raise UsageError(
        f"--labels: {path} is a {mode} colour image; expected a label map: a paletted PNG whose pixel indices "
        f"are the class ids (PASCAL VOC style) or a grayscale PNG whose values are the class ids, {IGNORE} = ignore"
    )


def _resize_labels(labels: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    im = Image.fromarray(labels.astype(np.int32), mode="I")
    return np.asarray(im.resize((hw[1], hw[0]), Image.Resampling.NEAREST), dtype=np.int64)


def _size(shape: tuple[int, ...]) -> str:
    return f"{shape[1]} × {shape[0]}"


def load_set(pairs: Pairs, args: argparse.Namespace) -> tuple[list[LabelledImage], int]:
    """Read every image, label map and probability map; check sizes and label values. Returns them and L."""
    import torch
    import torch.nn.functional as F

    from lab.data import load_image
    from lab.explore import fit_image
    from lab.unary import load_probability_map

    out, num_labels = [], 21 if args.unary == "voc" else None
    for image_path, label_path, prob_path in pairs:
        try:
            image = load_image(str(image_path), max_pixels=args.max_pixels)
        except (OSError, ValueError) as exc:
            why = str(exc).removeprefix(f"{image_path}: ")
            raise UsageError(f"--images: cannot read {image_path} ({why})") from None
        hw = image.shape[:2]
        labels = read_label_map(label_path)
        if labels.shape != hw:
            raise UsageError(
                f"--labels: {label_path} is {_size(labels.shape)} pixels but its image {image_path} is {_size(hw)}"
            )
        unary = None
        if prob_path is not None:
            try:
                unary, notes = load_probability_map(str(prob_path), hw, name=str(prob_path))
            except (OSError, ValueError) as exc:
                raise UsageError(f"--prob-dir: {exc}") from None
            resized = next((n for n in notes if n.startswith("resized from")), None)
            if resized:
                got = re.search(r"\((\d+), (\d+)\)", resized)
                size = f"{got[2]} × {got[1]}" if got else "another size"
                raise UsageError(
                    f"--prob-dir: {prob_path} is {size} pixels but its image {image_path} is {_size(hw)}; "
                    "the probability map must have the image's size"
                )
            if num_labels is None:
                num_labels = unary.shape[1]
            elif unary.shape[1] != num_labels:
                raise UsageError(f"--prob-dir: {prob_path} has {unary.shape[1]} labels, the first map {num_labels}")
        bad = np.unique(labels[(labels != IGNORE) & ((labels < 0) | (labels >= num_labels))])
        if bad.size:
            shown = ", ".join(str(v) for v in bad[:5]) + (", ..." if bad.size > 5 else "")
            raise UsageError(
                f"--labels: {label_path} holds the values {shown}; expected class ids 0..{num_labels - 1} "
                f"(L = {num_labels} from the unary) or {IGNORE} (ignore)"
            )
        if args.max_side and max(hw) > args.max_side:
            image = fit_image(image, args.max_side)
            small = image.shape[:2]
            labels = _resize_labels(labels, small)
            if unary is not None:
                unary = F.interpolate(unary, size=small, mode="bilinear", align_corners=False)
        out.append(LabelledImage(image_path.stem, image, labels, None if unary is None else unary.to(torch.float32)))
    return out, int(num_labels)
