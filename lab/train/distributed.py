"""torch.distributed set-up for ``torchrun``: one process per device, gloo on CPU, nccl on GPU.

A plain ``python -m lab.train`` runs as a world of one with the same code path (no process group).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["Context", "init", "shutdown"]


@dataclass(frozen=True)
class Context:
    """Where this process stands in the world.

    Attributes:
        rank: global rank (0 logs and writes checkpoints).
        world_size: number of processes.
        device: this process's device (``cuda:LOCAL_RANK`` on GPU machines, else CPU).
    """

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether a process group is in use."""
        return self.world_size > 1

    def log(self, message: str, end: str = "\n") -> None:
        """Print on rank 0 only (stderr, flushed)."""
        if self.is_main:
            print(message, end=end, file=sys.stderr, flush=True)

    def barrier(self) -> None:
        """Wait for every rank (no-op in a world of one)."""
        if self.distributed:
            dist.barrier()

    def all_reduce_sum(self, x: torch.Tensor) -> torch.Tensor:
        """Sum ``x`` over the ranks (a new tensor; ``x`` is left as it is)."""
        if not self.distributed:
            return x
        out = x.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    def wrap(self, model: nn.Module) -> nn.Module:
        """``DistributedDataParallel`` around ``model`` when distributed (it broadcasts rank 0's weights)."""
        if not self.distributed:
            return model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def init(device: str = "auto") -> Context:
    """Join the process group ``torchrun`` describes in the environment, or make a world of one.

    Args:
        device: "auto" (CUDA when available), "cpu" or "cuda".

    Returns:
        This process's :class:`Context`.
    """
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Context(device=torch.device("cuda" if use_cuda else "cpu"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    dev = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    return Context(rank=dist.get_rank(), world_size=dist.get_world_size(), device=dev)


def shutdown(ctx: Context, synchronize: bool = False) -> None:
    """Leave the process group (if any).

    Args:
        ctx: this process's context.
        synchronize: wait at a barrier first, so that no rank tears down Gloo's threads while another is
            still communicating (a rank once died with "terminate called without an active exception" at
            exit). Only on the success path: after a failure the other ranks may never arrive.
    """
    if ctx.distributed and dist.is_initialized():
        if synchronize:
            dist.barrier()
        dist.destroy_process_group()
