"""The one place that decides which implementation runs: "auto" | "torch" | "triton"."""

from __future__ import annotations

import importlib.util
import os

import torch

from lab._checks import check_choice

__all__ = ["BACKENDS", "resolve_backend", "triton_available"]

BACKENDS = ("auto", "torch", "triton")


def triton_available() -> bool:
    """Whether Triton is importable (it runs on CUDA tensors, or anywhere under ``TRITON_INTERPRET=1``)."""
    return importlib.util.find_spec("triton") is not None


def resolve_backend(backend: str, device: torch.device) -> str:
    """Turn a requested backend into the one that runs.

    "auto" picks Triton for CUDA tensors when Triton is installed, PyTorch otherwise. An explicit "triton"
    that cannot run raises instead of falling back.

    Args:
        backend: "auto", "torch" or "triton".
        device: where the data lives.

    Returns:
        "torch" or "triton".

    Example:
        >>> resolve_backend("auto", torch.device("cpu"))
        'torch'
    """
    check_choice(backend, "backend", BACKENDS)
    if backend == "torch":
        return "torch"
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    if backend == "auto":
        return "triton" if device.type == "cuda" and triton_available() else "torch"
    if not triton_available():
        raise RuntimeError(
            "backend='triton': Triton is not installed (pip install 'crf-rnn-lab[gpu]'; CUDA builds of torch bring it)"
        )
    if device.type != "cuda" and not interpret:
        raise RuntimeError(
            f"backend='triton': tensors are on {device.type}; Triton needs CUDA tensors "
            "(or TRITON_INTERPRET=1 set before import to run its interpreter on the CPU)"
        )
    return "triton"
