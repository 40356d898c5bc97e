"""A deterministic stand-in for :class:`service.vault.transit.Transit`, for the unit tests of
the two apps' HTTP edges (tests/unit/webhook/test_app.py, tests/unit/backend/test_app.py).

It proves nothing about Vault and must not be used to: it only keeps the edges' own logic
testable without processes. The integration tests keep the real Transit.

- ``encrypt`` → ``vault:v<version>:`` + base64(context ‖ ``|`` ‖ plaintext): shaped like a
  Transit ciphertext, so the apps' shape checks pass, and bound to its context: ``decrypt``
  with another context (another call, the other field) fails, as Transit's would.
- ``hmac`` → ``vault:v<version>:`` + sha256 hex of ``hmac_key`` and the input: stable
  verifiers; another ``hmac_key`` plays another Vault's ``ivr-lookup``.
- ``fail_with``: the next calls raise it (a ``VaultUnavailable``, or any exception for
  "a bug").
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from service.errors import DecryptionError
from service.formats import ciphertext_version
from service.settings import Settings
from service.vault.session import TransitSession
from service.vault.transit import Encrypted
from service.web.metrics import Metrics

SEPARATOR = b"|"


class FakeTransit:
    def __init__(self, *, version: int = 1, hmac_key: bytes = b"") -> None:
        self.version = version
        self.hmac_key = hmac_key
        self.fail_with: BaseException | None = None
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fake-transit")
        self.encrypted: list[tuple[bytes, bytes]] = []  # (plaintext, context), in order
        self.closed = False

    def seal(self, plaintext: bytes, context: bytes, *, version: int | None = None) -> str:
        """What ``encrypt`` returns, synchronously: for tests that need a ciphertext."""
        body = base64.b64encode(context + SEPARATOR + plaintext).decode("ascii")
        return f"vault:v{version or self.version}:{body}"

    def _check(self) -> None:
        if self.fail_with is not None:
            raise self.fail_with

    async def encrypt(self, plaintext: bytes, context: bytes) -> Encrypted:
        self._check()
        self.encrypted.append((plaintext, context))
        return Encrypted(self.seal(plaintext, context), self.version)

    async def decrypt(self, items: Sequence[tuple[str, bytes]]) -> list[bytes]:
        self._check()
        out = []
        for ciphertext, context in items:
            if ciphertext_version(ciphertext) is None:
                raise DecryptionError()
            raw = base64.b64decode(ciphertext.split(":", 2)[2])
            bound, separator, plaintext = raw.partition(SEPARATOR)
            if not separator or bound != context:
                raise DecryptionError()
            out.append(plaintext)
        return out

    async def hmac(
        self,
        inputs: Sequence[bytes],
        *,
        key_version: int | None = None,
    ) -> list[str]:
        self._check()
        version = key_version or self.version
        return [
            f"vault:v{version}:{hashlib.sha256(self.hmac_key + data).hexdigest()}"
            for data in inputs
        ]

    async def aclose(self) -> None:
        self.closed = True
        self.executor.shutdown(wait=False)


def fake_session(transit: FakeTransit) -> TransitSession:
    """A ``transit_session`` for ``create_*_app``: hands out ``transit``, closes it after."""

    @asynccontextmanager
    async def session(settings: Settings, metrics: Metrics) -> AsyncIterator[FakeTransit]:
        try:
            yield transit
        finally:
            await transit.aclose()

    return session  # type: ignore[return-value]  # duck-typed Transit
