"""Fixtures shared by the whole suite: photos, and the device the Triton tests run on.

``device`` runs one test body twice: on CPU tensors in the Triton interpreter (marker ``interpreter``, its
own pytest process with ``TRITON_INTERPRET=1``: ``make test``) and on a CUDA device (marker ``gpu``,
compiled kernels: ``make test-gpu``). Each variant skips, saying why, where it cannot run.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import pytest
import torch
from inputs import synthetic_photo

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


@pytest.fixture(
    params=[
        pytest.param(
            "cpu",
            marks=[
                pytest.mark.interpreter,
                pytest.mark.skipif(not INTERPRET, reason="needs TRITON_INTERPRET=1 (pytest -m interpreter)"),
            ],
            id="interpreter",
        ),
        pytest.param(
            "cuda",
            marks=[
                pytest.mark.gpu,
                pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
                pytest.mark.skipif(INTERPRET, reason="compiled kernels: run without TRITON_INTERPRET"),
            ],
            id="gpu",
        ),
    ]
)
def device(request: pytest.FixtureRequest) -> str:
    """Where a Triton test runs: "cpu" (the interpreter) or "cuda" (compiled kernels)."""
    return request.param


@pytest.fixture
def make_photo() -> Callable[..., np.ndarray]:
    """:func:`synthetic_photo` as a fixture: ``make_photo(h, w, seed)``."""
    return synthetic_photo


@pytest.fixture
def drawn(monkeypatch):
    """The strings drawn with Pillow's ImageDraw.text while the test runs (the CLI overlay's titles and legend)."""
    from PIL import ImageDraw

    texts = []
    real = ImageDraw.ImageDraw.text

    def spy(self, xy, text, *args, **kwargs):
        texts.append(text)
        return real(self, xy, text, *args, **kwargs)

    monkeypatch.setattr(ImageDraw.ImageDraw, "text", spy)
    return texts
