"""The command line: ``crf-lab refine`` and ``crf-lab fit`` (also ``python -m lab …`` and ``python -m lab.cli …``).

Refines one image, a folder or a glob of images with mean-field inference and writes label maps, optionally
Q and an overlay, into an output folder; ``crf-lab refine --help`` (:data:`lab.cli.args.DESCRIPTION`) says
what a user sees. :func:`main` is the entry point. The modules, in the order a run meets them (imports point
down the list, never up): :mod:`~lab.cli.args` (the parser, the option checks, :class:`UsageError`),
:mod:`~lab.cli.params` (the CRF parameters), :mod:`~lab.cli.signals` (SIGINT / SIGTERM),
:mod:`~lab.cli.writing` (all-or-nothing writes), :mod:`~lab.cli.legend` (the overlay and its legend),
:mod:`~lab.cli.resize` (outputs at the input's size), :mod:`~lab.cli.plan` (inputs and output names),
:mod:`~lab.cli.progress` (the progress bar), :mod:`~lab.cli.ranks` (torchrun's shards and the merged record),
:mod:`~lab.cli.parallel` (``--workers``; its workers call back into batch's ``compute``, imported when
they start) and :mod:`~lab.cli.batch` (the refine loop). ``crf-lab fit`` learns the parameters from labelled
images and writes the JSON ``refine --params`` reads: :mod:`~lab.cli.fit_data` (matching and reading) and
:mod:`~lab.cli.fit` (the command).
"""

from __future__ import annotations

import sys

from lab.cli.args import EXACT_MAX_PIXELS, UsageError, build_parser
from lab.cli.batch import refine
from lab.cli.plan import IMAGE_SUFFIXES

__all__ = ["EXACT_MAX_PIXELS", "IMAGE_SUFFIXES", "UsageError", "main", "refine"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``crf-lab`` / ``python -m lab``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what summary.json records as the command
    try:
        if args.command == "fit":
            from lab.cli.fit import fit

            return fit(args)
        return refine(args)
    except UsageError as exc:
        parser.error(str(exc))  # exits with code 2 and the usage line
    except KeyboardInterrupt:
        print("interrupted (SIGINT); no partial file is left", file=sys.stderr)
        return 130
    return 0
