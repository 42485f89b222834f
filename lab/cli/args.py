"""The command line's options: the argparse parser and the checks of every value before any image is read.

:func:`build_parser` builds ``crf-lab`` with its subcommands ``refine`` (its ``--help`` text is
:data:`DESCRIPTION`) and ``fit`` (:func:`add_fit_parser`, :data:`FIT_DESCRIPTION`; its values are checked by
:func:`lab.cli.fit.check_fit_options`); :func:`check_options` refuses a bad value with a :class:`UsageError`
naming the option and what it expects (exit code 2). The CRF parameters (``--params`` and the θ / weight flags)
are read by :mod:`lab.cli.params`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lab.errors import LabError

# O(N²) message passing, here and in the app: about a second per iteration at this size on 2 cores; an
# 800 × 600 image would take hours
EXACT_MAX_PIXELS = 96 * 96

# what ``crf-lab refine --help`` prints above the options
DESCRIPTION = """The batch command line: ``crf-lab refine`` (also ``python -m lab refine``).

Refines one image, a folder or a glob of images with mean-field inference and writes label maps (palette
PNG), optionally Q (.npy) and an overlay, into an output folder. A bad file is reported (which file, what is
wrong) and skipped; the others are still processed. Bad options are refused before any image is read.
Under each image's line, "unary: ..." says what its unary looks like (lab.unary.unary_report on at most
128 × 128 sampled pixels: log-probabilities or a common mistake, near one-hot share, mean entropy), then one
"warning: ..." line per problem found (e.g. scores in [0, 1] where log-probabilities belong).

Exit codes: 0 all good; 1 some inputs failed or were unreadable, or the disk filled up; 2 bad usage
(including two inputs that would write the same output names); 130 / 143 stopped by SIGINT / SIGTERM.

Sizes: the CRF runs on the image downscaled so its longer side is at most the working size (--working-size,
else the --params file's working_size, else {working_size}; 0 = the image's own size); the label map, the overlay and
Q are then written at the input's size: Q upsampled bilinearly, the labels its arg-max (--output-size
working writes them at the working size instead). --overlay draws a legend of the classes present (the VOC
class names with --unary voc, else label numbers); --before-after puts the unary's arg-max beside the result.

Defaults: θα {p.theta_alpha:g} px, θβ {p.theta_beta:g}, θγ {p.theta_gamma:g} px, w bilateral {p.w_bilateral:g}, \
w spatial {p.w_spatial:g}, T {iterations}, working size {working_size}: the app's and
lab.crf.CRFParams', from lab.explore.defaults (the app starts at a working size of {app_working_size}, for live
knobs); a --params JSON (the app's download, with the working size it ran at) replaces them, the flags
replace the file's values.

Files: outputs are written as NAME_labels.png, NAME_q.npy and NAME_overlay.png (NAME = the input's stem)
under a temporary name in the output folder and renamed into place once all of an image's outputs are
written, so an output file is either complete or absent, also after a full disk, Ctrl-C or SIGTERM. Inputs
are never overwritten; the PNGs this tool writes carry a "Software: crf-lab" tag and are never taken as
inputs (so refining a folder into itself is safe). --skip-existing resumes an interrupted batch. A full
disk stops the batch, naming the file. Images above --max-pixels are refused from their header, before
decoding; --message-passing exact is refused above 96 × 96 pixels (it is O(N²)). Label maps hold at most
256 labels (a palette PNG's pixel values are 0..255).

Record: when the run ends (also after a failure, Ctrl-C or a full disk) the output folder gets summary.json
and summary.csv: per input its status (ok, failed, skipped, existing, not reached), size, working size,
labels, unary source and verdict, warnings, time in ms, the share of pixels the CRF relabelled (changed, at
the working size), the files written or the error, in the inputs' order; summary.json also holds the
command and the parameters used (readable by --params). A resumed run keeps the earlier entries of the
images it skips. A summary.json / summary.csv that crf-lab did not
write is never overwritten: the run is refused.

Batches: a progress bar shows on a terminal (not in logs or pipes; --quiet hides it and the lines of
images refined without a warning). --workers N refines in N single-threaded processes on this machine; this
process writes every file and the record, which are the same as with one. Under torchrun (RANK and
WORLD_SIZE set), each rank refines files[rank::world] of the sorted inputs into the same --out, writes its
part of the record as summary.rank<k>.json and merges every part of the run into summary.json / .csv, so
the last rank to end leaves the complete record; the inputs of a rank that wrote none are "not reached",
naming it. No process group is needed. torchrun ends every rank once one exits with an error, so a rank
whose images partly failed waits for the other ranks to end before it exits with status 1.

Example:
    crf-lab refine photos/ --out refined/                      # built-in colour-cluster unary
    crf-lab refine photos/ --unary voc --out refined/          # the bundled 21-class VOC network
    crf-lab refine "shots/*.jpg" --prob-dir probs/ --out out/  # probs/NAME.npy per image
    crf-lab refine img.png --annotation-dir ann/ --params crf_params.json --save-q --overlay --out out/
    crf-lab refine photos/ --out refined/ --skip-existing      # finish an interrupted run
    crf-lab refine photos/ --unary voc --before-after --out out/  # overlay: unary | CRF, with class names
    crf-lab refine photos/ --out refined/ --workers 4          # four processes on this machine
    torchrun --nproc_per_node=8 -m lab.cli refine photos/ --out refined/  # one eighth of the inputs per rank
    crf-lab refine scans/ --volume --prob-dir probs/ --out seg/ --overlay  # NIfTI / .npy volumes, in 3-D

Volumes (--volume): the inputs are NIfTI (.nii, .nii.gz; needs nibabel, the 'volumes' extra) or .npy
volumes, refined in 3-D at once: .npy (D, H, W) is one channel, (C, D, H, W) C channels, (H, W) a 2-D
image; NIfTI (X, Y, Z) or (X, Y, Z, C) as stored. The spacing comes from the NIfTI header (usually mm) or
--spacing, and θα, θγ are in its units (defaults 10 and 3 unless --params or the flag says otherwise); θβ
is in the guide's own units (Hounsfield units for CT), by default a tenth of each channel's 1-99 % range.
θα, θγ may be one number or one per axis ("6,6,6"), θβ one per channel. The unary is --prob-dir
(NAME.npy/.npz/.nii(.gz), (L, *spatial) or (*spatial, L) on the same grid) or intensity clusters (--labels,
--block in voxels, default 4). Outputs: NAME_labels.nii.gz (.nii) in the input's space for NIfTI inputs,
NAME_labels.npy for .npy inputs, NAME_q.npy (L, *spatial) and NAME_overlay.png (the three orthogonal slices
through the centre). --max-pixels caps the voxels, from the header.
"""


class UsageError(LabError):
    """Bad arguments: reported with exit code 2."""


def _numbers(text: str) -> float | tuple[float, ...]:
    """A θ or spacing flag: one number, or comma-separated numbers (one per axis or channel)."""
    parts = [p.strip() for p in text.split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or comma-separated numbers, got {text!r}") from None
    return values[0] if len(values) == 1 else values


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


def check_options(args: argparse.Namespace) -> None:
    """Every option's value, before any image is read; each error names the option and what it expects."""
    import torch

    from lab.lattice import resolve_backend
    from lab.unary.sources import MAX_LABELS

    if not 2 <= args.labels <= MAX_LABELS:
        raise UsageError(
            f"--labels: expected an integer from 2 to {MAX_LABELS} (label maps are palette PNGs), got {args.labels}"
        )
    if args.volume:
        for option, given in (
            ("--unary voc", args.unary == "voc"),
            ("--annotation-dir", args.annotation_dir is not None),
            ("--working-size / --max-side", args.working_size is not None),
            ("--message-passing window", args.message_passing == "window"),
        ):
            if given:
                raise UsageError(
                    f"{option}: not for --volume (volumes take --prob-dir or intensity clusters, lattice or exact "
                    "message passing, and keep their size: resample them first)"
                )
    if args.before_after:
        if args.volume:
            raise UsageError("--before-after: not for --volume (a volume's overlay is its three orthogonal slices)")
        args.overlay = True
    if args.workers < 1:
        raise UsageError(f"--workers: expected a number of processes >= 1, got {args.workers}")
    if args.spacing is not None and not args.volume:
        raise UsageError("--spacing: applies to --volume only (a photo's positions are in pixels)")
    if args.spacing is not None:
        values = args.spacing if isinstance(args.spacing, tuple) else (args.spacing,)
        if not all(0 < v < float("inf") for v in values):
            raise UsageError(f"--spacing: expected positive finite numbers (one, or one per axis), got {args.spacing}")
    if args.block is not None and args.block < 1:
        raise UsageError(f"--block: expected a tile size in pixels >= 1, got {args.block}")
    temperature = 1.0 if args.unary_temperature is None else args.unary_temperature
    if not 0 < temperature < float("inf"):  # also refuses NaN
        raise UsageError(f"--unary-temperature: expected a finite number > 0, got {temperature}")
    if args.unary_temperature is not None and args.unary != "voc":
        raise UsageError("--unary-temperature: applies to --unary voc only (the other unaries have no logits)")
    if args.unary == "voc":
        from lab.unary.voc import voc_status

        ok, reason = voc_status()
        if not ok:
            raise UsageError(f"--unary voc: unavailable here: {reason}")
    if args.prob_dir is None and args.annotation_dir is None:
        low, why = 1 / args.labels, f" (1/L for --labels {args.labels})"
    else:
        low, why = 0.0, ""
    if not low < args.confidence < 1:  # also refuses NaN
        raise UsageError(f"--confidence: expected a probability in ({low:.3g}, 1){why}, got {args.confidence}")
    if args.working_size is not None and args.working_size != 0 and args.working_size < 8:
        raise UsageError(
            f"--working-size / --max-side: expected 0 (keep the size) or a size in pixels >= 8, got {args.working_size}"
        )
    for option, folder in (("--prob-dir", args.prob_dir), ("--annotation-dir", args.annotation_dir)):
        if folder is not None and not Path(folder).is_dir():
            raise UsageError(f"{option}: {folder} is not a folder")
    try:
        resolve_backend(args.backend, torch.device("cpu"))  # crf-lab computes on the CPU
    except (RuntimeError, ValueError) as exc:
        raise UsageError(f"--backend {args.backend}: {exc}") from None


def build_parser() -> argparse.ArgumentParser:
    """``crf-lab`` and its ``refine`` and ``fit`` subcommands, with every option's help."""
    from lab.data.photos import DEFAULT_MAX_PIXELS
    from lab.explore.defaults import APP_WORKING_SIZE, DEFAULT_ITERATIONS, DEFAULT_WORKING_SIZE
    from lab.explore.defaults import DEFAULT_PARAMS as D

    parser = argparse.ArgumentParser(prog="crf-lab", description="CRF-RNN Lab command line.")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser(
        "refine",
        help="refine images with mean-field inference in the dense CRF",
        description=DESCRIPTION.format(
            p=D, iterations=DEFAULT_ITERATIONS, working_size=DEFAULT_WORKING_SIZE, app_working_size=APP_WORKING_SIZE
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument(
        "inputs", nargs="+", help="image files, folders of images (not searched recursively), or globs (quote them)"
    )
    r.add_argument("--out", required=True, help="output folder (created); inputs are never overwritten")
    u = r.add_argument_group("unary (default: built-in colour clusters, --unary clusters)")
    src = u.add_mutually_exclusive_group()
    src.add_argument(
        "--unary",
        choices=("clusters", "voc"),
        default="clusters",
        help="clusters (the default): colour clusters of the image itself, labels without meaning; voc: the "
        "bundled DeepLabV3 network, 21 PASCAL VOC classes (needs the mediapipe extra)",
    )
    src.add_argument("--prob-dir", help="folder of NAME.npy/.npz probability or score maps, (H,W,L) or (L,H,W)")
    src.add_argument("--annotation-dir", help="folder of NAME.png annotations: colours = labels, black = unknown")
    u.add_argument(
        "--unary-temperature",
        dest="unary_temperature",
        type=float,
        help="--unary voc: U = log_softmax(logits / T), T > 0; T > 1 softens the network's confidence (default 1.0)",
    )
    u.add_argument("--labels", type=int, default=4, help="colour clusters: number of labels L, 2..256 (default 4)")
    u.add_argument(
        "--block", type=int, help="colour / intensity clusters: tile size in pixels (voxels), >= 1 (default 16; 4)"
    )
    u.add_argument(
        "--confidence",
        type=float,
        default=0.6,
        help="probability of the clustered label, in (1/L, 1), or of the annotated one, in (0, 1) (default 0.6)",
    )
    c = r.add_argument_group(
        "CRF (a --params JSON from the app, then these flags override it; the defaults in parentheses are the "
        "app's and lab.crf.CRFParams', from lab.explore.defaults)"
    )
    c.add_argument("--params", help="parameters JSON (the app's download), its working_size included")
    c.add_argument(
        "--theta-alpha",
        dest="theta_alpha",
        type=_numbers,
        help=f"bilateral spatial width θα, px ({D.theta_alpha:g}), or a,b,c per axis",
    )
    c.add_argument(
        "--theta-beta",
        dest="theta_beta",
        type=_numbers,
        help=f"bilateral colour width θβ, 0..255 ({D.theta_beta:g}), or a,b per channel",
    )
    c.add_argument(
        "--theta-gamma",
        dest="theta_gamma",
        type=_numbers,
        help=f"smoothness width θγ, px ({D.theta_gamma:g}), or a,b,c per axis",
    )
    c.add_argument("--w-bilateral", dest="w_bilateral", type=float, help=f"bilateral weight ({D.w_bilateral:g})")
    c.add_argument("--w-spatial", dest="w_spatial", type=float, help=f"spatial weight ({D.w_spatial:g})")
    c.add_argument("--normalize", choices=("after", "symmetric", "none"), help=f"kernel normalisation ({D.normalize})")
    c.add_argument("--iterations", type=int, help=f"mean-field iterations T, >= 0 ({DEFAULT_ITERATIONS})")
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
        "--working-size",
        "--max-side",
        dest="working_size",
        type=int,
        help="refine at this size: downscale so the longer side is at most this, >= 8; 0 = the image's own size "
        f"(default: the --params file's working_size, else {DEFAULT_WORKING_SIZE}); see --output-size",
    )
    c.add_argument(
        "--max-pixels",
        dest="max_pixels",
        type=_max_pixels,
        default=DEFAULT_MAX_PIXELS,
        help=f"refuse images with more pixels than this, read from the header before decoding "
        f"(default {DEFAULT_MAX_PIXELS}; 0 or none: no cap)",
    )
    v = r.add_argument_group("volumes")
    v.add_argument(
        "--volume",
        action="store_true",
        help="the inputs are NIfTI (.nii, .nii.gz) or .npy volumes, refined in 3-D (see Volumes above)",
    )
    v.add_argument(
        "--spacing",
        type=_numbers,
        help="voxel size per axis in the array's axis order, or one number (default: the NIfTI header's, or 1)",
    )
    o = r.add_argument_group("outputs")
    o.add_argument(
        "--output-size",
        dest="output_size",
        choices=("input", "working"),
        default="input",
        help="input (the default): label map, overlay and Q at the input's size (Q upsampled bilinearly from the "
        "working size, labels its arg-max); working: at the size the CRF ran at",
    )
    o.add_argument(
        "--save-q",
        action="store_true",
        help="also write Q as NAME_q.npy, (L, H, W) float32 (at the input's size: L·H·W·4 bytes)",
    )
    o.add_argument(
        "--overlay",
        action="store_true",
        help="also write the labels over the image with a legend of the classes present (the VOC class names, "
        "else the label numbers), NAME_overlay.png",
    )
    o.add_argument(
        "--before-after",
        dest="before_after",
        action="store_true",
        help="the overlay as unary arg-max | CRF result side by side (implies --overlay)",
    )
    o.add_argument(
        "--legend",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the overlay's legend (default: on; --no-legend leaves it off)",
    )
    o.add_argument(
        "--skip-existing",
        dest="skip_existing",
        action="store_true",
        help="skip images whose outputs (all that this run would write) exist: resumes an interrupted batch",
    )
    b = r.add_argument_group("batches (see Batches above)")
    b.add_argument(
        "--workers",
        type=int,
        default=1,
        help="refine in N single-threaded worker processes on this machine (default 1: in this process, with "
        "PyTorch's threads); the outputs and the record are the same",
    )
    b.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bar and no line for an input refined without a warning (failures, skips and warnings "
        "still print)",
    )
    add_fit_parser(sub)
    return parser


# what ``crf-lab fit --help`` prints above the options
FIT_DESCRIPTION = """Learn the CRF's parameters (θ, kernel weights, µ) from labelled images (lab.fit_crf).

Images in --images are matched by name to label maps NAME.png in --labels: a paletted PNG's pixel indices
(PASCAL VOC's SegmentationClass) or a grayscale PNG's values are the class ids, 255 = ignore; RGB colour
PNGs are refused. The unary is fixed: --prob-dir NAME.npy/.npz maps (the image's size) or the bundled VOC
network (--unary voc). Held-out images (--val-fraction, or --val-images/--val-labels) decide early stopping
and the mIoU before -> after. The result is the JSON that `crf-lab refine --params` and the app read,
written only at the end, atomically; an existing --out is replaced only with --force. Mismatched names,
sizes or label values are refused (exit 2) before fitting, naming the file. See docs/fit.md.

Example:
    crf-lab fit --images imgs/ --labels labels/ --prob-dir probs/ --out params.json
    crf-lab fit --images imgs/ --labels labels/ --unary voc --val-fraction 0.25 --out params.json
    crf-lab refine imgs/ --prob-dir probs/ --params params.json --out refined/
"""


def add_fit_parser(sub) -> None:
    """The ``fit`` subcommand's options (run by :func:`lab.cli.fit.fit`)."""
    from lab.data.photos import DEFAULT_MAX_PIXELS

    f = sub.add_parser(
        "fit",
        help="learn the CRF's parameters from labelled images",
        description=FIT_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    f.add_argument("--images", required=True, help="folder of images")
    f.add_argument("--labels", required=True, help="folder of label maps NAME.png (class ids, 255 = ignore)")
    f.add_argument("--out", required=True, help="the parameters JSON to write (refused if it exists, see --force)")
    f.add_argument("--force", action="store_true", help="replace an existing --out")
    src = f.add_mutually_exclusive_group(required=True)
    src.add_argument("--prob-dir", dest="prob_dir", help="folder of NAME.npy/.npz probability or score maps")
    src.add_argument("--unary", choices=("voc",), help="voc: the bundled 21-class VOC network (mediapipe extra)")
    f.add_argument("--unary-temperature", dest="unary_temperature", type=float, help="--unary voc: T > 0 (1.0)")
    f.add_argument("--params", help="start from this parameters JSON (default: the CRFParams defaults)")
    f.add_argument("--iterations", type=int, help="mean-field iterations T, >= 1 (the --params file's, else 5)")
    f.add_argument("--steps", type=int, default=100, help="most gradient steps, >= 0 (100)")
    f.add_argument("--max-seconds", dest="max_seconds", type=float, help="stop after this many seconds")
    f.add_argument(
        "--learn", default="weights,compat,bandwidths", help="what moves: a subset of weights,compat,bandwidths (all)"
    )
    v = f.add_argument_group("validation (early stopping and the mIoU before -> after)")
    v.add_argument("--val-fraction", dest="val_fraction", type=float, default=0.0, help="hold out this share (0)")
    v.add_argument("--monitor", choices=("loss", "miou"), default="loss", help="what early stopping watches (loss)")
    v.add_argument("--val-images", dest="val_images", help="folder of validation images (their maps in --prob-dir)")
    v.add_argument("--val-labels", dest="val_labels", help="folder of their label maps")
    f.add_argument("--seed", type=int, default=0, help="seed of the --val-fraction split (0)")
    f.add_argument(
        "--max-side",
        dest="max_side",
        type=int,
        default=0,
        help="downscale images, labels and maps so the longer side is at most this, >= 8 (0 = keep)",
    )
    f.add_argument(
        "--max-pixels",
        dest="max_pixels",
        type=_max_pixels,
        default=DEFAULT_MAX_PIXELS,
        help=f"refuse images with more pixels than this (default {DEFAULT_MAX_PIXELS}; 0 or none: no cap)",
    )
