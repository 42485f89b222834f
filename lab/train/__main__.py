"""``python -m lab.train``: run the experiment and write the table and figures (see ``docs/training.md``)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
import time
from pathlib import Path

import torch

from lab.train import distributed, jobs
from lab.train.experiment import ExperimentConfig, aggregate, load_data, run_experiment, run_seed
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
    p.add_argument("--compat-lr", type=float, default=None, help="the compatibility µ's learning rate")
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="seeds trained side by side in child processes of 1 thread each, then aggregated (default: one per "
        "seed, at most one per core, on the CPU; 1: every seed in this process, in turn)",
    )
    p.add_argument("--worker-seed", type=int, default=None, help=argparse.SUPPRESS)  # a --jobs child
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
        "compat_lr": args.compat_lr,
    }
    changes = {k: v for k, v in changes.items() if v is not None}
    return ExperimentConfig.quick(**changes) if args.quick else dataclasses.replace(ExperimentConfig(), **changes)


def _jobs(args: argparse.Namespace, cfg: ExperimentConfig) -> int:
    """How many child processes: ``--jobs``, else one per seed up to the CPU count (outside torchrun), else 1.

    Not more children than cores by default: each holds its training batches' CRF kernels (≈ 8.5 GB for the
    full configuration), and three of them side by side do not fit a 24 GB, 2-core machine.
    """
    if args.jobs is not None:
        if args.jobs < 1:
            raise SystemExit(f"--jobs: expected an integer >= 1, got {args.jobs}")
        return min(args.jobs, len(cfg.seeds))
    in_torchrun = int(os.environ.get("WORLD_SIZE", "1")) > 1
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    return 1 if in_torchrun or cuda else max(1, min(len(cfg.seeds), os.cpu_count() or 1))


def _without_jobs(argv: list[str]) -> list[str]:
    """The arguments with ``--jobs N`` / ``--jobs=N`` removed (for the children)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--jobs":
            skip = True
        elif not a.startswith("--jobs="):
            out.append(a)
    return out


def _worker(args: argparse.Namespace, cfg: ExperimentConfig, checkpoints: Path) -> int:
    """A ``--jobs`` child: one seed on one thread, its result written beside its checkpoints."""
    torch.set_num_threads(1)
    ctx = distributed.init(args.device)
    seed = args.worker_seed
    if seed not in cfg.seeds:
        raise SystemExit(f"--worker-seed: expected one of the seeds {list(cfg.seeds)}, got {seed}")
    torch.manual_seed(cfg.data_seed)
    data = load_data(cfg, ctx)
    result = run_seed(cfg, data, seed, ctx, checkpoints, args.resume)
    jobs.save_result(checkpoints, seed, dataclasses.asdict(cfg), {**result, "class_names": list(data.class_names)})
    return 0


def _run_in_children(argv: list[str], cfg: ExperimentConfig, n: int, checkpoints: Path) -> dict:
    """Every seed in a child process (``n`` at a time), then the table from their results."""
    t0 = time.perf_counter()
    print(
        f"{len(cfg.seeds)} seed(s) in {n} child process(es) of 1 thread each; checkpoints in {checkpoints}",
        file=sys.stderr,
        flush=True,
    )
    child_argv = [*_without_jobs(argv), "--checkpoints", str(checkpoints)]
    jobs.run_seeds_in_children(child_argv, cfg.seeds, n)
    config = dataclasses.asdict(cfg)
    per_seed = {s: jobs.load_result(checkpoints, s, config) for s in cfg.seeds}
    class_names = per_seed[cfg.seeds[0]].pop("class_names")
    for r in per_seed.values():
        r.pop("class_names", None)
    result = aggregate(cfg, per_seed, class_names)
    result.update(runtime_s=time.perf_counter() - t0, world_size=1, jobs=n, threads=1)
    return result


def main(argv: list[str] | None = None) -> int:
    """Run; rank 0 writes the outputs. Returns the exit status."""
    t0 = time.perf_counter()
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw)
    cfg = config_from_args(args)
    checkpoints = args.checkpoints or args.out.resolve().parent / "artifacts" / "train" / args.out.name
    if args.worker_seed is not None:
        return _worker(args, cfg, checkpoints)
    n = _jobs(args, cfg)
    if n > 1:
        result = _run_in_children(raw, cfg, n, checkpoints)
        result["runtime_s"] = time.perf_counter() - t0
        _write(result, args, raw, distributed.Context())
        return 0
    ctx = distributed.init(args.device)
    try:
        result = run_experiment(cfg, ctx, checkpoints, resume=args.resume)
        result["runtime_s"] = time.perf_counter() - t0
        if ctx.is_main:
            _write(result, args, raw, ctx)
    except BaseException:
        distributed.shutdown(ctx)
        raise
    distributed.shutdown(ctx, synchronize=True)
    return 0


def _write(result: dict, args: argparse.Namespace, raw: list[str], ctx: distributed.Context) -> None:
    """The table, the JSON and the figures under ``--out``."""
    command = "python -m lab.train " + shlex.join(raw)
    doc = write_tables(result, args.out, command.strip())
    write_figures(result, args.out)
    for row in doc["rows"]:
        ctx.log(
            f"{row['method']:>21}: mIoU {100 * row['miou_mean']:.1f} ± {100 * row['miou_std']:.1f}, "
            f"trimap {100 * row['trimap_mean']:.1f} ± {100 * row['trimap_std']:.1f}"
        )
    ctx.log(f"wrote {args.out}/paper_table.md, paper_table.json and figures in {result['runtime_s'] / 60:.1f} min")


if __name__ == "__main__":
    sys.exit(main())
