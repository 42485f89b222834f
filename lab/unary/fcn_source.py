"""The small FCN trained on the synthetic shapes (``python -m lab.train``) as a unary source.

Training writes checkpoints to ``artifacts/train/<run>/seed<k>/fcn.pt``; this module finds the newest one
and turns its logits into U = log p. Nothing is downloaded: without a checkpoint the source reports
itself unavailable and says how to make one (:func:`lab._paths.quick_training_command`, about a minute).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch

from lab._paths import quick_training_command, train_artifacts
from lab.errors import Unavailable
from lab.models import FCN

__all__ = ["FCNUnavailable", "fcn_unary", "find_fcn_checkpoint", "load_fcn"]


class FCNUnavailable(Unavailable):
    """No trained FCN checkpoint was found (the message says how to train one)."""


def find_fcn_checkpoint(search: str | os.PathLike | None = None) -> Path:
    """The newest ``fcn.pt`` under ``search`` (default: ``$LAB_TRAIN_DIR`` or the project's artifacts/train).

    Raises:
        FCNUnavailable: none found.
    """
    root = train_artifacts(search)
    found = sorted(root.glob("**/fcn.pt"), key=lambda p: p.stat().st_mtime, reverse=True) if root.is_dir() else []
    if not found:
        raise FCNUnavailable(
            f"no trained FCN under {root}; train one with `{quick_training_command(search)}` (about a minute)"
        )
    return found[0]


def load_fcn(path: str | os.PathLike) -> tuple[FCN, int]:
    """The FCN stored in a training checkpoint, in eval mode, and its number of classes."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        weights = state["model"]
        width = int(state.get("config", {}).get("width", 16))
        prefix = "unary_net."
        weights = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)} or weights
        num_classes = next(
            v.shape[0]
            for k, v in weights.items()
            if k.endswith("weight") and v.dim() == 4 and k.startswith("classifier")
        )
    except (OSError, KeyError, RuntimeError, StopIteration, AttributeError, EOFError, pickle.UnpicklingError) as exc:
        raise FCNUnavailable(f"{path}: not a readable FCN checkpoint ({type(exc).__name__}: {exc})") from None
    model = FCN(num_classes, width=width)
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise FCNUnavailable(f"{path}: the weights do not fit lab.models.FCN ({exc})") from None
    return model.eval(), num_classes


@torch.no_grad()
def fcn_unary(image: np.ndarray, model: FCN) -> torch.Tensor:
    """U = log softmax of the FCN's logits for an (H, W, 3) uint8 image: (1, L, H, W) float32."""
    x = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1)[None]
    return torch.log_softmax(model(x), dim=1)
