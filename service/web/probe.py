"""Container health probe: ``python -m service.web.probe [--ready]``.

The slim image has no curl or wget, and one image runs either service, so the probe asks
both ports on loopback and succeeds if the service in this container answers 200 on
``/healthz`` (liveness, the Dockerfile's HEALTHCHECK) or ``/readyz`` (``--ready``: Vault,
token and key usable, and for the webhook the backend too; compose's ``depends_on``).
Standard library only, so a probe costs no more than an interpreter start.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence


def _ports() -> list[str]:
    ports = [os.environ.get("WEBHOOK_PORT", "8080"), os.environ.get("BACKEND_PORT", "8081")]
    return list(dict.fromkeys(p for p in ports if p.isdigit()))


def probe(path: str, ports: Sequence[str], *, timeout: float = 3.0) -> bool:
    for port in ports:
        url = f"http://127.0.0.1:{port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            continue
    return False


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    path = "/readyz" if "--ready" in args else "/healthz"
    return 0 if probe(path, _ports()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
