"""The batch command line: ``crf-lab refine`` (also ``python -m lab refine``).

Refines one image, a folder or a glob of images with mean-field inference and writes label maps (palette
PNG), optionally Q (.npy) and an overlay, into an output folder. A bad file is reported (which file, what is
wrong) and skipped; the others are still processed; the exit code says whether anything failed
(0 all good, 1 some files failed, 2 bad usage). Inputs are never overwritten.

Example:
    crf-lab refine photos/ --out refined/                      # built-in colour-cluster unary
    crf-lab refine "shots/*.jpg" --prob-dir probs/ --out out/  # probs/NAME.npy per image
    crf-lab refine img.png --annotation-dir ann/ --params crf_params.json --save-q --overlay --out out/
"""

from __future__ import annotations

import argparse
import glob
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["main"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
_OVERRIDES = ("theta_alpha", "theta_beta", "theta_gamma", "w_bilateral", "w_spatial", "normalize")


class UsageError(Exception):
    """Bad arguments: reported with exit code 2."""


def _collect(inputs: list[str]) -> list[Path]:
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files.extend(sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()))
        elif p.is_file():
            files.append(p)
        else:
            matches = sorted(Path(m) for m in glob.glob(item))
            if not matches:
                raise UsageError(f"inputs: {item!r} is not a file, a folder or a glob that matches anything")
            files.extend(m for m in matches if m.is_file())
    seen, unique = set(), []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def _find_companion(folder: Path, stem: str, suffixes: tuple[str, ...], what: str) -> Path:
    for s in suffixes:
        candidate = folder / f"{stem}{s}"
        if candidate.is_file():
            return candidate
    raise ValueError(f"no {what} named {stem}{{{','.join(suffixes)}}} in {folder}")


def _params(args: argparse.Namespace):
    from lab.crf import CRFParams
    from lab.explore import params_from_json

    base: dict = {}
    extra: dict = {}
    if args.params:
        try:
            text = Path(args.params).read_text()
        except OSError as exc:
            raise UsageError(f"--params: cannot read {args.params} ({exc.strerror})") from None
        try:
            params, extra = params_from_json(text)
        except (ValueError, TypeError) as exc:
            raise UsageError(f"--params {args.params}: {exc}") from None
        base = {name: getattr(params, name) for name in (*_OVERRIDES, "compat", "window_size")}
    for name in _OVERRIDES:
        value = getattr(args, name)
        if value is not None:
            base[name] = value
    try:
        params = CRFParams(**base)
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None
    iterations = args.iterations if args.iterations is not None else int(extra.get("iterations", 5))
    if iterations < 0:
        raise UsageError(f"--iterations: expected an integer >= 0, got {iterations}")
    return params, iterations


def _unary(args: argparse.Namespace, path: Path, image: np.ndarray):
    from lab.data import load_image
    from lab.unary import coarse_colour_clusters, load_probability_map, unary_from_annotation

    h, w = image.shape[:2]
    if args.prob_dir:
        source = _find_companion(Path(args.prob_dir), path.stem, (".npy", ".npz"), "probability map")
        unary, notes = load_probability_map(str(source), (h, w), name=str(source))
        return unary, notes
    if args.annotation_dir:
        source = _find_companion(Path(args.annotation_dir), path.stem, IMAGE_SUFFIXES, "annotation")
        ann = load_image(str(source))
        if ann.shape[:2] != (h, w):
            from PIL import Image

            ann = np.asarray(Image.fromarray(ann).resize((w, h), Image.Resampling.NEAREST))
        unary, _ = unary_from_annotation(ann, args.confidence)
        return unary, [f"annotation {source.name}"]
    unary, _ = coarse_colour_clusters(image, n_labels=args.labels, block=args.block, confidence=args.confidence)
    return unary, ["colour-cluster unary"]


def refine(args: argparse.Namespace) -> int:
    """Run ``refine``; returns the exit code."""
    import torch

    from lab.crf import mean_field
    from lab.data import load_image
    from lab.explore import fit_image, label_png, to_tensor
    from lab.viz import overlay

    files = _collect(args.inputs)
    if not files:
        raise UsageError(f"inputs: no images ({', '.join(IMAGE_SUFFIXES)}) found in {args.inputs}")
    params, iterations = _params(args)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out: {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    inputs = {f.resolve() for f in files}
    failures = 0
    for i, path in enumerate(files, 1):
        prefix = f"[{i}/{len(files)}] {path}"
        t0 = time.perf_counter()
        try:
            targets = {"labels": out / f"{path.stem}_labels.png"}
            if args.save_q:
                targets["q"] = out / f"{path.stem}_q.npy"
            if args.overlay:
                targets["overlay"] = out / f"{path.stem}_overlay.png"
            clash = [t for t in targets.values() if t.resolve() in inputs]
            if clash:
                raise ValueError(f"output {clash[0]} would overwrite an input; choose another --out")
            image = load_image(str(path))
            if args.max_side:
                image = fit_image(image, args.max_side)
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
            q = trace.q[0]
            labels = q.argmax(0).numpy()
            targets["labels"].write_bytes(label_png(labels))
            if "q" in targets:
                np.save(targets["q"], q.numpy().astype(np.float32))
            if "overlay" in targets:
                from PIL import Image

                Image.fromarray(overlay(image, labels)).save(targets["overlay"])
            ms = 1e3 * (time.perf_counter() - t0)
            print(
                f"{prefix}: ok, {image.shape[1]}x{image.shape[0]}, L={q.shape[0]}, {ms:.0f} ms ({'; '.join(notes)})",
                file=sys.stderr,
            )
        except (ValueError, TypeError, OSError, RuntimeError, MemoryError) as exc:
            failures += 1
            print(f"{prefix}: FAILED: {exc}", file=sys.stderr)
    print(
        f"{len(files) - failures} of {len(files)} images refined into {out}"
        + (f"; {failures} failed" if failures else ""),
        file=sys.stderr,
    )
    return 1 if failures else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crf-lab", description="CRF-RNN Lab command line.")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser(
        "refine",
        help="refine images with mean-field inference in the dense CRF",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("inputs", nargs="+", help="image files, folders of images, or globs (quote them)")
    r.add_argument("--out", required=True, help="output folder (created); inputs are never overwritten")
    u = r.add_argument_group("unary (default: built-in colour clusters)")
    src = u.add_mutually_exclusive_group()
    src.add_argument("--prob-dir", help="folder of NAME.npy/.npz probability or score maps, (H,W,L) or (L,H,W)")
    src.add_argument("--annotation-dir", help="folder of NAME.png annotations: colours = labels, black = unknown")
    u.add_argument("--labels", type=int, default=4, help="colour clusters: number of labels L (default 4)")
    u.add_argument("--block", type=int, default=16, help="colour clusters: tile size in pixels (default 16)")
    u.add_argument(
        "--confidence", type=float, default=0.6, help="probability of the clustered / annotated label (default 0.6)"
    )
    c = r.add_argument_group("CRF (a --params JSON from the app, then these flags override it)")
    c.add_argument("--params", help="parameters JSON (the app's download)")
    c.add_argument("--theta-alpha", dest="theta_alpha", type=float, help="bilateral spatial width θα, px (80)")
    c.add_argument("--theta-beta", dest="theta_beta", type=float, help="bilateral colour width θβ, 0..255 (13)")
    c.add_argument("--theta-gamma", dest="theta_gamma", type=float, help="smoothness width θγ, px (3)")
    c.add_argument("--w-bilateral", dest="w_bilateral", type=float, help="bilateral weight (10)")
    c.add_argument("--w-spatial", dest="w_spatial", type=float, help="spatial weight (3)")
    c.add_argument("--normalize", choices=("after", "symmetric", "none"), help="kernel normalisation (after)")
    c.add_argument("--iterations", type=int, help="mean-field iterations T (5)")
    c.add_argument(
        "--message-passing",
        dest="message_passing",
        default="lattice",
        choices=("lattice", "exact", "window"),
        help="lattice (default), exact O(N²), window",
    )
    c.add_argument("--backend", default="auto", choices=("auto", "torch", "triton"), help="lattice backend")
    c.add_argument(
        "--max-side",
        dest="max_side",
        type=int,
        default=0,
        help="downscale so the longer side is at most this (0 = keep the size)",
    )
    o = r.add_argument_group("outputs")
    o.add_argument("--save-q", action="store_true", help="also write Q as NAME_q.npy, (L, H, W) float32")
    o.add_argument("--overlay", action="store_true", help="also write the labels over the image, NAME_overlay.png")
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
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
