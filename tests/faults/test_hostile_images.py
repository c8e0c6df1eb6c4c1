"""Case 7: hostile and unusual images. Each is a named failure or a correct result, decoded by
the library and then run through the real detector and database; a decompression bomb fails by
name inside a 1 GiB address-space limit (it would need 2.7 GB decoded)."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bootstrap.decode import ImageDecodeError, decode_image
from tests.helpers import PLAIN_CONFIG, ROOT, needs_model

# PIL warns about the broken EXIF blocks it skips: expected here.
pytestmark = pytest.mark.filterwarnings("ignore:(Corrupt EXIF data|Tag data larger):UserWarning")

BOMB_REASON = "image too large to decode safely: Image size (900000000 pixels) exceeds limit"


def _png_of_zeros(path: Path, width: int, height: int) -> None:
    """A grayscale PNG of ``width`` x ``height`` zero pixels, compressed to almost nothing:
    written row by row, never holding the image in memory."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer, row, body = zlib.compressobj(9), b"\0" * (width + 1), []
    for _ in range(height):
        body.append(packer.compress(row))
    body.append(packer.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(body))
                     + chunk(b"IEND", b""))


def _jpeg_with_exif(path: Path, exif_payload: bytes) -> None:
    """A 60x40 JPEG with ``exif_payload`` as its APP1 (Exif) segment."""
    buffer = io.BytesIO()
    Image.new("RGB", (60, 40), (200, 100, 50)).save(buffer, "JPEG")
    jpeg = buffer.getvalue()
    segment = b"\xff\xe1" + struct.pack(">H", len(exif_payload) + 2) + exif_payload
    path.write_bytes(jpeg[:2] + segment + jpeg[2:])


def _make(kind: str, folder: Path) -> Path:
    path = folder / kind
    if kind == "bomb.png":  # 30000 x 30000: 875 KB on disk, 900 M pixels
        _png_of_zeros(path, 30000, 30000)
    elif kind == "bomb-just-over.png":  # 10000 x 10000: between PIL's limit and twice it
        _png_of_zeros(path, 10000, 10000)
    elif kind == "one-pixel.png":
        Image.new("RGB", (1, 1), (10, 20, 30)).save(path)
    elif kind == "animated.gif":
        frames = [Image.new("P", (64, 48), i) for i in (1, 2, 3)]
        frames[0].putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=50)
    elif kind == "multipage.tif":
        pages = [Image.new("RGB", (40, 30), (i * 80, 0, 0)) for i in (1, 2, 3)]
        pages[0].save(path, save_all=True, append_images=pages[1:])
    elif kind == "gray16.tif":
        Image.fromarray(np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * 21).save(path)
    elif kind == "rgb16.tif":
        try:
            import tifffile  # PIL writes no 16-bit RGB TIFF; installed with scikit-image/Ultralytics
        except ImportError:
            return path
        rng = np.random.default_rng(0)
        tifffile.imwrite(path, rng.integers(0, 65536, (30, 40, 3), dtype=np.uint16))
    elif kind == "exif-orientation-9.jpg":  # an orientation value that does not exist
        exif = Image.Exif()
        exif[0x0112] = 9
        buffer = io.BytesIO()
        Image.new("RGB", (60, 40), (200, 100, 50)).save(buffer, "JPEG", exif=exif.tobytes())
        path.write_bytes(buffer.getvalue())
    elif kind == "exif-orientation-overflow.jpg":  # the tag's value points past the segment
        _jpeg_with_exif(path, b"Exif\0\0MM\0\x2a\0\0\0\x08\0\x05\x01\x12\0\x03\xff\xff\xff\xff\0\x01\0\0\0")
    elif kind == "exif-truncated.jpg":  # an IFD that ends after two bytes
        _jpeg_with_exif(path, b"Exif\0\0II\x2a\0\x08\0\0\0\xff\xff")
    elif kind == "exif-orientation-as-text.jpg":  # orientation stored as ASCII
        _jpeg_with_exif(path, b"Exif\0\0II\x2a\0\x08\0\0\0\x01\0\x12\x01\x02\0\x04\0\0\0abc\0\0\0\0\0")
    return path


#: (file, expected): a named failure (the reason's start) or the decoded (height, width) and
#: a check on the pixels.
CASES = [
    ("bomb.png", BOMB_REASON),
    ("bomb-just-over.png", "image too large to decode safely: Image size (100000000 pixels) exceeds limit"),
    ("one-pixel.png", ((1, 1), lambda px: px[0, 0].tolist() == [10, 20, 30])),
    ("animated.gif", ((48, 64), lambda px: px[0, 0].tolist() == [255, 0, 0])),  # frame 1
    ("multipage.tif", ((30, 40), lambda px: px[0, 0].tolist() == [80, 0, 0])),  # page 1
    ("gray16.tif", ((48, 64), lambda px: px[-1, -1, 0] == round(3071 * 21 / 65535 * 255))),
    ("rgb16.tif", ((30, 40), lambda px: px.dtype == np.uint8 and px.max() > 250)),
    ("exif-orientation-9.jpg", ((40, 60), lambda px: abs(int(px[20, 30, 0]) - 200) < 8)),
    ("exif-orientation-overflow.jpg", ((40, 60), lambda px: abs(int(px[20, 30, 0]) - 200) < 8)),
    ("exif-truncated.jpg", ((40, 60), lambda px: abs(int(px[20, 30, 0]) - 200) < 8)),
    ("exif-orientation-as-text.jpg", ((40, 60), lambda px: abs(int(px[20, 30, 0]) - 200) < 8)),
]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hostile")
    for kind, _ in CASES:
        _make(kind, folder)
    return folder


@pytest.mark.parametrize(("kind", "expected"), CASES, ids=[k for k, _ in CASES])
def test_each_hostile_image_is_a_named_failure_or_correct(hostile, kind, expected):
    path = hostile / kind
    if not path.exists():
        pytest.skip(f"{kind}: tifffile is not installed to write it")
    if isinstance(expected, str):
        with pytest.raises(ImageDecodeError) as failure:
            decode_image(str(path))
        assert failure.value.reason.startswith(expected)
        return
    shape, check = expected
    pixels = decode_image(str(path)).pixels
    assert pixels.shape == (*shape, 3) and pixels.dtype == np.uint8
    assert check(pixels), pixels[0, 0]


def test_the_bomb_fails_by_name_within_a_memory_limit(hostile):
    """In a child whose address space is capped at 1 GiB: a decoder that tried would die of
    MemoryError (or be killed) instead of naming the bomb."""
    probe = (
        "import resource; resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "from bootstrap.decode import decode_image, ImageDecodeError\n"
        f"try:\n    decode_image({str(hostile / 'bomb.png')!r})\n"
        "except ImageDecodeError as e:\n    print('NAMED', e.reason)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(f"NAMED {BOMB_REASON}")
    assert (hostile / "bomb.png").stat().st_size < 1_000_000


@needs_model
def test_annotate_over_hostile_images_names_each_failure_and_stores_the_rest(
    hostile, dataset_name, report_case
):
    from bootstrap.annotate import run_annotation
    from bootstrap.config import DEFAULT_EXTENSIONS, SourceConfig, load_pipeline_config
    from bootstrap.store import ImageStore

    # GIFs are not among the default extensions (a folder's GIFs are rarely photos): opted in.
    source = SourceConfig(path=str(hostile), extensions=(*DEFAULT_EXTENSIONS, ".gif"))
    config = load_pipeline_config(PLAIN_CONFIG, dataset=dataset_name, detector={"batch_size": 4})
    config = config.model_copy(update={"sources": (source,)})
    summary = run_annotation(config)
    failed = dict(summary.failed)
    names = {Path(p).name: reason for p, reason in failed.items()}
    assert set(names) == {"bomb.png", "bomb-just-over.png"}
    assert names["bomb.png"].startswith(BOMB_REASON)
    store = ImageStore(dataset_name)
    sizes = {Path(p).name: (m.width, m.height) for p, m, s in zip(
        *store.dataset.values(["filepath", "metadata", "state"]), strict=True) if s != "failed"}
    assert sizes["one-pixel.png"] == (1, 1) and sizes["animated.gif"] == (64, 48)
    assert sizes["gray16.tif"] == (64, 48) and sizes["exif-truncated.jpg"] == (60, 40)
    assert store.status()["pending"] == 0 and len(sizes) == len(list(hostile.iterdir())) - 2
    report_case(
        "hostile-images",
        seen=f"failed bomb.png: {names['bomb.png']}",
        lost="nothing: both bombs failed by name (one inside a 1 GiB address-space limit); the "
             "1-pixel image, the animated GIF (frame 1), the multi-page TIFF (page 1), 16-bit "
             "gray and RGB TIFFs (scaled to 8 bits) and four JPEGs with broken EXIF orientation "
             "(left upright as stored) were decoded and detected",
    )
