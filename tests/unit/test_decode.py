"""Decoding edge cases, on tiny real image files made here."""

import io

import numpy as np
import pytest
from PIL import Image

from bootstrap.decode import ImageDecodeError, decode_image


def _save(path, image, **kwargs):
    image.save(path, **kwargs)
    return str(path)


def _exif_rotated(path):
    # 40x20 stored, EXIF orientation 6 (rotate 90 CW to view): a person sees 20x40.
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    return _save(path, image, format="JPEG", exif=exif)


def _sixteen_bit(path):
    values = np.full((8, 12), 65535, dtype=np.uint16)
    values[:, :6] = 0
    return _save(path, Image.fromarray(values), format="PNG")


@pytest.mark.parametrize(
    ("make", "size", "check"),
    [
        (lambda p: _save(p, Image.new("RGB", (30, 10), (0, 255, 0)), format="JPEG"), (30, 10), None),
        (lambda p: _save(p, Image.new("L", (16, 8), 200), format="PNG"), (16, 8),
         lambda px: (px == 200).all()),
        (lambda p: _save(p, Image.new("RGBA", (16, 8), (10, 20, 30, 0)), format="PNG"), (16, 8),
         lambda px: (px[0, 0] == [10, 20, 30]).all()),
        (lambda p: _save(p, Image.new("CMYK", (16, 8), (0, 255, 255, 0)), format="JPEG"), (16, 8),
         lambda px: px[0, 0, 0] > 200 and px[0, 0, 1] < 60),
        (lambda p: _save(p, Image.new("P", (16, 8)), format="GIF"), (16, 8), None),
        (_sixteen_bit, (12, 8), lambda px: px[0, 0, 0] == 0 and px[0, 11, 0] == 255),
        (_exif_rotated, (20, 40), None),
        (lambda p: _save(p, Image.new("1", (16, 8), 1), format="BMP"), (16, 8), None),
    ],
    ids=["rgb", "grayscale", "rgba", "cmyk", "palette", "16-bit", "exif-rotated", "1-bit"],
)
def test_modes_become_upright_rgb8(tmp_path, make, size, check):
    decoded = decode_image(make(tmp_path / "image"))
    assert decoded.pixels.dtype == np.uint8
    assert decoded.pixels.shape == (size[1], size[0], 3)
    assert (decoded.width, decoded.height) == size
    if check is not None:
        assert check(decoded.pixels)


def _truncated_jpeg(path):
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buffer, format="JPEG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return str(path)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file \\(0 bytes\\)"),
        (b"this is a text file, not a photo", "not an image file"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not an image file|truncated or corrupt"),
        (_truncated_jpeg, "truncated or corrupt image"),
    ],
    ids=["zero-byte", "text", "broken-png-header", "truncated-jpeg"],
)
def test_bad_files_raise_a_named_reason(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    if callable(content):
        content(path)
    else:
        path.write_bytes(content)
    with pytest.raises(ImageDecodeError, match=reason) as caught:
        decode_image(str(path))
    assert caught.value.uri == str(path)


def test_missing_file(tmp_path):
    with pytest.raises(ImageDecodeError, match="disappeared"):
        decode_image(str(tmp_path / "gone.jpg"))
