"""A backup's outer layer: age encryption to the operators' public keys, streamed.

pyrage (the Rust age implementation) encrypts and decrypts a stream with ``encrypt_io``
and ``decrypt_io``, each of which reads one file object and writes another. The tarball is
written (and read) by :mod:`tarfile` on our side, so the two are joined by a pipe and age
runs in a thread: nothing is held whole in memory. Measured with 300 MiB through each
direction: 1 s, and the process's peak RSS stayed at 13 MB (tests/unit/backup/
test_sealed.py keeps the bound). The GIL is no obstacle: the pipe's reads and writes
release it while they wait.

age authenticates its payload in 64 KiB chunks and marks the last one, so an altered or cut
ciphertext fails in ``decrypt_io``; what it yielded before that is only ever written to
private temporary files, and nothing is restored until the whole stream has been read
(service/backup/archive.py).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from io import BufferedIOBase
from pathlib import Path
from typing import BinaryIO, cast

import pyrage
from pyrage import x25519

from service.errors import BadInput

# The first line of every binary age file (age-encryption.org/v1): how restore tells a
# sealed backup from a plain one (gzip: 1f 8b) before it needs an identity.
AGE_MAGIC = b"age-encryption.org/v1\n"


def recipients(keys: Sequence[str], flag: str) -> list[x25519.Recipient]:
    """The age public keys (``age1…``) a backup is encrypted to; one line naming ``flag``
    (never the key: the line says what was expected) for one that is not."""
    parsed = []
    for number, key in enumerate(keys, start=1):
        try:
            parsed.append(x25519.Recipient.from_str(key.strip()))
        except pyrage.RecipientError:
            raise BadInput(
                f"{flag}: recipient {number} is not an age public key (age1…, as "
                "`age-keygen -y` or `ivr-vault backup-identity` prints it)"
            ) from None
    return parsed


def read_identities(path: Path) -> list[x25519.Identity]:
    """The age identities (``AGE-SECRET-KEY-1…`` lines) in ``path``, as age-keygen writes
    them (comments start with #)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(f"--identity: no such file: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"--identity: cannot read {path} ({type(exc).__name__})") from None
    found = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            try:
                found.append(x25519.Identity.from_str(line.strip()))
            except pyrage.IdentityError:
                raise BadInput(
                    f"--identity: {path} holds a line that is not an age identity "
                    "(AGE-SECRET-KEY-1…)"
                ) from None
    if not found:
        raise BadInput(f"--identity: {path} holds no age identity (AGE-SECRET-KEY-1…)")
    return found


def _buffered(handle: BinaryIO) -> BufferedIOBase:
    # pyrage-stubs name BufferedIOBase; pyrage calls only read/write/flush on it, which
    # every binary file (ours are BufferedReader/BufferedWriter) has.
    return cast("BufferedIOBase", handle)


class _Worker:
    """age on one side of a pipe, in a thread; its exception kept for the caller."""

    def __init__(self, name: str, run: Callable[[], object]) -> None:
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(run,), name=name, daemon=True)
        self._thread.start()

    def _run(self, run: Callable[[], object]) -> None:
        try:
            run()
        except BaseException as exc:  # reported by whoever joins the thread
            self.error = exc

    def join(self) -> BaseException | None:
        self._thread.join()
        return self.error


@contextlib.contextmanager
def encrypting(out: BinaryIO, to: Sequence[x25519.Recipient]) -> Iterator[BinaryIO]:
    """A file to write the plaintext into; ``out`` receives it encrypted to ``to``. When
    age fails (``out`` full), the writer's next write fails instead of waiting on the pipe
    forever, and age's error is raised, not the writer's broken pipe."""
    read_fd, write_fd = os.pipe()
    source = os.fdopen(read_fd, "rb")

    def run() -> None:
        try:
            pyrage.encrypt_io(_buffered(source), _buffered(out), list(to))
        finally:
            source.close()

    worker = _Worker("age-encrypt", run)
    failure: BaseException | None = None
    try:
        with os.fdopen(write_fd, "wb") as sink:
            yield sink
    except BaseException as exc:
        failure = exc
    error = worker.join()  # the sink is closed: age has read to the end, or failed
    if error is not None:
        raise error
    if failure is not None:
        raise failure


class DecryptFailed(Exception):
    """age refused the stream: not encrypted to these identities, or altered."""


@contextlib.contextmanager
def decrypting(source: BinaryIO, identities: Sequence[x25519.Identity]) -> Iterator[BinaryIO]:
    """The plaintext of ``source`` as a file to read. When the block ends, whatever the
    reader left is read too (age proves the stream whole only at its last chunk), and
    when age refused the stream (at once for identities it was not encrypted to, at the
    damaged chunk for an altered or cut one) :class:`DecryptFailed` is raised, in place of
    whatever the reader made of the stream cut short. Measured with pyrage 1.4: the wrong
    identity raises ``DecryptError("No matching keys found")``, a changed byte in the
    payload ``OSError("decryption error")``, a reader that stops early ``BrokenPipeError``."""
    read_fd, write_fd = os.pipe()
    sink = os.fdopen(write_fd, "wb")

    def run() -> None:
        try:
            pyrage.decrypt_io(_buffered(source), sink, list(identities))
        finally:
            sink.close()  # the reader sees the end of the stream

    with os.fdopen(read_fd, "rb") as plain:
        worker = _Worker("age-decrypt", run)
        failure: BaseException | None = None
        try:
            yield plain
            while plain.read(1 << 16):
                pass
        except BaseException as exc:
            failure = exc
        finally:
            plain.close()  # a reader that stopped early: age's next write fails, it ends
            error = worker.join()
    if isinstance(error, pyrage.DecryptError) or (
        isinstance(error, OSError) and not isinstance(error, BrokenPipeError)
    ):
        raise DecryptFailed(str(error).splitlines()[0] if str(error) else "refused") from None
    if failure is not None:
        raise failure
    if error is not None and not isinstance(error, BrokenPipeError):
        raise error
