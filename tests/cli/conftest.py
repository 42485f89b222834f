"""Fixtures shared by the command line's tests."""

import pytest
from PIL import ImageDraw


@pytest.fixture
def drawn(monkeypatch):
    """The strings drawn with Pillow's ImageDraw.text while the test runs (the overlay's titles and legend)."""
    texts = []
    real = ImageDraw.ImageDraw.text

    def spy(self, xy, text, *args, **kwargs):
        texts.append(text)
        return real(self, xy, text, *args, **kwargs)

    monkeypatch.setattr(ImageDraw.ImageDraw, "text", spy)
    return texts
