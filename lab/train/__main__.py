"""``python -m lab.train``: run the experiment and write the table and figures (see ``docs/training.md``)."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path

from lab.train import distributed
from lab.train.experiment import ExperimentConfig, run_experiment
from lab.train.report import write_figures, write_tables


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="python -m lab.train",
        description="FCN vs FCN + CRF post-processing vs CRF-RNN end to end (and ablations) on synthetic shapes.",
    )
    p.add_argument("--quick", action="store_true", help="tiny smoke run (under a minute)")
    p.add_argument("--out", type=Path, default=Path("results"), help="where the table and figures go")
    p.add_argument(
        "--checkpoints",
        type=Path,
        default=None,
        help="checkpoint directory (default: artifacts/train/NAME beside OUT, NAME = OUT.name)",
    )
    p.add_argument("--resume", action="store_true", help="continue from checkpoints of the same configuration")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="training seeds (default 0 1 2; quick: 0)")
    p.add_argument("--epochs", type=int, default=None, help="FCN epochs")
    p.add_argument("--crf-epochs", type=int, default=None, help="end-to-end fine-tuning epochs")
    p.add_argument("--train-size", type=int, default=None, help="training images")
    p.add_argument("--test-size", type=int, default=None, help="test images")
    p.add_argument("--batch-size", type=int, default=None, help="images per batch")
    p.add_argument("--ablation-seeds", type=int, default=None, help="seeds that train the CRF-RNN variants")
    p.add_argument("--no-ablations", action="store_true", help="only the three main rows")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="device (auto: CUDA if any)")
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    """The :class:`ExperimentConfig` the arguments ask for."""
    changes = {
        "seeds": tuple(args.seeds) if args.seeds else None,
        "fcn_epochs": args.epochs,
        "crf_epochs": args.crf_epochs,
        "train_size": args.train_size,
        "test_size": args.test_size,
        "batch_size": args.batch_size,
        "ablations": False if args.no_ablations else None,
        "ablation_seeds": args.ablation_seeds,
    }
    changes = {k: v for k, v in changes.items() if v is not None}
    return ExperimentConfig.quick(**changes) if args.quick else dataclasses.replace(ExperimentConfig(), **changes)


def main(argv: list[str] | None = None) -> int:
    """Run; rank 0 writes the outputs. Returns the exit status."""
    args = parse_args(argv)
    cfg = config_from_args(args)
    ctx = distributed.init(args.device)
    checkpoints = args.checkpoints or args.out.resolve().parent / "artifacts" / "train" / args.out.name
    try:
        result = run_experiment(cfg, ctx, checkpoints, resume=args.resume)
        if ctx.is_main:
            command = "python -m lab.train " + shlex.join(sys.argv[1:] if argv is None else argv)
            doc = write_tables(result, args.out, command.strip())
            write_figures(result, args.out)
            for row in doc["rows"]:
                ctx.log(f"{row['method']:>18}: {100 * row['miou_mean']:.1f} ± {100 * row['miou_std']:.1f}")
            ctx.log(f"wrote {args.out}/paper_table.md, paper_table.json and figures")
    except BaseException:
        distributed.shutdown(ctx)
        raise
    distributed.shutdown(ctx, synchronize=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
