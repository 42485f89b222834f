"""The machine line every benchmark table starts with (CPU model, cores, threads, load, versions)."""

from __future__ import annotations

import os
import platform

import numpy as np
import torch


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what platform knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            return next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _numba() -> str:
    try:
        import numba
    except ImportError:
        return "numba not installed"
    return f"numba {numba.__version__}"


def describe(*extra: str) -> str:
    """One line: machine, cores, torch threads, load average, Python/torch/numpy versions, then ``extra``."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    parts = [
        f"machine: {cpu_name()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, load {load:.1f}",
        f"python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}, {_numba()}",
        *extra,
    ]
    return "; ".join(parts)
