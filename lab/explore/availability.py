"""What the app can offer on this machine, and why not: backends, a trained FCN or CRF-RNN, the training hint.

The app offers only what can run here and says why the rest is missing. The training hint writes to the
scratch folder the app searches (:func:`lab._paths.train_artifacts`: ``$LAB_TRAIN_DIR`` or the project's
git-ignored ``artifacts/train``), never to the tracked ``results`` that ``python -m lab.train`` writes by
default.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import torch

from lab._paths import quick_training_command
from lab.lattice.backend import BACKENDS, resolve_backend

__all__ = ["load_uploaded_fcn", "training_command", "unavailable_backends"]


def training_command(search: str | os.PathLike | None = None) -> str:
    """The command that trains a quick FCN and CRF-RNN into the folder the app reads them from.

    Both the table and figures (``--out``) and the checkpoints (``--checkpoints``) go to ``quick`` under
    :func:`~lab._paths.train_artifacts`, so nothing tracked is overwritten and the app finds the result.

    Example:
        >>> training_command("/tmp/runs")
        'python -m lab.train --quick --out /tmp/runs/quick --checkpoints /tmp/runs/quick'
    """
    return quick_training_command(search)


def unavailable_backends(device: torch.device | str = "cpu") -> dict[str, str]:
    """The backends that cannot run on ``device``, each with the reason (:func:`resolve_backend`'s message).

    Example:
        >>> "torch" in unavailable_backends("cpu")
        False
    """
    device = torch.device(device)
    out = {}
    for backend in BACKENDS:
        try:
            resolve_backend(backend, device)
        except RuntimeError as exc:
            out[backend] = str(exc)
    return out


def load_uploaded_fcn(data: bytes, name: str = "checkpoint"):
    """An FCN from the bytes of an uploaded ``fcn.pt`` (a ``python -m lab.train`` checkpoint).

    An upload is untrusted: it is unpickled with ``weights_only=True`` (tensors and plain containers only,
    no code), then read by :func:`lab.unary.load_fcn` from a private temporary copy.

    Args:
        data: the file's bytes.
        name: what to call the file in error messages.

    Returns:
        (model, num_classes), as :func:`lab.unary.load_fcn`.

    Raises:
        ValueError: not a checkpoint of plain tensors, or no FCN in it.
    """
    from lab.unary import FCNUnavailable, load_fcn

    if not isinstance(data, bytes | bytearray) or not data:
        raise ValueError(f"{name}: expected the bytes of an fcn.pt checkpoint, got {type(data).__name__}")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, … for a wrong file
        raise ValueError(
            f"{name}: not a checkpoint of plain tensors (read with weights_only=True: {type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{name}: expected a python -m lab.train checkpoint (a dict with 'model'), got something else")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fcn.pt"
        torch.save(state, path)
        try:
            return load_fcn(path)
        except (FCNUnavailable, KeyError, RuntimeError, TypeError, ValueError) as exc:
            message = str(exc).replace(str(path), name)  # the temporary copy's path means nothing to the user
            raise ValueError(f"{name}: no FCN in it ({message})") from None
