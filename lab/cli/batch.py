"""The refine loop: each image read, refined by mean field and written, one failure never stopping the rest.

:func:`refine` runs a whole ``crf-lab refine``: the option checks and the plan first (a
:class:`lab.cli.args.UsageError` before any image is read), then per image its unary (colour clusters, a
probability map, an annotation or the bundled VOC network, loaded once per run) with its
:func:`lab.unary.unary_report` verdict (:func:`unary_summary`), ``mean_field`` on the CPU and its outputs
written all or nothing. A file that cannot be refined is reported on stderr (which file, what is
wrong) and counted; a full disk stops the batch (exit code 1), SIGINT / SIGTERM stop it between images (130 /
143); the last line says how many images are complete and how to resume (``--skip-existing``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from lab.cli.args import EXACT_MAX_PIXELS, UsageError, check_options
from lab.cli.params import crf_settings, mean_field_q
from lab.cli.plan import (
    IMAGE_SUFFIXES,
    collect,
    companions,
    count_volumes,
    find_companion,
    outputs_complete,
    plan_outputs,
    prepare_out,
)
from lab.cli.signals import Interrupted, Signals
from lab.cli.summary import SUMMARY_CSV, SUMMARY_JSON, RunSummary
from lab.cli.volumes import encode_volume_outputs, refine_volume
from lab.cli.writing import StopBatch, encode_outputs, write_outputs

# unary_report reads every value it gets in float64; on at most 128 × 128 pixels (a strided copy of larger
# unaries) it takes ≈ 15 ms at L = 21 on 2 cores against ≈ 70–90 ms on 256 × 256 (measured 2026-12-02), so
# the check stays a few per cent of a refine
REPORT_PIXELS = 128 * 128


def _unary(args: argparse.Namespace, path: Path, image: np.ndarray, voc=None):
    from lab.data import load_image
    from lab.unary import coarse_colour_clusters, load_probability_map, unary_from_annotation

    if voc is not None:
        temperature = 1.0 if args.unary_temperature is None else args.unary_temperature
        unary, _ = voc(image, temperature=temperature)
        return unary, [f"VOC unary, T={temperature:g}"]
    h, w = image.shape[:2]
    where = companions(args)
    source = find_companion(where[0], path.stem, *where[1:]) if where else None
    if args.prob_dir:
        return load_probability_map(str(source), (h, w), name=str(source))
    if args.annotation_dir:
        ann = load_image(str(source), max_pixels=args.max_pixels)
        if ann.shape[:2] != (h, w):
            from PIL import Image

            ann = np.asarray(Image.fromarray(ann).resize((w, h), Image.Resampling.NEAREST))
        unary, _ = unary_from_annotation(ann, args.confidence, name=str(source))
        return unary, [f"annotation {source.name}"]
    block = 16 if args.block is None else args.block
    unary, _ = coarse_colour_clusters(image, n_labels=args.labels, block=block, confidence=args.confidence)
    return unary, ["colour-cluster unary"]


def class_summary(labels: np.ndarray, names: tuple[str, ...], most: int = 4) -> str:
    """The classes present in a label map by share of pixels, e.g. ``"cat 77 %, background 23 %"``.

    Example:
        >>> class_summary(np.array([[8, 8, 8, 0]]), ("background",) + ("x",) * 7 + ("cat",))
        'cat 75 %, background 25 %'
    """
    counts = np.bincount(labels.ravel(), minlength=len(names))
    order = [int(i) for i in np.argsort(-counts, kind="stable") if counts[i]]
    shares = [100 * counts[i] / labels.size for i in order]
    parts = [f"{names[i]} {s:.0f} %" if s >= 0.5 else f"{names[i]} <1 %" for i, s in zip(order, shares, strict=True)]
    return ", ".join(parts[:most]) + (f", +{len(parts) - most} more" if len(parts) > most else "")


def unary_summary(unary) -> list[str]:
    """The unary report's verdict for an image's line: one ``unary: …`` line, then one ``warning: …`` per finding.

    The report reads a strided copy above :data:`REPORT_PIXELS` pixels
    (:func:`lab.explore.voc_view.report_sample`), which the first line then names.

    Example:
        >>> import torch
        >>> p = torch.full((1, 2, 4, 4), 0.5)  # probabilities where U = log p belongs
        >>> lines = unary_summary(p)
        >>> lines[0]
        'unary: probabilities, values 0.5..0.5, near one-hot 0 % of pixels, mean entropy 0.693 of log L = 0.693 nats'
        >>> lines[1][:60]
        'warning: These look like probabilities, not log-probabilitie'
    """
    from lab.explore.voc_view import report_sample
    from lab.unary import unary_report

    sample, stride = report_sample(unary, REPORT_PIXELS)
    r = unary_report(sample)
    where = "" if stride == 1 else f" (sampled: 1 pixel in {stride} × {stride})"
    head = (
        f"unary: {r.kind}, values {r.value_min:.3g}..{r.value_max:.3g}, near one-hot "
        f"{100 * r.near_one_hot_fraction:.3g} % of pixels, mean entropy {r.entropy_mean:.3g} of log L = "
        f"{r.entropy_max:.3g} nats{where}"
    )
    return [head, *(f"warning: {m}" for m in r.messages)]


def _refine_one(args: argparse.Namespace, path: Path, params, iterations: int, voc=None):
    """The input image, its working-size image, labels, Q (L, H, W), notes, the unary's summary, the share relabelled.

    The CRF runs on the image downscaled to ``args.working_size`` (0: its own size); labels and Q are at that
    size. A ValueError for what the user can fix.
    """
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
    original = image
    if args.working_size:
        image = fit_image(image, args.working_size)
    h, w = image.shape[:2]
    if args.message_passing == "exact" and h * w > EXACT_MAX_PIXELS:
        raise ValueError(
            f"{w} × {h} = {h * w:,} pixels is more than the {EXACT_MAX_PIXELS:,} (96 × 96) that --message-passing "
            "exact allows (it is O(N²): hours at 800 × 600); use --message-passing lattice (the default) "
            "or downscale with --max-side 96"
        )
    unary, notes = _unary(args, path, image, voc)
    checked = unary_summary(unary)
    q, labels, changed = mean_field_q(args, unary, to_tensor(image), params, iterations)
    if voc is not None:
        notes.append(class_summary(labels, voc.class_names))
    return original, image, labels, q, notes, checked, changed, unary


def output_size(args: argparse.Namespace, targets: dict[str, Path], original, image, labels, q, unary=None):
    """The image, labels, Q (None unless written) and the unary's arg-max (None unless ``--before-after``).

    At the size the outputs are written at (``--output-size``). ``input`` (the default): Q upsampled bilinearly
    to the input's size and the labels its arg-max, the unary's probabilities likewise (:mod:`lab.cli.resize`
    says why); ``working``: as refined.
    """
    import torch

    from lab.cli.resize import upscale_labels, upscale_q

    before = None
    if args.before_after and unary is not None:
        before = torch.softmax(unary[0].float(), 0).numpy()  # the unary's probabilities: its arg-max, resizable
    if args.output_size == "working" or original.shape[:2] == image.shape[:2]:
        return image, labels, q, None if before is None else before.argmax(0)
    size = original.shape[:2]
    before = None if before is None else upscale_labels(before, size)
    if "q" in targets:
        q = upscale_q(q, size)
        return original, q.argmax(0), q, before
    return original, upscale_labels(q, size), None, before


def _reraise_interrupt(exc: BaseException) -> None:
    """Raise the :class:`Interrupted` behind ``exc``, if any.

    A signal that arrives inside a compiled (Numba) call surfaces as a SystemError whose cause or context is
    the Interrupted that the handler raised: that is a stop, not a failed image.
    """
    seen = exc
    for _ in range(8):  # a short chain; guards against a cycle
        seen = seen.__cause__ or seen.__context__
        if seen is None:
            return
        if isinstance(seen, Interrupted):
            raise seen


def _failure_text(exc: BaseException, path: Path) -> str:
    if isinstance(exc, MemoryError):
        text = f"out of memory{f' ({exc})' if str(exc) else ''}; try --max-side (volumes: resample them first)"
    elif isinstance(exc, (ValueError, TypeError, OSError, RuntimeError)):
        text = str(exc) or type(exc).__name__
    else:
        text = f"{type(exc).__name__}: {exc}"
    return text.removeprefix(f"{path}: ")


def refine(args: argparse.Namespace) -> int:
    """Run ``refine``; returns the exit code."""
    signals = Signals()
    with signals.installed(), contextlib.ExitStack() as stack:
        return _refine(args, signals, stack)


def _write_summary(summary: RunSummary, files: list[Path]) -> None:
    """Write summary.json / .csv, the inputs not reached marked so; a failed write is reported, not raised."""
    seen = {e["input"] for e in summary.entries}
    for path in files:
        if str(path) not in seen:
            summary.add(path, "not reached")
    mask = os.umask(0)
    os.umask(mask)
    try:
        write_outputs(summary.payloads(), Signals(), 0o666 & ~mask)
    except (OSError, StopBatch) as exc:
        print(f"the run's summary could not be written: {exc}", file=sys.stderr)
        return
    print(f"summary: {summary.out / SUMMARY_JSON}, {summary.out / SUMMARY_CSV}", file=sys.stderr)


def _refine(args: argparse.Namespace, signals: Signals, stack: contextlib.ExitStack) -> int:
    """The run; summary.json / .csv are written whenever it got as far as reading images."""
    summary = RunSummary(Path(args.out), getattr(args, "argv", None))
    files: list[Path] = []
    try:
        return _refine_inputs(args, signals, stack, summary, files)
    finally:
        if summary.parameters:  # set once the options, inputs and --out are settled
            _write_summary(summary, files)


def _refine_inputs(
    args: argparse.Namespace, signals: Signals, stack: contextlib.ExitStack, summary: RunSummary, files: list[Path]
) -> int:
    refined, existing, total = 0, 0, 0
    current: Path | None = None
    out = Path(args.out)
    try:
        check_options(args)
        params, iterations, args.working_size = crf_settings(args)
        found = collect(args.inputs, args.volume)
        files.extend(found.files)
        if not found.files and not found.problems:
            what = "volumes (.nii, .nii.gz, .npy)" if args.volume else f"images ({', '.join(IMAGE_SUFFIXES)})"
            volumes = 0 if args.volume else count_volumes(args.inputs)
            raise UsageError(
                f"inputs: no {what} found in {args.inputs}"
                + (f" ({len(found.own_outputs)} files are this tool's outputs)" if found.own_outputs else "")
                + (f"; {volumes} volume files are there: add --volume to refine them" if volumes else "")
            )
        plan = plan_outputs(found.files, out, args)
        prepare_out(out)
        summary.check()  # a summary someone else wrote is refused before any image is read
        from lab.explore import params_to_json

        summary.parameters = json.loads(params_to_json(params, iterations=iterations))
        summary.parameters.update(message_passing=args.message_passing, backend=args.backend)
        if args.volume:
            summary.parameters["note"] = "volumes: the spacing and θ of each are in its unary notes"
        else:
            summary.parameters["working_size"] = args.working_size
        voc = None
        if args.unary == "voc":  # loaded once for the whole batch (about 0.1 s), closed when the run ends
            from lab.unary.voc import VOCSegmenter, VOCUnavailable

            try:
                voc = stack.enter_context(VOCSegmenter())
            except VOCUnavailable as exc:
                raise UsageError(f"--unary voc: {exc}") from None
        mask = os.umask(0)
        os.umask(mask)
        mode = 0o666 & ~mask  # what a plain open() would give the outputs
        for entry, why in found.problems:
            summary.add(entry, "skipped", error=why)
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
            if args.skip_existing and outputs_complete(targets):
                existing += 1
                summary.add(path, "existing", outputs=[str(t) for t in targets.values()])
                print(f"{prefix}: skipped, its outputs exist (--skip-existing)", file=sys.stderr)
                continue
            t0 = time.perf_counter()
            fields: dict = {}
            try:
                if args.volume:
                    volume, labels, q, notes, checked, changed = refine_volume(
                        args, path, params, iterations, unary_summary
                    )
                    write_outputs(encode_volume_outputs(targets, volume, labels, q), signals, mode)
                    size = "x".join(map(str, volume.spatial_shape)) + f" (C={volume.channels})"
                else:
                    original, image, labels, q, notes, checked, changed, unary = _refine_one(
                        args, path, params, iterations, voc
                    )
                    image_out, labels_out, q_out, before = output_size(args, targets, original, image, labels, q, unary)
                    payloads = encode_outputs(
                        targets,
                        image_out,
                        labels_out,
                        q_out,
                        names=None if voc is None else tuple(voc.class_names),
                        before=before,
                        titles=("unary (arg-max)", f"CRF, T = {iterations}"),
                        legend=args.legend,
                    )
                    write_outputs(payloads, signals, mode)
                    size = f"{original.shape[1]}x{original.shape[0]}"
                    fields["working_size"] = f"{image.shape[1]}x{image.shape[0]}"
            except StopBatch:  # the disk is full: no later image can be written either
                raise
            except Exception as exc:  # a bad file, or one this machine cannot process: report, go on
                _reraise_interrupt(exc)
                failures += 1
                why = _failure_text(exc, path)
                summary.add(path, "failed", error=why, ms=round(1e3 * (time.perf_counter() - t0)))
                print(f"{prefix}: FAILED: {why}", file=sys.stderr)
                continue
            refined += 1
            current = None
            ms = 1e3 * (time.perf_counter() - t0)
            summary.add(
                path,
                "ok",
                size=size,
                **fields,
                labels=int(q.shape[0]),
                unary="; ".join(notes),
                verdict=checked[0].removeprefix("unary: "),
                warnings=[w.removeprefix("warning: ") for w in checked[1:]],
                ms=round(ms),
                changed=round(changed, 6),
                outputs=[str(t) for t in targets.values()],
            )
            print(
                f"{prefix}: ok, {size}, L={q.shape[0]}, {ms:.0f} ms ({'; '.join(notes)})",
                *(f"    {line}" for line in checked),
                sep="\n",
                file=sys.stderr,
            )
        signals.check()
    except StopBatch as exc:
        if current is not None:
            summary.add(current, "failed", error=f"stopped the batch: {exc}")
        print(
            f"STOPPED: {exc}. Nothing partial was left ({current}'s outputs were not written); "
            f"{refined + existing} of {total} images are complete in {out}. "
            "Free some space, then rerun with --skip-existing to finish.",
            file=sys.stderr,
        )
        return 1
    except Interrupted as exc:
        during = f" while refining {current} (its outputs were not written)" if current else ""
        print(
            f"interrupted by {exc}{during}; no partial file is left, {refined + existing} of {total} images are "
            f"complete in {out}. Rerun with --skip-existing to finish.",
            file=sys.stderr,
        )
        return exc.exit_code
    print(
        f"{refined + existing} of {total} {'volumes' if args.volume else 'images'} refined into {out}"
        + (f" ({existing} already there, skipped)" if existing else "")
        + (f"; {failures} failed" if failures else ""),
        file=sys.stderr,
    )
    return 1 if failures else 0
