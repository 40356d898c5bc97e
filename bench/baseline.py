"""The baseline: the very same webhook app, with Transit swapped for in-process AES-256-GCM.

This is what the tutorial did (a key in the process's memory) and what issue 6 compares
against. It lives only in bench/: the service never holds a raw key.

Run as ``python -m bench.baseline`` with the webhook's environment.
"""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from starlette.applications import Starlette

from service.cli.serve import uvicorn_options
from service.settings import Settings
from service.vault.transit import Encrypted
from service.webhook.app import create_webhook_app


class LocalAesTransit:
    """Same ``encrypt``/``aclose`` interface as :class:`service.transit.Transit`; the
    context is bound as associated data, the output shaped like a Transit ciphertext."""

    def __init__(self) -> None:
        self._aead = AESGCM(AESGCM.generate_key(bit_length=256))

    async def encrypt(self, plaintext: bytes, context: bytes) -> Encrypted:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext, context)
        return Encrypted("vault:v1:" + base64.b64encode(nonce + sealed).decode("ascii"), 1)

    async def aclose(self) -> None:
        return None


def create_baseline_app(settings: Settings) -> Starlette:
    app = create_webhook_app(settings)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with inner(app):
            app.state.webhook.transit = LocalAesTransit()
            yield

    app.router.lifespan_context = lifespan
    return app


def app_from_environ() -> Starlette:
    """uvicorn factory: with several workers each process builds its own app."""
    return create_baseline_app(Settings.from_environ())


def main() -> None:
    """Serve the baseline with the service's uvicorn options, or with the variants the
    bench compares (BENCH_LOOP, BENCH_HTTP, BENCH_WORKERS) to choose those options."""
    import uvicorn

    from service.logs.config import configure_logging

    settings = Settings.from_environ()
    configure_logging(fmt="json", level=settings.log_level, background=True)
    options = uvicorn_options()
    options["loop"] = os.environ.get("BENCH_LOOP", options["loop"])
    options["http"] = os.environ.get("BENCH_HTTP", options["http"])
    workers = int(os.environ.get("BENCH_WORKERS", "1"))
    if workers > 1:
        uvicorn.run(
            "bench.baseline:app_from_environ",
            factory=True,
            workers=workers,
            host="127.0.0.1",
            port=settings.webhook_port,
            **options,
        )
    else:
        uvicorn.run(
            create_baseline_app(settings), host="127.0.0.1", port=settings.webhook_port, **options
        )


if __name__ == "__main__":
    main()
