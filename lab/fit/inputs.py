"""The fit's inputs, checked and put in one form: per image a (1, 3, H, W) image, (1, L, H, W) U, (1, H, W) labels.

Accepted (one image alone, or a sequence of them):

* images: (H, W, 3) uint8 numpy arrays, or (3, H, W) / (1, 3, H, W) tensors in 0..255; a stacked (N, H, W, 3)
  array or (N, 3, H, W) tensor is N images;
* unaries: per image an (L, H, W) or (1, L, H, W) tensor or array of log-probabilities (or logits), a stacked
  (N, L, H, W) one, or a callable ``image -> U`` that gets the image as an (H, W, 3) uint8 numpy array and
  returns U in either form or a tuple whose first item is U (as :func:`lab.unary.voc.voc_unary` returns
  ``(U, class_names)``);
* labels: per image an (H, W) integer array or tensor of class ids 0..L−1, ``ignore_index`` for "not
  labelled"; a stacked (N, H, W) one.

Every error names the argument and the image's index, e.g. ``labels[2]: ...``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lab._checks import check_int

__all__ = ["Example", "prepare"]


@dataclass(frozen=True)
class Example:
    """One labelled image, as the fit uses it."""

    image: torch.Tensor  # (1, 3, H, W) float32 0..255
    unary: torch.Tensor  # (1, L, H, W) float32
    labels: torch.Tensor  # (1, H, W) int64; ignored pixels hold −1
    valid: int  # labelled pixels


def _is_single(images: object) -> bool:
    if isinstance(images, np.ndarray):
        return images.ndim == 3
    if isinstance(images, torch.Tensor):
        return images.dim() == 3 or (images.dim() == 4 and images.shape[0] == 1)
    return False


def _items(x: object, name: str, single: bool) -> list:
    """A list of per-image items from a single item, a stacked array/tensor or a sequence."""
    if single and (isinstance(x, (np.ndarray, torch.Tensor)) or callable(x)):
        return [x]
    if isinstance(x, (np.ndarray, torch.Tensor)):
        return list(x) if x.ndim >= 1 else [x]
    if isinstance(x, Sequence) and not isinstance(x, (str, bytes)):
        return list(x)
    raise TypeError(f"{name}: expected a sequence of arrays or tensors (one per image), got {type(x).__name__}")


def _image(x: object, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        if x.ndim != 3 or x.shape[2] != 3:
            raise ValueError(f"{name}: expected an (H, W, 3) uint8 array, got {x.dtype} {x.shape}")
        if x.dtype != np.uint8:
            raise TypeError(f"{name}: expected an (H, W, 3) uint8 array, got {x.dtype} {x.shape}")
        t = torch.from_numpy(np.array(x, dtype=np.float32)).permute(2, 0, 1)  # a copy: inputs stay untouched
    elif isinstance(x, torch.Tensor):
        t = x[0] if x.dim() == 4 and x.shape[0] == 1 else x
        if t.dim() != 3 or t.shape[0] != 3 or t.is_complex() or t.dtype == torch.bool:
            raise ValueError(f"{name}: expected a (3, H, W) tensor in 0..255, got {x.dtype} {tuple(x.shape)}")
        t = t.detach().to("cpu", torch.float32)
    else:
        raise TypeError(f"{name}: expected an (H, W, 3) uint8 array or a (3, H, W) tensor, got {type(x).__name__}")
    if t.numel() == 0:
        raise ValueError(f"{name}: expected a non-empty image, got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()) or float(t.min()) < -0.5 or float(t.max()) > 255.5:
        lo, hi = float(t.min()), float(t.max())
        raise ValueError(f"{name}: expected finite colours in 0..255, got values in {lo:.4g}..{hi:.4g}")
    return t[None].contiguous()


def _as_uint8(image: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) float 0..255 → (H, W, 3) uint8, what a unary callable gets."""
    return np.ascontiguousarray(image[0].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy())


def _unary(x: object, name: str, hw: tuple[int, int]) -> torch.Tensor:
    if isinstance(x, tuple) and x:  # (U, class_names), as voc_unary returns
        x = x[0]
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.asarray(x))
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected an (L, H, W) tensor or array of log-probabilities, got {type(x).__name__}")
    u = x[0] if x.dim() == 4 and x.shape[0] == 1 else x
    if u.dim() != 3 or not u.is_floating_point():
        raise ValueError(f"{name}: expected an (L, H, W) float tensor of log-probabilities, got {x.dtype} {x.shape}")
    if u.shape[0] < 2:
        raise ValueError(f"{name}: expected at least 2 labels (L, H, W), got shape {tuple(x.shape)}")
    if tuple(u.shape[1:]) != hw:
        raise ValueError(f"{name}: expected the image's size (L, {hw[0]}, {hw[1]}), got {tuple(u.shape)}")
    u = u.detach().to("cpu", torch.float32)
    if not bool(torch.isfinite(u).all()):
        raise ValueError(f"{name}: expected finite values, got {int((~torch.isfinite(u)).sum())} NaN/Inf entries")
    return u[None].contiguous()


def _labels(x: object, name: str, hw: tuple[int, int], num_labels: int, ignore_index: int) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        if not np.issubdtype(x.dtype, np.integer):
            raise TypeError(f"{name}: expected an (H, W) array of integer class ids, got {x.dtype}")
        x = torch.from_numpy(x.astype(np.int64))
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected an (H, W) integer array or tensor, got {type(x).__name__}")
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"{name}: expected integer class ids, got {x.dtype}")
    y = x[0] if x.dim() == 3 and x.shape[0] == 1 else x
    if y.dim() != 2 or tuple(y.shape) != hw:
        raise ValueError(f"{name}: expected the image's size ({hw[0]}, {hw[1]}), got {tuple(x.shape)}")
    y = y.detach().to("cpu", torch.int64)
    ignored = y == ignore_index
    bad = (~ignored) & ((y < 0) | (y >= num_labels))
    if bool(bad.any()):
        values = sorted({int(v) for v in y[bad].unique()[:5]})
        raise ValueError(
            f"{name}: expected class ids 0..{num_labels - 1} (L = {num_labels}) or ignore_index {ignore_index}, "
            f"got {', '.join(map(str, values))}"
        )
    if bool(ignored.all()):
        raise ValueError(f"{name}: every pixel is ignore_index ({ignore_index}): nothing to fit to")
    return torch.where(ignored, -1, y)[None].contiguous()


def prepare(
    images: object, unaries: object, labels: object, ignore_index: int, where: str = ""
) -> tuple[list[Example], int]:
    """Check and convert; ``where`` prefixes the argument names (e.g. "val" gives ``val.labels[0]``).

    Returns:
        The examples and L.
    """
    check_int(ignore_index, "ignore_index", -(2**62))
    single = _is_single(images)
    prefix = f"{where}." if where else ""
    image_list = _items(images, f"{prefix}images", single)
    label_list = _items(labels, f"{prefix}labels", single)
    maker: Callable | None = unaries if callable(unaries) else None
    unary_list = [None] * len(image_list) if maker else _items(unaries, f"{prefix}unaries", single)
    if not image_list:
        raise ValueError(f"{prefix}images: expected at least one image, got none")
    for name, items in ((f"{prefix}unaries", unary_list), (f"{prefix}labels", label_list)):
        if len(items) != len(image_list):
            raise ValueError(f"{name}: expected one per image ({len(image_list)}), got {len(items)}")
    out, num_labels = [], None
    for i, (img, u, y) in enumerate(zip(image_list, unary_list, label_list, strict=True)):
        image = _image(img, f"{prefix}images[{i}]")
        hw = (image.shape[2], image.shape[3])
        unary = _unary(maker(_as_uint8(image)) if maker else u, f"{prefix}unaries[{i}]", hw)
        if num_labels is None:
            num_labels = unary.shape[1]
        elif unary.shape[1] != num_labels:
            raise ValueError(
                f"{prefix}unaries[{i}]: expected L = {num_labels} labels like unaries[0], got {unary.shape[1]}"
            )
        y = _labels(y, f"{prefix}labels[{i}]", hw, num_labels, ignore_index)
        out.append(Example(image, unary, y, int((y >= 0).sum())))
    return out, int(num_labels)
