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


def _photo_like(width: int, height: int) -> Image.Image:
    # Smooth gradients plus a few sharp rectangles: like a photo, JPEG keeps it close.
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    pixels = np.stack([x + 0 * y, y + 0 * x, (x + y) / 2], axis=2)
    pixels[height // 4: height // 2, width // 3: width // 2] = (250, 30, 30)
    return Image.fromarray(pixels.astype(np.uint8))


def _large_jpeg(path, size=(2000, 1000), orientation=None):
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    return _save(path, _photo_like(*size), format="JPEG", quality=92, exif=exif)


@pytest.mark.parametrize(
    ("orientation", "max_side", "scale", "pixels_wh", "image_wh"),
    [
        (None, None, 1, (2000, 1000), (2000, 1000)),  # no target: always in full
        (None, 1200, 1, (2000, 1000), (2000, 1000)),  # less than twice the target: in full
        (None, 1000, 2, (1000, 500), (2000, 1000)),
        (None, 640, 2, (1000, 500), (2000, 1000)),  # 1/4 would be 500 < 640
        (None, 256, 4, (500, 250), (2000, 1000)),
        (None, 100, 8, (250, 125), (2000, 1000)),  # libjpeg goes no further than 1/8
        (6, 256, 4, (250, 500), (1000, 2000)),  # EXIF-rotated: the upright size
    ],
    ids=["no-target", "not-large-enough", "half", "half-not-quarter", "quarter", "eighth", "exif"],
)
def test_large_jpeg_is_decoded_reduced_never_below_the_target(
    tmp_path, orientation, max_side, scale, pixels_wh, image_wh
):
    path = _large_jpeg(tmp_path / "large.jpg", orientation=orientation)
    decoded = decode_image(path, max_side)
    assert decoded.scale == scale
    assert (decoded.width, decoded.height) == pixels_wh
    assert decoded.image_wh == image_wh
    assert max(pixels_wh) >= (max_side or 0)
    # The same picture as a full decode reduced by the same factor (JPEG scaling, not a crop).
    full = decode_image(path)
    assert full.image_wh == image_wh and full.scale == 1
    reduced = np.asarray(Image.fromarray(full.pixels).reduce(scale), dtype=np.int16)
    assert np.abs(reduced - decoded.pixels.astype(np.int16)).mean() < 3


def test_only_jpegs_are_decoded_reduced(tmp_path):
    path = _save(tmp_path / "large.png", _photo_like(2000, 1000), format="PNG")
    decoded = decode_image(path, 256)
    assert decoded.scale == 1 and (decoded.width, decoded.height) == decoded.image_wh == (2000, 1000)


def test_odd_sized_jpeg_maps_back_by_the_exact_factor(tmp_path):
    # 2001 / 4 is not whole: libjpeg rounds the reduced size up; a pixel still stands for 4.
    path = _save(tmp_path / "odd.jpg", _photo_like(2001, 1003), format="JPEG")
    decoded = decode_image(path, 256)
    assert decoded.scale == 4 and (decoded.width, decoded.height) == (501, 251)
    assert decoded.image_wh == (2001, 1003)


def test_boxes_found_on_reduced_pixels_map_back_onto_the_image():
    from bootstrap.detections import Detections

    found = Detections(
        xyxy=np.array([[10, 20, 30, 40], [490, 240, 501, 251]], np.float32),
        confidence=np.array([0.9, 0.5], np.float32), class_id=np.array([2, 0]),
        model_label=np.array(["car", "person"], object), label=np.array(["car", "person"], object),
        image_wh=(501, 251), extras={"tta_support": np.array([1.0, 0.5], np.float32)},
    )
    back = found.on_image(4, (2001, 1003))
    assert back.image_wh == (2001, 1003)
    # Corners times the factor, clipped to the image (the last reduced pixel covers 1-3 pixels).
    assert back.xyxy.tolist() == [[40, 80, 120, 160], [1960, 960, 2001, 1003]]
    assert back.confidence.tolist() == found.confidence.tolist()
    assert list(back.label) == ["car", "person"] and back.extras.keys() == found.extras.keys()
    assert found.on_image(1, (501, 251)) is found


@pytest.mark.parametrize(("mode", "options"), [("RGB", {"progressive": True}), ("L", {}), ("CMYK", {})],
                         ids=["progressive", "grayscale", "cmyk"])
def test_other_jpeg_kinds_are_decoded_reduced_to_rgb(tmp_path, mode, options):
    path = _save(tmp_path / "large.jpg", _photo_like(2000, 1000).convert(mode), format="JPEG", **options)
    decoded = decode_image(path, 256)
    assert decoded.scale == 4 and decoded.pixels.shape == (250, 500, 3)
    assert decoded.image_wh == (2000, 1000)
