"""Data that needs no download: bundled real photos, an image loader, and a seeded synthetic segmentation set."""

from lab.data.photos import SAMPLE_IMAGE_NAMES, load_image, sample_images
from lab.data.synthetic import (
    CLASS_NAMES,
    Scene,
    Shape,
    SyntheticShapes,
    render_scene,
)

__all__ = [
    "CLASS_NAMES",
    "SAMPLE_IMAGE_NAMES",
    "Scene",
    "Shape",
    "SyntheticShapes",
    "load_image",
    "render_scene",
    "sample_images",
]
