import io
import socket

import numpy as np
import pytest
from PIL import Image

from lab.data import SAMPLE_IMAGE_NAMES, load_image, sample_images
from lab.data import photos as photos_module

# Sizes of the bundled files (scikit-image 0.26, matplotlib 3.11): (H, W).
EXPECTED_SIZES = {
    "astronaut": (512, 512),
    "chelsea": (300, 451),
    "coffee": (400, 600),
    "rocket": (427, 640),
    "immunohistochemistry": (512, 512),
    "hubble_deep_field": (872, 1000),
    "grace_hopper": (600, 512),
}
# JPEG at quality 95 on flat colour blocks, 4 px away from the block edge: measured max error 1 level (Pillow 13,
# libjpeg-turbo); 12 leaves room for other JPEG builds while still telling the two blocks apart.
JPEG_ATOL = 12


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


class TestSampleImages:
    def test_all_photos_offline(self, monkeypatch):
        photos_module._cached.cache_clear()

        def no_network(*args, **kwargs):
            raise AssertionError("sample_images tried to open a network socket")

        monkeypatch.setattr(socket, "socket", no_network)
        monkeypatch.setattr(socket, "create_connection", no_network)
        photos = sample_images()
        assert tuple(photos) == SAMPLE_IMAGE_NAMES == tuple(EXPECTED_SIZES)
        for name, image in photos.items():
            assert image.dtype == np.uint8, name
            assert image.shape == (*EXPECTED_SIZES[name], 3), name
            assert image.std() > 10, name  # a real photo, not a blank

    def test_returns_copies(self):
        first = sample_images(["coffee"])["coffee"]
        first[:] = 0
        assert sample_images(["coffee"])["coffee"].max() > 0

    def test_subset_in_requested_order(self):
        assert list(sample_images(["rocket", "chelsea"])) == ["rocket", "chelsea"]
        assert list(sample_images("rocket")) == ["rocket"]

    def test_unknown_name(self):
        with pytest.raises(ValueError, match=r"names: unknown photo\(s\) \['eagle'\]"):
            sample_images(["eagle"])


class TestLoadImage:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (9, 13, 3), dtype=np.uint8)

    @pytest.mark.parametrize("fmt, kwargs", [("PNG", {}), ("WEBP", {"lossless": True}), ("TIFF", {}), ("BMP", {})])
    def test_lossless_formats_roundtrip(self, fmt, kwargs):
        out = load_image(_encode(Image.fromarray(self.rgb), fmt, **kwargs))
        assert out.dtype == np.uint8
        np.testing.assert_array_equal(out, self.rgb)

    def test_jpeg(self):
        blocks = np.zeros((32, 48, 3), np.uint8)
        blocks[:, 24:] = (200, 40, 90)
        out = load_image(_encode(Image.fromarray(blocks), "JPEG", quality=95))
        assert out.shape == (32, 48, 3)
        assert np.abs(out[4:-4, 4:20].astype(int) - 0).max() <= JPEG_ATOL
        assert np.abs(out[4:-4, 28:-4].astype(int) - (200, 40, 90)).max() <= JPEG_ATOL

    def test_path_and_bytes_agree(self, tmp_path):
        data = _encode(Image.fromarray(self.rgb), "PNG")
        path = tmp_path / "x.png"
        path.write_bytes(data)
        np.testing.assert_array_equal(load_image(path), load_image(str(path)))
        np.testing.assert_array_equal(load_image(path), load_image(bytearray(data)))

    def test_greyscale_becomes_three_equal_channels(self):
        grey = self.rgb[:, :, 0]
        out = load_image(_encode(Image.fromarray(grey, "L"), "PNG"))
        assert out.shape == (9, 13, 3)
        for c in range(3):
            np.testing.assert_array_equal(out[:, :, c], grey)

    def test_16bit_png_scaled_to_8bit(self, tmp_path):
        levels = (np.arange(9 * 13).reshape(9, 13) * 2).astype(np.uint16)  # 0..232
        deep = levels * 257  # the 16-bit encoding of the same levels
        deep[0, 0] = 65535
        path = tmp_path / "deep.png"
        Image.fromarray(deep).save(path)
        assert Image.open(path).mode.startswith("I")  # really stored as 16-bit
        out = load_image(path)
        expected = levels.astype(np.uint8)
        expected[0, 0] = 255
        np.testing.assert_array_equal(out[:, :, 1], expected)

    def test_float_tiff_in_unit_range(self):
        f = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
        out = load_image(_encode(Image.fromarray(f, "F"), "TIFF"))
        np.testing.assert_array_equal(out[:, :, 0], np.rint(f * 255).astype(np.uint8))

    def test_palette_png(self):
        pal = Image.new("P", (4, 2))
        pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (768 - 9))
        pal.putdata([0, 1, 2, 0, 2, 1, 0, 0])
        out = load_image(_encode(pal, "PNG"))
        np.testing.assert_array_equal(out[0, :3], [[255, 0, 0], [0, 255, 0], [0, 0, 255]])
        np.testing.assert_array_equal(out[1, 0], [0, 0, 255])

    def test_palette_with_transparency_over_white(self):
        pal = Image.new("P", (2, 1))
        pal.putpalette([10, 20, 30, 40, 50, 60] + [0] * (768 - 6))
        pal.putdata([0, 1])
        out = load_image(_encode(pal, "PNG", transparency=0))
        np.testing.assert_array_equal(out[0], [[255, 255, 255], [40, 50, 60]])

    def test_rgba_composited_over_white(self):
        rgba = np.zeros((1, 3, 4), np.uint8)
        rgba[0, :, :3] = (100, 0, 200)
        rgba[0, :, 3] = (0, 255, 128)
        out = load_image(_encode(Image.fromarray(rgba, "RGBA"), "PNG")).astype(int)
        np.testing.assert_array_equal(out[0, 0], [255, 255, 255])
        np.testing.assert_array_equal(out[0, 1], [100, 0, 200])
        expected_half = np.array([100, 0, 200]) * 128 / 255 + 255 * 127 / 255
        assert np.abs(out[0, 2] - expected_half).max() <= 1

    def test_exif_orientation_applied(self):
        # Stored landscape 16 × 32 with a red block top-left; EXIF 6 = "rotate 90° clockwise to display".
        stored = np.full((16, 32, 3), 255, np.uint8)
        stored[:8, :8] = (255, 0, 0)
        image = Image.fromarray(stored)
        exif = image.getexif()
        exif[0x0112] = 6
        out = load_image(_encode(image, "JPEG", quality=95, exif=exif.tobytes()))
        assert out.shape == (32, 16, 3)  # upright: portrait
        red = (out[:, :, 0] > 200) & (out[:, :, 1] < 80)
        rows, cols = np.nonzero(red)
        # clockwise rotation moves the top-left corner to the top-right
        assert rows.max() < 10 and cols.min() > 6

    def test_gif_first_frame(self):
        frames = [Image.new("RGB", (3, 3), c) for c in [(255, 0, 0), (0, 0, 255)]]
        buf = io.BytesIO()
        frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
        out = load_image(buf.getvalue())
        np.testing.assert_array_equal(out[1, 1], [255, 0, 0])

    def test_truncated_png(self, tmp_path):
        data = _encode(Image.fromarray(self.rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)), "PNG")
        path = tmp_path / "cut.png"
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(ValueError, match=r"^.*cut\.png: could not decode as an image: the file is truncated"):
            load_image(path)

    def test_truncated_jpeg_bytes(self):
        data = _encode(Image.fromarray(self.rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)), "JPEG")
        with pytest.raises(ValueError, match=r"^the uploaded bytes: could not decode as an image"):
            load_image(data[: len(data) // 3])

    def test_text_named_png(self, tmp_path):
        path = tmp_path / "notes.png"
        path.write_text("this is not an image\n")
        with pytest.raises(ValueError, match=r"notes\.png: could not decode as an image: not an image in a format"):
            load_image(path)

    def test_empty_bytes(self):
        with pytest.raises(ValueError, match=r"^up\.png: could not decode as an image: empty \(0 bytes\)"):
            load_image(b"", name="up.png")

    def test_missing_file(self, tmp_path):
        with pytest.raises(FileNotFoundError, match=r"absent\.png: no such file"):
            load_image(tmp_path / "absent.png")

    def test_folder(self, tmp_path):
        with pytest.raises(ValueError, match="a folder, not an image file"):
            load_image(tmp_path)

    def test_wrong_type(self):
        with pytest.raises(TypeError, match="source: expected a path or bytes, got ndarray"):
            load_image(self.rgb)

    @pytest.mark.parametrize("data", [b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40])
    def test_messages_name_the_upload_never_the_stream(self, data):
        with pytest.raises(ValueError) as info:
            load_image(data, name="holiday.png")
        assert str(info.value).startswith("holiday.png: ")
        assert "BytesIO" not in str(info.value) and "0x" not in str(info.value)

    def test_svg_is_refused_with_a_hint(self, tmp_path):
        svg = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"></svg>'
        with pytest.raises(ValueError, match=r"logo\.svg: .*SVG \(vector\) image, which is not supported"):
            load_image(svg, name="logo.svg")
        (tmp_path / "logo.svg").write_bytes(svg)
        with pytest.raises(ValueError, match=r"logo\.svg: .*SVG"):
            load_image(tmp_path / "logo.svg")


def _png_header_only(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of ``width`` × ``height`` (all black): tiny on disk, ``width * height`` bytes once decoded."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    idat = zlib.compress(row * height, 9)
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


class TestPixelCap:
    def test_default_cap_is_about_fifty_megapixels(self):
        assert 40_000_000 <= photos_module.DEFAULT_MAX_PIXELS <= 60_000_000

    def test_huge_small_png_is_refused_from_its_header(self, tmp_path, monkeypatch):
        data = _png_header_only(12000, 12000)
        assert len(data) < 100_000  # a small file claiming 144 MP
        path = tmp_path / "bomb.png"
        path.write_bytes(data)

        def no_decoding(self, *args, **kwargs):
            raise AssertionError("the image was decoded before the size check")

        monkeypatch.setattr(Image.Image, "load", no_decoding)
        monkeypatch.setattr("PIL.ImageFile.ImageFile.load", no_decoding)
        with pytest.raises(photos_module.ImageTooLargeError) as info:
            load_image(path)
        msg = str(info.value)
        assert msg.startswith(f"{path}: 12000 × 12000")
        assert "50,000,000" in msg and "max_pixels" in msg
        assert (info.value.width, info.value.height) == (12000, 12000)
        with pytest.raises(ValueError, match=r"^big\.png: 12000 × 12000"):
            load_image(data, name="big.png")
        with pytest.raises(ValueError, match=r"^the uploaded bytes: 12000 × 12000"):
            load_image(data)

    def test_no_decompression_bomb_warning_leaks(self, tmp_path):
        import warnings

        path = tmp_path / "bomb.png"
        path.write_bytes(_png_header_only(12000, 12000))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # Pillow's DecompressionBombWarning would raise here
            with pytest.raises(photos_module.ImageTooLargeError):
                load_image(path)

    def test_pillow_bomb_error_becomes_a_value_error_naming_the_file(self):
        data = _png_header_only(15000, 15000)  # 225 MP: above Pillow's own error limit (2 × 89.5 MP)
        with pytest.raises(ValueError, match=r"^huge\.png: larger than Pillow's decompression-bomb limit"):
            load_image(data, max_pixels=None, name="huge.png")

    def test_cap_can_be_raised_or_lifted(self, monkeypatch):
        import warnings

        data = _encode(Image.new("RGB", (20, 10)), "PNG")
        with pytest.raises(ValueError, match=r"20 × 10 = 200 pixels, more than max_pixels = 199"):
            load_image(data, max_pixels=199)
        assert load_image(data, max_pixels=200).shape == (10, 20, 3)
        # in Pillow's warning band (above MAX_IMAGE_PIXELS, below twice it) a lifted cap loads, silently
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 150)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert load_image(data, max_pixels=None).shape == (10, 20, 3)

    @pytest.mark.parametrize("bad", [0, -5, 2.5, "100", True])
    def test_bad_cap(self, bad):
        with pytest.raises(ValueError, match="max_pixels: expected a positive integer or None"):
            load_image(b"x", max_pixels=bad)
