"""age through a pipe (service/backup/sealed.py): a stream goes in and comes out a chunk at
a time, never whole in memory; age's refusals come out as DecryptFailed."""

from __future__ import annotations

import hashlib
import io
import os
import tracemalloc
from pathlib import Path

import pyrage
import pytest
from pyrage import x25519

from service.backup.sealed import AGE_MAGIC, DecryptFailed, decrypting, encrypting

CHUNK = 1 << 20
TOTAL = 64  # MiB through each direction


def test_a_large_stream_goes_through_a_chunk_at_a_time(tmp_path: Path) -> None:
    """64 MiB in, 64 MiB out, and Python's own peak allocation stays at a few chunks: a
    version that held the stream (or the file) whole would peak at 64 MiB or more."""
    identity = x25519.Identity.generate()
    chunk = os.urandom(CHUNK)
    sealed = tmp_path / "b.age"
    tracemalloc.start()
    try:
        with sealed.open("wb") as out, encrypting(out, [identity.to_public()]) as plain:
            for _ in range(TOTAL):
                plain.write(chunk)
        _, written_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        digest, size = hashlib.sha256(), 0
        with sealed.open("rb") as source, decrypting(source, [identity]) as plain_in:
            while block := plain_in.read(CHUNK):
                digest.update(block)
                size += len(block)
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sealed.read_bytes()[: len(AGE_MAGIC)] == AGE_MAGIC
    assert sealed.stat().st_size > TOTAL * CHUNK  # encrypted, not compressed away
    assert size == TOTAL * CHUNK
    assert digest.digest() == hashlib.sha256(chunk * TOTAL).digest()
    assert written_peak < 8 * CHUNK, written_peak
    assert read_peak < 8 * CHUNK, read_peak


def test_a_reader_that_stops_early_is_not_left_hanging() -> None:
    """The reader's own error comes out; age's thread ends on the closed pipe."""
    identity = x25519.Identity.generate()
    out = io.BytesIO()
    with encrypting(out, [identity.to_public()]) as plain:
        plain.write(os.urandom(4 * CHUNK))
    with (
        pytest.raises(LookupError, match="the reader's"),
        decrypting(io.BytesIO(out.getvalue()), [identity]) as plain_in,
    ):
        plain_in.read(10)
        raise LookupError("the reader's")


@pytest.mark.parametrize("damage", ["flipped", "cut"])
def test_an_altered_stream_is_refused_even_when_the_reader_is_content(damage: str) -> None:
    """age proves the stream whole only at its last chunk: a reader that stops early (a tar
    reader at its end-of-archive) still learns of a damaged or missing tail."""
    identity = x25519.Identity.generate()
    out = io.BytesIO()
    with encrypting(out, [identity.to_public()]) as plain:
        plain.write(os.urandom(4 * CHUNK))
    data = bytearray(out.getvalue())
    if damage == "flipped":
        data[-100] ^= 1
    else:
        del data[-100:]
    with (
        pytest.raises(DecryptFailed),
        decrypting(io.BytesIO(bytes(data)), [identity]) as plain_in,
    ):
        plain_in.read(10)


class Full(io.BytesIO):
    """An output that fills up after 1 MiB, as a disk does."""

    def write(self, data: bytes, /) -> int:  # type: ignore[override]
        if self.tell() + len(data) > CHUNK:
            raise OSError(28, "No space left on device")
        return super().write(data)


@pytest.mark.timeout(30)
def test_an_output_that_fills_up_fails_the_writer_instead_of_hanging_it() -> None:
    """age stops reading the pipe when its output fails: the writer gets the disk's error,
    as age reports it (not a broken pipe, not a wait on a pipe nobody reads any more)."""
    identity = x25519.Identity.generate()
    with (
        pytest.raises(pyrage.EncryptError, match="No space left on device"),
        encrypting(Full(), [identity.to_public()]) as plain,
    ):
        for _ in range(16):
            plain.write(os.urandom(CHUNK))
