"""``crf-lab fit``: learn the CRF's parameters from labelled images and write the JSON ``refine --params`` reads.

:func:`fit` checks the options, matches and reads the inputs (:mod:`lab.cli.fit_data`), holds out the
validation images, runs :func:`lab.fit.fit_crf` with a progress bar and writes the parameters JSON under a
temporary name, renamed into place only at the end (:func:`lab.cli.writing.write_outputs`): after an error,
Ctrl-C or SIGTERM nothing is left, and an existing ``--out`` is only replaced with ``--force``. The last
lines are the summary: the mIoU before → after and the fitted θ, weights and µ.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from lab.cli.args import UsageError
from lab.cli.batch import _reraise_interrupt
from lab.cli.fit_data import IGNORE, LabelledImage, load_set, match
from lab.cli.params import OVERRIDES, crf_params
from lab.cli.signals import Interrupted, Signals
from lab.cli.writing import StopBatch, write_outputs

__all__ = ["check_fit_options", "fit"]


def _learn(text: str) -> tuple[str, ...]:
    from lab.fit import LEARNABLE

    names = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in names if n not in LEARNABLE]
    if not names or bad:
        raise UsageError(
            f"--learn: expected a comma-separated subset of {','.join(LEARNABLE)}, got {text!r}"
            + (f" ({', '.join(bad)} unknown)" if bad else "")
        )
    return names


def check_fit_options(args: argparse.Namespace) -> None:
    """Every option's value before any file is read; each error names the option."""
    out = Path(args.out)
    if out.is_dir():
        raise UsageError(f"--out: {out} is a folder; expected the JSON file to write, e.g. {out / 'params.json'}")
    if out.exists() and not args.force:
        raise UsageError(f"--out: {out} exists; choose another name, or --force to replace it")
    if not out.parent.is_dir():
        raise UsageError(f"--out: the folder {out.parent} does not exist")
    if args.params and Path(args.params).resolve() == out.resolve():
        raise UsageError(f"--out: {out} is the --params file; write the fitted parameters elsewhere")
    if args.iterations is not None and args.iterations < 1:
        raise UsageError(f"--iterations: expected an integer >= 1, got {args.iterations}")
    if args.steps < 0:
        raise UsageError(f"--steps: expected an integer >= 0, got {args.steps}")
    if args.max_seconds is not None and not 0 < args.max_seconds < math.inf:
        raise UsageError(f"--max-seconds: expected a number of seconds > 0, got {args.max_seconds}")
    if not 0 <= args.val_fraction < 1:  # also refuses NaN
        raise UsageError(f"--val-fraction: expected a fraction in [0, 1), got {args.val_fraction}")
    if (args.val_images is None) != (args.val_labels is None):
        raise UsageError("--val-images and --val-labels: give both, or neither")
    if args.val_images is not None and args.val_fraction:
        raise UsageError("--val-fraction: not with --val-images (the validation images are given)")
    if args.max_side != 0 and args.max_side < 8:
        raise UsageError(f"--max-side: expected 0 (keep the size) or a size in pixels >= 8, got {args.max_side}")
    if args.seed < 0:
        raise UsageError(f"--seed: expected an integer >= 0, got {args.seed}")
    temperature = 1.0 if args.unary_temperature is None else args.unary_temperature
    if not 0 < temperature < math.inf:
        raise UsageError(f"--unary-temperature: expected a finite number > 0, got {temperature}")
    if args.unary_temperature is not None and args.unary != "voc":
        raise UsageError("--unary-temperature: applies to --unary voc only")
    if args.prob_dir is not None and not Path(args.prob_dir).is_dir():
        raise UsageError(f"--prob-dir: {args.prob_dir} is not a folder")
    if args.unary == "voc":
        from lab.unary.voc import voc_status

        ok, reason = voc_status()
        if not ok:
            raise UsageError(f"--unary voc: unavailable here: {reason}")
    args.learn_names = _learn(args.learn)


def _split(items: list[LabelledImage], fraction: float, seed: int) -> tuple[list, list]:
    """(train, val): round(fraction · n) images held out (at least one if fraction > 0, never all)."""
    import numpy as np

    if not fraction:
        return items, []
    n_val = min(max(1, round(fraction * len(items))), len(items) - 1)
    if n_val < 1:
        raise UsageError(f"--val-fraction: {len(items)} image cannot be split; give at least 2, or --val-images")
    order = np.random.default_rng(seed).permutation(len(items))
    held = set(order[:n_val].tolist())
    return [x for i, x in enumerate(items) if i not in held], [x for i, x in enumerate(items) if i in held]


def _arrays(items: list[LabelledImage], voc) -> tuple[list, object, list]:
    import torch

    images = [x.image for x in items]
    labels = [torch.from_numpy(x.labels) for x in items]
    if voc is not None:
        return images, voc, labels
    return images, [x.unary for x in items], labels


def _describe(result) -> list[str]:
    p, s = result.params, result.start
    theta = ", ".join(
        f"{sym} {getattr(s, n):.4g} → {getattr(p, n):.4g}"
        for sym, n in (("θα", "theta_alpha"), ("θβ", "theta_beta"), ("θγ", "theta_gamma"))
    )

    def w(v) -> str:
        return f"{v:.4g}" if isinstance(v, float) else "per class " + ", ".join(f"{x:.3g}" for x in v.tolist())

    weights = f"w_bilateral {w(s.w_bilateral)} → {w(p.w_bilateral)}, w_spatial {w(s.w_spatial)} → {w(p.w_spatial)}"
    if "compat" in result.learned:
        import torch

        mu = p.compat
        off = mu[~torch.eye(mu.shape[0], dtype=torch.bool)]
        n, lo, hi = mu.shape[0], float(off.min()), float(off.max())
        diag = float(mu.diagonal().abs().max())
        compat = f"µ learned ({n} × {n}), |diagonal| ≤ {diag:.3g}, off-diagonal {lo:.3g}..{hi:.3g}"
    else:
        compat = "µ as given"
    return [theta, weights, compat]


def fit(args: argparse.Namespace) -> int:
    """Run ``crf-lab fit``; returns the exit code."""
    signals = Signals()
    with signals.installed():
        try:
            return _fit(args, signals)
        except Interrupted as exc:
            print(f"interrupted by {exc}; nothing was written ({args.out} is as it was)", file=sys.stderr)
            return exc.exit_code


def _fit(args: argparse.Namespace, signals: Signals) -> int:
    from lab.fit import fit_crf

    check_fit_options(args)
    given = argparse.Namespace(params=args.params, iterations=args.iterations, **dict.fromkeys(OVERRIDES))
    start, iterations = crf_params(given)  # --params (the app's JSON) or the defaults; T from it or 5
    items, num_labels = load_set(match(args.images, args.labels, args.prob_dir), args)
    if args.val_images is not None:
        held, val_labels = load_set(match(args.val_images, args.val_labels, args.prob_dir, "val-"), args)
        if val_labels != num_labels:
            raise UsageError(f"--val-images: their unaries have {val_labels} labels, the training ones {num_labels}")
        train = items
    else:
        train, held = _split(items, args.val_fraction, args.seed)
    voc = None
    if args.unary == "voc":
        from lab.unary.voc import VOCSegmenter, VOCUnavailable

        try:
            voc = VOCSegmenter()
        except VOCUnavailable as exc:
            raise UsageError(f"--unary voc: {exc}") from None
        temperature = 1.0 if args.unary_temperature is None else args.unary_temperature
        segmenter = voc
        voc = lambda image: segmenter(image, temperature=temperature)  # noqa: E731  (U, names) per image
    print(
        f"fit: {len(train)} training and {len(held)} validation images, L = {num_labels}, T = {iterations}; "
        f"learning {', '.join(args.learn_names)}",
        file=sys.stderr,
    )
    try:
        result = fit_crf(
            *_arrays(train, voc),
            learn=args.learn_names,
            iterations=iterations,
            steps=args.steps,
            ignore_index=IGNORE,
            val=_arrays(held, voc) if held else None,
            params=start,
            max_seconds=args.max_seconds,
            monitor=args.monitor,
            seed=args.seed,
            progress=True,
        )
    except FloatingPointError as exc:
        print(f"fit failed: {exc}; nothing was written", file=sys.stderr)
        return 1
    except (ValueError, TypeError) as exc:
        _reraise_interrupt(exc)
        raise UsageError(str(exc)) from None
    except Exception as exc:  # a signal inside a compiled (Numba) call surfaces as a SystemError: a stop
        _reraise_interrupt(exc)
        raise
    finally:
        if voc is not None:
            segmenter.close()
    mask = os.umask(0)
    os.umask(mask)
    try:
        write_outputs({Path(args.out): result.to_json().encode() + b"\n"}, signals, 0o666 & ~mask)
    except (StopBatch, OSError) as exc:
        print(f"fit: cannot write {args.out} ({exc}); nothing was written", file=sys.stderr)
        return 1
    signals.check()
    on = "validation" if result.miou_on == "val" else "training"
    print(
        f"stopped: {result.stopped} after {result.steps_run} steps (best after {result.best_step}), "
        f"{result.seconds:.1f} s",
        f"mIoU on the {on} images: {result.miou_before:.3f} → {result.miou_after:.3f}",
        *_describe(result),
        *(f"note: {n}" for n in result.notes),
        f"wrote {args.out} (use it with: crf-lab refine ... --params {args.out})",
        sep="\n",
        file=sys.stderr,
    )
    return 0
