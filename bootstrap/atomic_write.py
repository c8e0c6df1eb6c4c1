"""Write a file so that readers see the old content or the new, never half of it.

The text goes to a temporary file beside the target, is flushed to disk, then renamed over the
target (``os.replace`` is atomic on one file system). A write interrupted at any point (Ctrl+C,
SIGTERM, a full disk) leaves the target as it was; the temporary file is removed unless the
process is killed outright (SIGKILL), and even then the target is intact.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_text_atomic(path: str | Path, text: str, mode: int | None = None) -> Path:
    """Replace ``path`` with ``text`` (UTF-8) atomically and return it.

    ``mode``: the new file's permissions (e.g. ``0o600`` for a secret); default: the existing
    file's, or ``0o666`` less the umask for a new one, as ``open()`` would give.
    """
    path = Path(path)
    if mode is None:
        try:
            mode = path.stat().st_mode & 0o777
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(handle, mode)  # before any byte is written: a secret is never readable
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    return path
