"""Discovery: find image files lazily, in a stable order, and identify them by content.

Files are yielded one at a time (a folder of a million images is never listed into memory at
once; only one directory's entries are, to sort them). Each image's identity is the SHA-256 of
its bytes, so a renamed or copied file is recognised as one already annotated.

Only local paths are walked today. ``iter_image_files`` dispatches on the source's scheme so an
fsspec-backed walker (``s3://bucket/prefix``) can be added beside ``_walk_local`` without
changing its callers: everything downstream sees ``ImageFile`` (a URI, a size and a modification
time) and reads bytes through ``open_image_bytes``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bootstrap.config import SourceConfig

log = logging.getLogger(__name__)

#: Called with ``(path, reason)`` for what discovery had to leave out: a folder it cannot list,
#: a file it cannot stat (a symlink loop), a name the database cannot store.
OnError = Callable[[str, str], None]


class SourceError(ValueError):
    """A configured source that cannot be walked (missing folder, unsupported scheme)."""


@dataclass(frozen=True, slots=True)
class ImageFile:
    """A candidate image as found on storage, before its bytes are read."""

    uri: str
    size: int
    mtime_ns: int


def iter_image_files(
    sources: Iterable[SourceConfig], on_error: OnError | None = None
) -> Iterator[ImageFile]:
    """Yield every image file of ``sources``, lazily, sorted by path within each source.

    What cannot be walked or stored (a folder without read permission, a symlink loop, a file
    name that is not UTF-8) is passed to ``on_error(path, reason)`` (default: logged) and the
    walk goes on. Symlinked folders are not descended, so a symlink loop cannot trap it.

    Raises:
        SourceError: a source names a path that does not exist or an unsupported URL scheme.
    """
    on_error = on_error or _log_error
    for source in sources:
        location = source.path if source.path is not None else source.glob
        assert location is not None  # guaranteed by SourceConfig
        scheme = _scheme(location)
        if scheme != "file":
            raise SourceError(
                f"source '{location}': scheme '{scheme}://' is not supported yet; "
                "only local folders, files and globs are"
            )
        yield from _walk_local(source, on_error)


def source_root(source: SourceConfig) -> Path:
    """The folder (or file) a source is walked from: its path, or a glob's fixed folder."""
    if source.path is not None:
        return Path(source.path).expanduser().resolve()
    assert source.glob is not None
    return _split_glob(source.glob)[0]


def content_hash(uri: str) -> str:
    """SHA-256 of the file's bytes, as hex: the image's identity in the dataset."""
    with open(uri, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _scheme(location: str) -> str:
    match = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://", location)
    return match.group(1).lower() if match else "file"


def _log_error(path: str, reason: str) -> None:
    log.warning("left out %s: %s", path, reason)


def printable_path(path: str) -> str:
    """``path`` with bytes that are not UTF-8 shown as ``\\xff`` escapes (as ``ls -b`` does)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _walk_local(source: SourceConfig, on_error: OnError) -> Iterator[ImageFile]:
    if source.path is not None:
        root = Path(source.path).expanduser().resolve()
        if root.is_file():
            if root.name.startswith("."):  # as in a folder: hidden files are not registered
                on_error(printable_path(str(root)), "hidden file (its name starts with '.'): "
                         "not registered; rename it")
            elif (image := _checked(_image_file(root), on_error)) is not None:
                yield image
            return
        if not root.is_dir():
            raise SourceError(f"source path '{source.path}': no such file or folder")
        yield from _walk_sorted(root, source.extensions, source.recursive, None, on_error)
    else:
        assert source.glob is not None
        root, rest = _split_glob(source.glob)
        if not root.is_dir():
            raise SourceError(f"source glob '{source.glob}': folder '{root}' does not exist")
        pattern = re.compile(_glob_to_regex(rest), re.IGNORECASE)
        # Descend only when the pattern can match below the fixed folder.
        recursive = "/" in rest or "**" in rest
        yield from _walk_sorted(root, source.extensions, recursive, pattern, on_error)


def _walk_sorted(
    root: Path,
    extensions: tuple[str, ...],
    recursive: bool,
    pattern: re.Pattern[str] | None,
    on_error: OnError,
) -> Iterator[ImageFile]:
    # os.walk would list the whole tree's order up front only per directory too, but sorts
    # nothing; scandir + sort gives the same order on every run and every file system.
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as entries:
                listing = sorted(entries, key=lambda e: e.name)
        except OSError as err:
            on_error(printable_path(str(folder)), f"cannot list folder: {err.strerror or err}")
            continue
        subfolders = []
        for entry in listing:
            if entry.is_dir(follow_symlinks=False):
                if recursive and not entry.name.startswith("."):
                    subfolders.append(Path(entry.path))
                continue
            if not entry.name.lower().endswith(extensions) or entry.name.startswith("."):
                continue
            path = Path(entry.path)
            if pattern is not None and not pattern.fullmatch(path.relative_to(root).as_posix()):
                continue
            try:
                stat = entry.stat()
            except OSError as err:  # a dangling link, a symlink loop
                on_error(printable_path(str(path)), f"cannot read: {err.strerror or err}")
                continue
            image = ImageFile(uri=str(path), size=stat.st_size, mtime_ns=stat.st_mtime_ns)
            if _checked(image, on_error) is not None:
                yield image
        # Reversed so that the stack pops subfolders in sorted order (depth first).
        stack.extend(reversed(subfolders))


def _checked(image: ImageFile, on_error: OnError) -> ImageFile | None:
    """``image``, or None (reported) when its name cannot be stored: the database holds paths
    as UTF-8 text, and a name with other bytes would fail the whole batch it is written in."""
    try:
        image.uri.encode("utf-8")
    except UnicodeEncodeError:
        on_error(
            printable_path(image.uri),
            "file name is not valid UTF-8 (the database stores paths as UTF-8 text); rename it, "
            "e.g. with `convmv -f latin1 -t utf8`",
        )
        return None
    return image


def _image_file(path: Path) -> ImageFile:
    stat = path.stat()
    return ImageFile(uri=str(path), size=stat.st_size, mtime_ns=stat.st_mtime_ns)


def _split_glob(pattern: str) -> tuple[Path, str]:
    """Split ``data/**/*.jpg`` into the fixed folder ``data`` and the pattern ``**/*.jpg``."""
    parts = Path(pattern).expanduser().parts
    fixed: list[str] = []
    for part in parts:
        if any(c in part for c in "*?["):
            break
        fixed.append(part)
    root = Path(*fixed).resolve() if fixed else Path.cwd()
    rest = parts[len(fixed):]
    return root, "/".join(rest)


def _glob_to_regex(glob: str) -> str:
    # fnmatch.translate lets '*' cross '/', and glob.translate arrives only in Python 3.13.
    out, i = "", 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif glob.startswith("**", i):
            out, i = out + ".*", i + 2
        elif glob[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif glob[i] == "?":
            out, i = out + "[^/]", i + 1
        elif glob[i] == "[":
            end = glob.find("]", i + 1)
            if end == -1:
                out, i = out + re.escape(glob[i]), i + 1
            else:
                body = glob[i + 1 : end].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                out, i = out + f"[{body}]", end + 1
        else:
            out, i = out + re.escape(glob[i]), i + 1
    return out
