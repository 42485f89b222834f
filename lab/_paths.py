"""Where ``python -m lab.train`` leaves its checkpoints, for the parts of the lab that read them back."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["train_artifacts"]

_ROOT = Path(__file__).resolve().parents[1]


def train_artifacts(search: str | os.PathLike | None = None) -> Path:
    """``search`` if given, else ``$LAB_TRAIN_DIR``, else the project's ``artifacts/train``.

    Example:
        >>> train_artifacts("/tmp/runs").as_posix()
        '/tmp/runs'
    """
    return Path(search or os.environ.get("LAB_TRAIN_DIR") or _ROOT / "artifacts" / "train")
