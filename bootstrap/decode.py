"""Decode image files safely into 8-bit RGB arrays.

Real corpora hold rotated phone photos, grayscale scans, PNGs with alpha, 16-bit TIFFs, CMYK
JPEGs from print workflows, and files that are empty, truncated or not images at all. Each of
those either becomes a plain RGB array in the orientation a person sees, or raises
``ImageDecodeError`` with a reason that is stored on the sample; it never stops a run.

A JPEG much larger than the detector needs (``max_side``) is decoded at 1/2, 1/4 or 1/8 of its
size by libjpeg itself (Pillow's draft mode: the DCT is scaled while decoding, several times
faster than a full decode and never smaller than asked); ``scale`` and ``original_wh`` say how
to map boxes found on those pixels back onto the image.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

#: EXIF orientations that turn the stored image by 90 degrees (``ImageOps.exif_transpose``).
_SIDEWAYS = (5, 6, 7, 8)


class ImageDecodeError(Exception):
    """The file cannot be used as an image; ``reason`` says why in a few words."""

    def __init__(self, uri: str, reason: str):
        super().__init__(f"{uri}: {reason}")
        self.uri = uri
        self.reason = reason


@dataclass(frozen=True, slots=True)
class DecodedImage:
    """An image ready for a detector: ``pixels`` is HxWx3 uint8 RGB, upright.

    ``scale``: how many of the image's pixels one of ``pixels`` stands for along each side (1,
    or 2, 4, 8 when decoded in draft mode); ``original_wh``: the upright size of the image in
    the file, what boxes and the stored metadata refer to (``pixels``' own size when None).
    """

    uri: str
    pixels: np.ndarray
    scale: int = 1
    original_wh: tuple[int, int] | None = None

    @property
    def width(self) -> int:
        """Width of ``pixels`` (the decoded array; see ``image_wh`` for the image's)."""
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def image_wh(self) -> tuple[int, int]:
        """(width, height) of the upright image in the file."""
        return self.original_wh or (self.width, self.height)


def decode_image(uri: str, max_side: int | None = None) -> DecodedImage:
    """Read ``uri`` and return it upright (EXIF orientation applied) as 8-bit RGB.

    With ``max_side`` (the longest side any model view resizes the image to), a JPEG at least
    twice that size is decoded reduced (draft mode), its longest side still ``>= max_side``.

    Raises:
        ImageDecodeError: empty, truncated, corrupt or non-image files, or images too large.
    """
    try:
        with open(uri, "rb") as handle:
            if not handle.read(1):
                raise ImageDecodeError(uri, "empty file (0 bytes)")
            handle.seek(0)
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(handle) as image:
                    # PIL's own check warns between 1x and 2x its limit; the warning filter above
                    # is process-wide and decoding runs in threads, so check here as well.
                    if image.width * image.height > Image.MAX_IMAGE_PIXELS:
                        raise Image.DecompressionBombError(
                            f"Image size ({image.width * image.height} pixels) exceeds limit of "
                            f"{Image.MAX_IMAGE_PIXELS} pixels, could be decompression bomb DOS attack."
                        )
                    stored_wh = image.size
                    scale = _draft(image, max_side) if max_side else 1
                    image.load()  # decode now, so truncation surfaces here and not later
                    sideways = image.getexif().get(ExifTags.Base.Orientation) in _SIDEWAYS
                    upright = ImageOps.exif_transpose(image)
                    if scale == 1:
                        return DecodedImage(uri=uri, pixels=_to_rgb8(upright))
                    return DecodedImage(uri=uri, pixels=_to_rgb8(upright), scale=scale,
                                        original_wh=stored_wh[::-1] if sideways else stored_wh)
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError(uri, "not an image file (format not recognised)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageDecodeError(uri, f"image too large to decode safely: {err}") from None
    except FileNotFoundError:
        raise ImageDecodeError(uri, "file disappeared before it could be read") from None
    except (OSError, SyntaxError, ValueError) as err:
        # PIL reports truncated and corrupt data as OSError (and SyntaxError for broken headers).
        raise ImageDecodeError(uri, f"truncated or corrupt image: {err}") from None


def _draft(image: Image.Image, max_side: int) -> int:
    """Let libjpeg decode ``image`` reduced by the largest of 2, 4, 8 that keeps its longest side
    at least ``max_side``; returns the factor (1: full size; not a JPEG, or not large enough)."""
    if image.format not in ("JPEG", "MPO"):
        return 1
    width, height = image.size
    longest = max(width, height)
    if longest < 2 * max_side:
        return 1
    # Pillow picks the largest factor whose result is at least the size asked, on each side.
    asked = (max(1, -(-width * max_side // longest)), max(1, -(-height * max_side // longest)))
    drafted = image.draft("RGB", asked)
    if drafted is None:  # progressive/multi-scan quirks: Pillow declined, decode in full
        return 1
    return round(width / drafted[1][2])


def _to_rgb8(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16/32-bit and float grayscale: PIL's convert("L") clips instead of scaling.
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or values.max(initial=0) <= 65535 else values.max()
        if mode == "F":
            top = max(float(values.max(initial=0)), 1.0)
        gray = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if mode != "RGB":
        # Covers L, LA, P, PA, RGBA, CMYK, YCbCr, 1. Alpha is dropped as a photo viewer
        # (and OpenCV, hence a plain ultralytics predict) would show the colour channels.
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)
