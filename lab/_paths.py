"""Where ``python -m lab.train`` leaves its checkpoints, for the parts of the lab that read them back."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

__all__ = ["quick_training_command", "train_artifacts"]

_ROOT = Path(__file__).resolve().parents[1]


def train_artifacts(search: str | os.PathLike | None = None) -> Path:
    """``search`` if given, else ``$LAB_TRAIN_DIR``, else the project's ``artifacts/train``.

    Example:
        >>> train_artifacts("/tmp/runs").as_posix()
        '/tmp/runs'
    """
    return Path(search or os.environ.get("LAB_TRAIN_DIR") or _ROOT / "artifacts" / "train")


def quick_training_command(search: str | os.PathLike | None = None) -> str:
    """The command that trains a quick FCN and CRF-RNN where the lab reads them back from.

    Both the table and figures (``--out``) and the checkpoints (``--checkpoints``) go to ``quick`` under
    :func:`train_artifacts`: nothing tracked (``results/``, ``lab.train``'s default ``--out``) is overwritten.

    Example:
        >>> quick_training_command("/tmp/runs")
        'python -m lab.train --quick --out /tmp/runs/quick --checkpoints /tmp/runs/quick'
    """
    target = shlex.quote(str(train_artifacts(search) / "quick"))
    return f"python -m lab.train --quick --out {target} --checkpoints {target}"
