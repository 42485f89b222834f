"""The experiment's building blocks: a checkpointed (distributed) training loop, evaluation, CRF grid search.

Every function runs unchanged in a world of one process or under ``torchrun``: training shards the batches
with a ``DistributedSampler`` and averages gradients with ``DistributedDataParallel``; evaluation shards the
batches and sums the confusion matrices over the ranks; rank 0 alone logs and writes checkpoints.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DistributedSampler

from lab.crf import CRFKernels, CRFParams, mean_field
from lab.train.data import Split
from lab.train.distributed import Context
from lab.train.metrics import confusion_matrix, mean_iou, trimap_accuracy, trimap_counts
from lab.train.models import SegmentationCRFRNN

__all__ = ["GRID", "evaluate", "grid_search", "load_checkpoint", "save_checkpoint", "scores", "train_model"]

# The post-processing CRF's grid (searched on the val split). Bandwidths in pixels (θα, θγ) and 0..255 (θβ) for
# 64 × 64 images: the paper's θα = 80 px on ~500 px VOC images is ~10 px here. θγ = 3 px as everywhere.
GRID: dict[str, tuple[float, ...]] = {
    "theta_alpha": (8.0, 24.0),
    "theta_beta": (10.0, 25.0),
    "theta_gamma": (3.0,),
    "w_bilateral": (4.0, 8.0, 16.0, 32.0),
    "w_spatial": (1.0,),
}
_LR_FLOOR = 0.02  # the cosine schedule ends at 2 % of the initial learning rate


# --------------------------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: Path, state: dict) -> None:
    """Write ``state`` to ``path`` atomically (a temporary file, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, config: Mapping, device: torch.device) -> dict | None:
    """The checkpoint at ``path`` if it exists and was written for the same ``config``, else None."""
    if not path.exists():
        return None
    state = torch.load(path, map_location=device, weights_only=False)
    return state if state.get("config") == dict(config) else None


# ------------------------------------------------------------------------------------------------ progress
class _Progress:
    """A one-line progress bar on rank 0 (redrawn in place on a terminal, one line per epoch otherwise)."""

    def __init__(self, ctx: Context, desc: str, epochs: int, steps: int) -> None:
        self.ctx, self.desc, self.epochs, self.steps = ctx, desc, epochs, steps
        self.tty = sys.stderr.isatty()
        self.start = time.perf_counter()

    def step(self, epoch: int, step: int, loss: float) -> None:
        if self.tty:
            done = int(20 * step / max(self.steps, 1))
            bar = "#" * done + "." * (20 - done)
            msg = f"\r{self.desc} epoch {epoch + 1}/{self.epochs} [{bar}] {step}/{self.steps} loss {loss:.4f}"
            self.ctx.log(msg, end="")

    def epoch(self, epoch: int, loss: float, val: float | None) -> None:
        val_text = "" if val is None else f" val mIoU {val:.4f}"
        elapsed = time.perf_counter() - self.start
        prefix = "\r" if self.tty else ""
        self.ctx.log(f"{prefix}{self.desc} epoch {epoch + 1}/{self.epochs} loss {loss:.4f}{val_text} ({elapsed:.0f} s)")


# ------------------------------------------------------------------------------------------------ training
def _cached_kernels(model: SegmentationCRFRNN, split: Split, index: int) -> CRFKernels | None:
    """Batch ``index``'s prebuilt kernels for the model's CRF, or None (no CRF, or θ learned: built per call).

    Fixed bandwidths make a batch's lattice the same in every epoch, so it is built once. Learned bandwidths
    change every step and the kernels must carry the gradient to θ, so the model builds them itself.
    """
    if model.crf is None or model.crf.learnable_bandwidths:
        return None
    return split.kernels(index, model.crf.params, model.crf.message_passing)


def _cosine(total_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        t = min(step / max(total_steps, 1), 1.0)
        return _LR_FLOOR + (1 - _LR_FLOOR) * 0.5 * (1 + math.cos(math.pi * t))

    return factor


def train_model(
    model: SegmentationCRFRNN,
    param_groups: Sequence[dict],
    split: Split,
    *,
    epochs: int,
    ctx: Context,
    seed: int,
    desc: str,
    checkpoint: Path | None = None,
    config: Mapping | None = None,
    resume: bool = False,
    validate: Callable[[SegmentationCRFRNN], float] | None = None,
) -> dict:
    """Train with Adam, a cosine schedule and per-pixel cross-entropy; checkpoint after every epoch.

    Each epoch visits every batch of ``split`` once, in an order drawn from (``seed``, epoch); under torchrun
    the batches are shared out among the ranks and the gradients averaged. With ``resume``, a checkpoint
    written for the same ``config`` is loaded and training goes on after its last completed epoch (a
    completed run is not trained again); a different config starts afresh.

    Args:
        model: the network, trained in place (a :class:`SegmentationCRFRNN`, with or without CRF).
        param_groups: Adam parameter groups, each with its ``"lr"``.
        split: the training batches (their CRF kernels are built once and cached).
        epochs: passes over the split.
        ctx: the process's distributed context.
        seed: seeds the batch order.
        desc: label of the progress line.
        checkpoint: file for the checkpoint (rank 0 writes it), or None.
        config: what defines this run; a checkpoint is resumed only if it holds the same.
        resume: continue from ``checkpoint`` if possible.
        validate: called after each epoch, returns a validation mIoU for the curves.

    Returns:
        The history: ``{"loss": [per step, averaged over ranks], "val": [per epoch], "epochs": int,
        "resumed_epochs": int}`` (``resumed_epochs``: how many of the epochs came from the checkpoint).
    """
    config = dict(config or {})
    optimizer = torch.optim.Adam(list(param_groups))
    sampler = DistributedSampler(split, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed)
    steps = len(sampler)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _cosine(epochs * steps))
    history: dict = {"loss": [], "val": [], "epochs": 0}
    start_epoch = 0
    state = load_checkpoint(checkpoint, config, ctx.device) if (resume and checkpoint is not None) else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history = state["history"]
        start_epoch = state["epoch"]
        ctx.log(f"{desc}: resumed from {checkpoint} after epoch {start_epoch}/{epochs}")
    history["resumed_epochs"] = start_epoch  # epochs this call did not train (taken from the checkpoint)
    net = ctx.wrap(model)
    progress = _Progress(ctx, desc, epochs, steps)
    for epoch in range(start_epoch, epochs):
        sampler.set_epoch(epoch)
        net.train()
        losses = []
        for step, index in enumerate(sampler, start=1):
            images, labels = split[index]
            loss = F.cross_entropy(net(images, _cached_kernels(model, split, index)), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            value = float(ctx.all_reduce_sum(loss.detach().reshape(1))) / ctx.world_size
            losses.append(value)
            progress.step(epoch, step, value)
        history["loss"].extend(losses)
        val = validate(model) if validate is not None else None
        history["val"].append(val)
        history["epochs"] = epoch + 1
        progress.epoch(epoch, sum(losses) / max(len(losses), 1), val)
        if checkpoint is not None and ctx.is_main:
            save_checkpoint(
                checkpoint,
                {
                    "config": config,
                    "epoch": epoch + 1,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "history": history,
                },
            )
        ctx.barrier()
    return history


# ---------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(
    model: SegmentationCRFRNN,
    split: Split,
    ctx: Context,
    num_classes: int,
    iterations: int | None = None,
) -> torch.Tensor:
    """The confusion matrix of ``model`` over a split (batches shared out among the ranks, then summed).

    Args:
        model: the network (its CRF, if any, runs ``iterations`` mean-field steps).
        split: the batches to evaluate.
        ctx: the distributed context.
        num_classes: L.
        iterations: T at test time (default: the CRF's own).

    Returns:
        (L, L) int64 counts, the same on every rank; :func:`~lab.train.metrics.mean_iou` gives the mIoU.
    """
    return _counts(model, split, ctx, num_classes, iterations, None)[0]


@torch.no_grad()
def scores(
    model: SegmentationCRFRNN,
    split: Split,
    ctx: Context,
    num_classes: int,
    iterations: int | None = None,
    trimap_radius: int = 3,
) -> dict[str, float]:
    """The mIoU and the trimap accuracy of ``model`` over a split, from one pass.

    Args:
        model: the network (its CRF, if any, runs ``iterations`` mean-field steps).
        split: the batches to evaluate.
        ctx: the distributed context.
        num_classes: L.
        iterations: T at test time (default: the CRF's own).
        trimap_radius: half-width in pixels of the band around the true label boundaries
            (:func:`~lab.train.metrics.trimap_counts`).

    Returns:
        ``{"miou": float, "trimap": float}``, both in 0..1, the same on every rank.
    """
    confusion, band = _counts(model, split, ctx, num_classes, iterations, trimap_radius)
    return {"miou": mean_iou(confusion), "trimap": trimap_accuracy(band)}


def _counts(
    model: SegmentationCRFRNN,
    split: Split,
    ctx: Context,
    num_classes: int,
    iterations: int | None,
    trimap_radius: int | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The confusion matrix and (with a radius) the trimap counts, summed over the ranks."""
    model.eval()
    total = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=ctx.device)
    band = torch.zeros(2, dtype=torch.int64, device=ctx.device)
    for index in range(ctx.rank, len(split), ctx.world_size):
        images, labels = split[index]
        pred = model(images, _cached_kernels(model, split, index), iterations).argmax(1)
        total += confusion_matrix(pred, labels, num_classes)
        if trimap_radius is not None:
            band += trimap_counts(pred, labels, num_classes, trimap_radius)
    return ctx.all_reduce_sum(total), ctx.all_reduce_sum(band)


@torch.no_grad()
def grid_search(
    unary_net: nn.Module,
    split: Split,
    ctx: Context,
    num_classes: int,
    grid: Mapping[str, Sequence[float]] = GRID,
    iterations: int = 5,
) -> tuple[CRFParams, list[dict]]:
    """Choose the post-processing CRF's parameters by the mIoU they give on ``split`` (the val split).

    Every combination of the values in ``grid`` (keys: the :class:`~lab.crf.CRFParams` fields theta_alpha,
    theta_beta, theta_gamma, w_bilateral, w_spatial) runs T mean-field iterations with the Potts model on
    the network's logits; the first best one wins.

    Args:
        unary_net: the trained unary network (logits U).
        split: the validation batches.
        ctx: the distributed context (batches shared out, confusion matrices summed).
        num_classes: L.
        grid: the values to try per parameter.
        iterations: T.

    Returns:
        The best :class:`~lab.crf.CRFParams` and one row per setting (its parameters and ``"miou"``).
    """
    unary_net.eval()
    names = list(grid)
    indices = range(ctx.rank, len(split), ctx.world_size)
    unaries = {i: unary_net(split[i][0]) for i in indices}
    rows: list[dict] = []
    best: tuple[float, CRFParams] | None = None
    for values in itertools.product(*(grid[n] for n in names)):
        setting = {n: float(v) for n, v in zip(names, values, strict=True)}
        params = CRFParams(**setting)
        total = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=ctx.device)
        for i in indices:
            images, labels = split[i]
            logits = mean_field(unaries[i], images, params, iterations, keep=None, kernels=split.kernels(i, params))
            total += confusion_matrix(logits.logits.argmax(1), labels, num_classes)
        miou = mean_iou(ctx.all_reduce_sum(total))
        rows.append({**setting, "miou": miou})
        if best is None or miou > best[0]:
            best = (miou, params)
    if best is None:
        raise ValueError("grid: expected at least one value per parameter")
    return best[1], rows
