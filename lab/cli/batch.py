"""The refine loop: each image read, refined by mean field and written, one failure never stopping the rest.

:func:`refine` runs a whole ``crf-lab refine``: the option checks and the plan first (a
:class:`lab.cli.args.UsageError` before any image is read), then per image its unary (colour clusters, a
probability map, an annotation or the bundled VOC network, loaded once per run) with its
:func:`lab.unary.unary_report` verdict (:func:`lab.cli.report.unary_summary`), ``mean_field`` on the CPU and its outputs
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
from lab.cli.report import class_summary, unary_summary
from lab.cli.signals import Interrupted, Signals
from lab.cli.summary import SUMMARY_CSV, SUMMARY_JSON, RunSummary
from lab.cli.volumes import encode_volume_outputs, refine_volume
from lab.cli.writing import StopBatch, encode_outputs, write_outputs


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


def failure_text(exc: BaseException, path: Path) -> str:
    """What an input's FAILED line and summary entry say about ``exc``."""
    if isinstance(exc, MemoryError):
        text = f"out of memory{f' ({exc})' if str(exc) else ''}; try --working-size (volumes: resample them first)"
    elif isinstance(exc, (ValueError, TypeError, OSError, RuntimeError)):
        text = str(exc) or type(exc).__name__
    else:
        text = f"{type(exc).__name__}: {exc}"
    return text.removeprefix(f"{path}: ")


def compute(args: argparse.Namespace, path: Path, targets: dict[str, Path], params, iterations: int, voc=None):
    """One input refined, nothing written: (its outputs' contents, its summary fields, its unary lines).

    Runs in the batch's process, or in a worker of ``--workers``; raises what the refine raises.
    """
    if args.volume:
        volume, labels, q, notes, checked, changed = refine_volume(args, path, params, iterations, unary_summary)
        payloads = encode_volume_outputs(targets, volume, labels, q)
        info: dict = {"size": "x".join(map(str, volume.spatial_shape)) + f" (C={volume.channels})"}
    else:
        original, image, labels, q, notes, checked, changed, unary = _refine_one(args, path, params, iterations, voc)
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
        info = {
            "size": f"{original.shape[1]}x{original.shape[0]}",
            "working_size": f"{image.shape[1]}x{image.shape[0]}",
        }
    info.update(
        labels=int(q.shape[0]),
        unary="; ".join(notes),
        verdict=checked[0].removeprefix("unary: "),
        warnings=[w.removeprefix("warning: ") for w in checked[1:]],
        changed=round(changed, 6),
    )
    return payloads, info, checked


def refine(args: argparse.Namespace) -> int:
    """Run ``refine``; returns the exit code."""
    signals = Signals()
    with signals.installed(), contextlib.ExitStack() as stack:
        return _refine(args, signals, stack)


def _write_summary(summary: RunSummary, files: list[Path], shard=None, everything: list[Path] | None = None) -> None:
    """Write summary.json / .csv, the inputs not reached marked so; a failed write is reported, not raised.

    The entries follow the inputs' order whatever order the images finished in (``--workers``). Under
    ``torchrun`` (``shard``, a :class:`lab.cli.ranks.Shard` of world size > 1) this rank's part goes to
    ``summary.rank<k>.json`` and the merged record of all ranks to summary.json / .csv (:mod:`lab.cli.ranks`).
    """
    seen = {e["input"] for e in summary.entries}
    for path in files:
        if str(path) not in seen:
            summary.add(path, "not reached")
    order = {str(p): i for i, p in enumerate(files)}
    summary.entries.sort(key=lambda e: order.get(e["input"], -1))  # stable: the skipped entries stay first
    try:
        if shard is not None and shard.world > 1:
            from lab.cli.ranks import write_part_and_merge

            written = write_part_and_merge(summary, shard, everything or files)
        else:
            mask = os.umask(0)
            os.umask(mask)
            write_outputs(summary.payloads(), Signals(), 0o666 & ~mask)
            written = [summary.out / SUMMARY_JSON, summary.out / SUMMARY_CSV]
    except (OSError, StopBatch) as exc:
        print(f"the run's summary could not be written: {exc}", file=sys.stderr)
        return
    print(f"summary: {', '.join(map(str, written))}", file=sys.stderr)


def _refine(args: argparse.Namespace, signals: Signals, stack: contextlib.ExitStack) -> int:
    """The run; summary.json / .csv are written whenever it got as far as reading images."""
    from lab.cli.ranks import shard_from_env, under_agent, wait_for_peers

    summary = RunSummary(Path(args.out), getattr(args, "argv", None))
    files: list[Path] = []  # this rank's inputs
    everything: list[Path] = []  # all ranks' inputs
    shard = None
    try:
        shard = shard_from_env()
        code = _refine_inputs(args, signals, stack, summary, files, shard, everything)
    finally:
        if summary.parameters:  # set once the options, inputs and --out are settled
            _write_summary(summary, files, shard, everything)
    if code == 1 and summary.parameters and shard.world > 1 and under_agent():
        try:  # torchrun's agent would stop the ranks still working as soon as this one exits with an error
            wait_for_peers(summary.out, shard)
        except Interrupted as exc:
            return exc.exit_code
    return code


class _Tally:
    """The counts of a run and the lines it prints, as each input is settled."""

    def __init__(self, summary: RunSummary, progress, total: int, label: str = "") -> None:
        self.summary, self.progress, self.total = summary, progress, total
        self.label = f"{label} " if label else ""  # "rank k/W " under torchrun, whose ranks share stderr
        self.refined = self.existing = self.failures = self.done = 0

    def _prefix(self, path: Path) -> str:
        self.done += 1
        return f"[{self.label}{self.done}/{self.total}] {path}"

    def ok(self, path: Path, targets: dict, info: dict, checked: list[str], ms: float) -> None:
        self.refined += 1
        self.summary.add(path, "ok", **info, ms=round(ms), outputs=[str(t) for t in targets.values()])
        line = f"{self._prefix(path)}: ok, {info['size']}, L={info['labels']}, {ms:.0f} ms ({info['unary']})"
        self.progress.line("\n".join([line, *(f"    {c}" for c in checked)]), routine=len(checked) == 1)
        self.progress.advance()

    def failed(self, path: Path, why: str, ms: float) -> None:
        self.failures += 1
        self.summary.add(path, "failed", error=why, ms=round(ms))
        self.progress.line(f"{self._prefix(path)}: FAILED: {why}")
        self.progress.advance()

    def skipped_existing(self, path: Path, targets: dict) -> None:
        self.existing += 1
        self.summary.add(path, "existing", outputs=[str(t) for t in targets.values()])
        self.progress.line(f"{self._prefix(path)}: skipped, its outputs exist (--skip-existing)", routine=True)
        self.progress.advance()


def _refine_inputs(
    args: argparse.Namespace,
    signals: Signals,
    stack: contextlib.ExitStack,
    summary: RunSummary,
    files: list[Path],
    shard,
    everything: list[Path],
) -> int:
    from lab.cli.progress import Progress
    from lab.cli.ranks import shard_files

    tally: _Tally | None = None
    total = 0
    current: set[Path] = set()  # being refined (or written) now
    out = Path(args.out)
    try:
        check_options(args)
        params, iterations, args.working_size = crf_settings(args)
        found = collect(args.inputs, args.volume)
        everything.extend(found.files)
        files.extend(shard_files(found.files, shard))
        if not found.files and not found.problems:
            what = "volumes (.nii, .nii.gz, .npy)" if args.volume else f"images ({', '.join(IMAGE_SUFFIXES)})"
            volumes = 0 if args.volume else count_volumes(args.inputs)
            raise UsageError(
                f"inputs: no {what} found in {args.inputs}"
                + (f" ({len(found.own_outputs)} files are this tool's outputs)" if found.own_outputs else "")
                + (f"; {volumes} volume files are there: add --volume to refine them" if volumes else "")
            )
        plan = plan_outputs(found.files, out, args)  # all ranks' inputs: a clash between shards is refused too
        prepare_out(out)
        summary.check(shard)  # a summary someone else wrote is refused before any image is read
        from lab.explore import params_to_json

        summary.parameters = json.loads(params_to_json(params, iterations=iterations))
        summary.parameters.update(message_passing=args.message_passing, backend=args.backend)
        if args.volume:
            summary.parameters["note"] = "volumes: the spacing and θ of each are in its unary notes"
        else:
            summary.parameters["working_size"] = args.working_size
        voc = None
        if args.unary == "voc" and args.workers == 1:  # loaded once for the batch (about 0.1 s), closed at the end
            from lab.unary.voc import VOCSegmenter, VOCUnavailable

            try:
                voc = stack.enter_context(VOCSegmenter())
            except VOCUnavailable as exc:
                raise UsageError(f"--unary voc: {exc}") from None
        mask = os.umask(0)
        os.umask(mask)
        mode = 0o666 & ~mask  # what a plain open() would give the outputs
        problems = found.problems if shard.rank == 0 else []  # one rank reports them
        for entry, why in problems:
            summary.add(entry, "skipped", error=why)
            print(f"{entry}: SKIPPED: {why}", file=sys.stderr)
        if found.own_outputs and shard.rank == 0:
            names = ", ".join(p.name for p in found.own_outputs[:3]) + (", ..." if len(found.own_outputs) > 3 else "")
            print(f"not taken as inputs: {len(found.own_outputs)} PNGs written by crf-lab ({names})", file=sys.stderr)
        total = len(files) + len(problems)
        progress = stack.enter_context(contextlib.closing(Progress(len(files), args.quiet, shard.label)))
        tally = _Tally(summary, progress, len(files), shard.label)
        tally.failures = len(problems)
        todo = []
        for path in files:
            if args.skip_existing and outputs_complete(plan[path]):
                tally.skipped_existing(path, plan[path])
            else:
                todo.append(path)
        if args.workers > 1 and len(todo) > 1:
            _pooled(args, todo, plan, params, iterations, signals, mode, tally, current)
        else:
            for path in todo:
                signals.check()
                current.add(path)
                t0 = time.perf_counter()
                try:
                    payloads, info, checked = compute(args, path, plan[path], params, iterations, voc)
                    write_outputs(payloads, signals, mode)
                except StopBatch:  # the disk is full: no later image can be written either
                    raise
                except Exception as exc:  # a bad file, or one this machine cannot process: report, go on
                    _reraise_interrupt(exc)
                    tally.failed(path, failure_text(exc, path), 1e3 * (time.perf_counter() - t0))
                    current.discard(path)
                    continue
                current.discard(path)
                tally.ok(path, plan[path], info, checked, 1e3 * (time.perf_counter() - t0))
        signals.check()
    except StopBatch as exc:
        for path in sorted(current, key=str):
            summary.add(path, "failed", error=f"stopped the batch: {exc}")
        complete = 0 if tally is None else tally.refined + tally.existing
        print(
            f"STOPPED: {exc}. Nothing partial was left ({', '.join(map(str, current))}'s outputs were not "
            f"written); {complete} of {total} images are complete in {out}. "
            "Free some space, then rerun with --skip-existing to finish.",
            file=sys.stderr,
        )
        return 1
    except Interrupted as exc:
        during = f" while refining {', '.join(map(str, current))} (its outputs were not written)" if current else ""
        complete = 0 if tally is None else tally.refined + tally.existing
        print(
            f"interrupted by {exc}{during}; no partial file is left, {complete} of {total} images are "
            f"complete in {out}. Rerun with --skip-existing to finish.",
            file=sys.stderr,
        )
        return exc.exit_code
    progress.close()
    print(
        f"{shard.label + ': ' if shard.label else ''}{tally.refined + tally.existing} of {total} "
        f"{'volumes' if args.volume else 'images'} refined into {out}"
        + (f" ({tally.existing} already there, skipped)" if tally.existing else "")
        + (f"; {tally.failures} failed" if tally.failures else ""),
        file=sys.stderr,
    )
    return 1 if tally.failures else 0


def _pooled(args, todo, plan, params, iterations, signals: Signals, mode: int, tally: _Tally, current: set) -> None:
    """``--workers N``: refine in N single-threaded processes; this process writes every output and the record.

    The workers only compute (:func:`compute`); each result's files are written here all or nothing, as
    without workers, so a stop (SIGINT, SIGTERM, a full disk) leaves nothing partial: the workers are ended and
    the inputs in flight are "not reached".
    """
    from lab.cli.parallel import pooled

    with contextlib.closing(pooled(args, todo, plan, params, iterations)) as results:
        for path, result in results:
            signals.check()
            if result[0] == "failed":
                tally.failed(path, result[1], result[2])
                continue
            _, payloads, info, checked, ms = result
            try:
                write_outputs(payloads, signals, mode)
            except StopBatch:
                current.add(path)
                raise
            except OSError as exc:
                tally.failed(path, failure_text(exc, path), ms)
                continue
            tally.ok(path, plan[path], info, checked, ms)
            signals.check()
