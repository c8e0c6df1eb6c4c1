"""Decode image files safely into 8-bit RGB arrays.

Real corpora hold rotated phone photos, grayscale scans, PNGs with alpha, 16-bit TIFFs, CMYK
JPEGs from print workflows, and files that are empty, truncated or not images at all. Each of
those either becomes a plain RGB array in the orientation a person sees, or raises
``ImageDecodeError`` with a reason that is stored on the sample; it never stops a run.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


class ImageDecodeError(Exception):
    """The file cannot be used as an image; ``reason`` says why in a few words."""

    def __init__(self, uri: str, reason: str):
        super().__init__(f"{uri}: {reason}")
        self.uri = uri
        self.reason = reason


@dataclass(frozen=True, slots=True)
class DecodedImage:
    """An image ready for a detector: ``pixels`` is HxWx3 uint8 RGB, upright."""

    uri: str
    pixels: np.ndarray

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])


def decode_image(uri: str) -> DecodedImage:
    """Read ``uri`` and return it upright (EXIF orientation applied) as 8-bit RGB.

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
                    image.load()  # decode now, so truncation surfaces here and not later
                    upright = ImageOps.exif_transpose(image)
                    return DecodedImage(uri=uri, pixels=_to_rgb8(upright))
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
