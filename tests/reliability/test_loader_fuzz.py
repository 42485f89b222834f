"""Fuzzing every file loader with mutated files: each loads, or raises a clear error naming the file.

The contract: ``ValueError``, ``TypeError`` or ``FileNotFoundError`` whose message holds the file's name;
never another exception type, never a message without the name. Mutations of a valid file: truncation,
bit flips, inserted and deleted bytes. Examples are small and few (about a second per loader).
"""

import io
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from lab.crf import CRFParams
from lab.data import load_image
from lab.explore import params_from_json, params_to_json
from lab.unary import load_compat, load_probability_map, unary_from_annotation

CLEAN_ERRORS = (ValueError, TypeError, FileNotFoundError)
FUZZ = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
# decoded mutations stay small: a bit flip in a JPEG's size field may claim 65535 × 65535
FUZZ_MAX_PIXELS = 1_000_000


def mutated(base: bytes) -> st.SearchStrategy[bytes]:
    """``base`` truncated, with bits flipped, with bytes inserted or deleted."""

    def flip(spots):
        out = bytearray(base)
        for pos, bit in spots:
            out[pos % len(out)] ^= 1 << bit
        return bytes(out)

    return st.one_of(
        st.integers(0, len(base) - 1).map(lambda n: base[:n]),
        st.lists(st.tuples(st.integers(0, len(base) - 1), st.integers(0, 7)), min_size=1, max_size=6).map(flip),
        st.tuples(st.integers(0, len(base)), st.binary(min_size=1, max_size=12)).map(
            lambda t: base[: t[0]] + t[1] + base[t[0] :]
        ),
        st.tuples(st.integers(0, len(base) - 1), st.integers(1, 24)).map(lambda t: base[: t[0]] + base[t[0] + t[1] :]),
    )


def clean(call, name: str):
    """``call()``'s result, or None after a clean error naming ``name``; any other exception fails the test."""
    try:
        return call()
    except CLEAN_ERRORS as exc:
        assert name in str(exc), f"message does not name {name!r}: {exc}"
        assert "object at 0x" not in str(exc), f"message shows a stream's repr: {exc}"
        return None


def _encode(fmt: str, **kwargs) -> bytes:
    rng = np.random.default_rng(0)
    img = np.zeros((12, 16, 3), np.uint8)
    img[:, 8:] = (200, 40, 90)
    img = np.clip(img.astype(int) + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, fmt, **kwargs)
    return buf.getvalue()


def _npy(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _npz(compressed: bool, **arrays) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


# --- images


IMAGES = {
    "png": _encode("PNG"),
    "jpeg": _encode("JPEG", quality=90),
    "gif": _encode("GIF"),
    "bmp": _encode("BMP"),
    "webp": _encode("WEBP", lossless=True),
    "tiff": _encode("TIFF"),
}


def _check_image(data: bytes, name: str) -> None:
    image = clean(lambda: load_image(data, name=name, max_pixels=FUZZ_MAX_PIXELS), name)
    if image is not None:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


@pytest.mark.parametrize("fmt", sorted(IMAGES))
def test_mutated_image_bytes(fmt):
    @FUZZ
    @given(mutated(IMAGES[fmt]))
    def check(data):
        _check_image(data, f"upload.{fmt}")

    check()


def test_mutated_image_files_are_named_by_path():
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "photo.png"

        @FUZZ
        @given(mutated(IMAGES["png"]))
        def check(data):
            path.write_bytes(data)
            image = clean(lambda: load_image(path, max_pixels=FUZZ_MAX_PIXELS), str(path))
            assert image is None or image.shape[2] == 3

        check()


@FUZZ
@given(st.binary(max_size=64))
def test_arbitrary_bytes_as_an_image(data):
    _check_image(data, "random.bin")


# --- annotation PNGs: decoded, then read as labels


def _annotation_png() -> bytes:
    ann = np.zeros((10, 12, 3), np.uint8)
    ann[:4, :4] = (255, 0, 0)
    ann[-4:, -4:] = (0, 0, 255)
    ann[:3, -3:] = (0, 255, 0)
    buf = io.BytesIO()
    Image.fromarray(ann).save(buf, "PNG")
    return buf.getvalue()


@FUZZ
@given(mutated(_annotation_png()))
def test_mutated_annotation_png(data):
    name = "ann/x.png"
    ann = clean(lambda: load_image(data, name=name, max_pixels=FUZZ_MAX_PIXELS), name)
    if ann is not None:
        out = clean(lambda: unary_from_annotation(ann, 0.7, name=name), name)
        if out is not None:
            unary, colours = out
            assert unary.shape[1] == len(colours) <= 256 and bool(torch.isfinite(unary).all())


# --- probability maps and compatibility matrices


PROB = np.random.default_rng(1).dirichlet(np.ones(3), size=(4, 5))  # (H, W, L) probabilities
MU = 1 - np.eye(3)


def _check_prob(data: bytes, name: str) -> None:
    out = clean(lambda: load_probability_map(data, (4, 5), name=name), name)
    if out is not None:
        unary, notes = out
        assert unary.shape[0] == 1 and unary.shape[2:] == (4, 5) and 2 <= unary.shape[1] <= 256
        assert bool(torch.isfinite(unary).all()) and notes


@FUZZ
@given(mutated(_npy(PROB)))
def test_mutated_npy_probability_map(data):
    _check_prob(data, "probs/x.npy")


@pytest.mark.parametrize("compressed", [False, True], ids=["npz", "compressed npz"])
def test_mutated_npz_probability_map(compressed):
    @FUZZ
    @given(mutated(_npz(compressed, prob=PROB, other=np.arange(3))))
    def check(data):
        _check_prob(data, "probs/x.npz")

    check()


@pytest.mark.parametrize("compressed", [False, True], ids=["npz", "compressed npz"])
def test_mutated_compat(compressed):
    @FUZZ
    @given(st.one_of(mutated(_npy(MU)), mutated(_npz(compressed, mu=MU))))
    def check(data):
        mu = clean(lambda: load_compat(data, 3, name="mu.npz"), "mu.npz")
        assert mu is None or (mu.shape == (3, 3) and bool(torch.isfinite(mu).all()))

    check()


DTYPES = ["<f8", "<f4", "<f2", "<i4", "|u1", "|b1", "<c8", "<U2", "<M8[s]", "|V4", "O"]


@FUZZ
@given(
    st.sampled_from(DTYPES),
    st.lists(st.integers(0, 6), min_size=0, max_size=4),
    st.sampled_from([".npy", ".npz"]),
)
def test_saved_arrays_of_any_dtype_and_shape(dtype, shape, kind):
    """Valid files holding the wrong thing: any dtype (pickled objects too), any rank, empty axes."""
    arr = np.zeros(shape, dtype=dtype) if dtype != "O" else np.full(shape, None, dtype=object)
    buf = io.BytesIO()
    if kind == ".npy":
        np.save(buf, arr, allow_pickle=True)
    else:
        np.savez(buf, prob=arr)
    _check_prob(buf.getvalue(), f"probs/x{kind}")


# --- parameters JSON

BASE_PARAMS = json.loads(params_to_json(CRFParams(), iterations=5))
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=2),
    max_leaves=6,
)


@FUZZ
@given(st.dictionaries(st.sampled_from(sorted(BASE_PARAMS)), JSON_VALUES, max_size=3))
def test_params_json_with_wrong_values(replace):
    doc = {**BASE_PARAMS, **replace}
    try:
        params_from_json(json.dumps(doc))
    except (ValueError, TypeError):
        pass


@pytest.mark.parametrize(
    "doc", ['{"w_bilateral": []}', '{"w_spatial": 1' + "0" * 400 + "}"], ids=["empty weights", "huge integer"]
)
def test_params_json_edge_values_are_value_errors(doc):
    with pytest.raises(ValueError, match="w_"):
        params_from_json(doc)


@FUZZ
@given(mutated(params_to_json(CRFParams(), iterations=5).encode()))
def test_mutated_params_json_text(data):
    try:
        params_from_json(data.decode("utf-8", errors="replace"))
    except (ValueError, TypeError):
        pass


def _cli_params(path: Path):
    import argparse

    from lab.cli.params import OVERRIDES, crf_params

    args = argparse.Namespace(params=str(path), iterations=None, **dict.fromkeys(OVERRIDES))
    return crf_params(args)


@FUZZ
@given(
    st.one_of(
        st.dictionaries(st.sampled_from(sorted(BASE_PARAMS)), JSON_VALUES, max_size=3).map(
            lambda r: json.dumps({**BASE_PARAMS, **r}).encode()
        ),
        mutated(params_to_json(CRFParams(), iterations=5).encode()),
    )
)
def test_crf_lab_params_file(data):
    """What ``crf-lab refine --params FILE`` does with it: a usage error naming the file, or sane parameters."""
    from lab.cli import UsageError

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.json"
        path.write_bytes(data)
        try:
            params, iterations = _cli_params(path)
        except UsageError as exc:
            assert f"--params {path}" in str(exc)
            return
    assert isinstance(iterations, int) and iterations >= 0
    for name in ("theta_alpha", "theta_beta", "theta_gamma"):
        assert isinstance(getattr(params, name), float | int) and getattr(params, name) > 0
    for name in ("w_bilateral", "w_spatial"):
        assert bool(torch.isfinite(torch.as_tensor(getattr(params, name))).all())
    assert isinstance(params.compat, str) or bool(torch.isfinite(params.compat).all())
