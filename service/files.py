"""Private files (keys, tokens, credentials, backups), written one way.

The file is written in full beside its final place and then renamed over it, so a reader
sees the old file or the new one, never half of one. The temporary file:

- is created exclusively (``O_CREAT | O_EXCL``) under a random name in the same directory,
  without following a link (``O_NOFOLLOW``). The old code opened a fixed
  ``NAME.partial`` with ``O_TRUNC``: ``ln -s victim.txt bk/out.tgz.partial`` made
  ``ivr-vault backup --out bk/out.tgz`` write the whole backup into ``victim.txt``
  (docs/security.md, "private files through links");
- is mode 0600 from creation (``tempfile.mkstemp``), whatever the umask, so no other user
  can open it between creation and a chmod;
- is fsync'd before ``os.replace``, and the directory after, so a crash leaves the old
  file or the new one.

``os.replace`` replaces a link at the final path itself; it never writes through it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

PRIVATE = 0o600
PRIVATE_DIR = 0o700


@contextlib.contextmanager
def private_writer(path: Path, *, mode: int = PRIVATE) -> Iterator[BinaryIO]:
    """A binary file to stream into; it becomes ``path`` (with ``mode``) when the block
    ends without an exception, and is removed otherwise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    partial = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            if mode != PRIVATE:  # a certificate, readable by others on purpose
                os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_private(path: Path, data: bytes | str, *, mode: int = PRIVATE) -> None:
    """Replace ``path`` with ``data`` (text is written as UTF-8), as :func:`private_writer`."""
    with private_writer(path, mode=mode) as handle:
        handle.write(data.encode("utf-8") if isinstance(data, str) else data)


def create_private(path: Path) -> None:
    """Create ``path`` empty at 0600 unless it exists (never through a link), so that a
    program that then opens it (SQLite, which gives its ``-wal``/``-shm`` the database
    file's mode) does not create it at 0644."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, PRIVATE))


def private_dir(path: Path, mode: int = PRIVATE_DIR) -> Path:
    """Create ``path`` (and its parents) if needed, and set its own mode to ``mode``."""
    path.mkdir(parents=True, exist_ok=True, mode=mode)
    os.chmod(path, mode)
    return path


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable (POSIX: the directory entry is the directory's data)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:  # a directory we may write to but not open: the rename still happened
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
