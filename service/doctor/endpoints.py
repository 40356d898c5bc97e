"""What the outside sees: each service's ``/readyz``, the public URL Twilio calls, and the
Twilio setting no API shows (Voice PCI Mode)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from urllib.parse import urlsplit

import httpx

from service.backend.keycheck import WAY_OUT
from service.doctor.report import Check
from service.settings import Settings

TIMEOUT_S = 5.0

# What to do about each check a /readyz can name as failing.
_READY_FIXES = {
    "vault": "the service cannot use Vault: see the vault and identity rows",
    "ivr-lookup": f"this Vault cannot reproduce the store's canary: {WAY_OUT}",
    "backend": "the webhook cannot reach the backend at BACKEND_URL: start it, or fix BACKEND_URL",
    "timeout": "a check took longer than 2 s: Vault or the backend is slow to answer",
}


def local_url(host: str, port: int) -> str:
    """A service's own address as seen from this machine: a wildcard listener is asked on
    loopback."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host  # noqa: S104
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


def readyz_check(role: str, base_url: str) -> Check:
    name = f"{role} /readyz"
    url = f"{base_url.rstrip('/')}/readyz"
    start = f"start the {role} (make run; docker compose up {role}), or give doctor its URL"
    try:
        response = httpx.get(url, timeout=TIMEOUT_S)
    except httpx.HTTPError as exc:
        return Check.failed(name, f"{url}: no answer ({type(exc).__name__})", start)
    try:
        checks = response.json().get("checks", {})
    except (ValueError, AttributeError):
        checks = {}
    shown = ", ".join(f"{k} {'ok' if v else 'failing'}" for k, v in checks.items())
    if response.status_code == 200:
        return Check.passed(name, f"{url}: ready ({shown})")
    failing = [k for k, v in checks.items() if v is False]
    if response.status_code != 503 or not failing:
        return Check.failed(
            name, f"{url}: answered {response.status_code}, not the {role}'s readiness", start
        )
    fix = "; ".join(_READY_FIXES.get(k, f"{k}: see the service's log") for k in failing)
    return Check.failed(name, f"{url}: not ready ({shown})", fix)


def _limit(base_url: str, name: str) -> float | None:
    """A setting a service shows in its ``/readyz`` (``limits``), or None."""
    try:
        shown = httpx.get(f"{base_url.rstrip('/')}/readyz", timeout=TIMEOUT_S).json()
        value = shown["limits"][name]
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None
    return float(value) if isinstance(value, int | float) else None


def step_age_check(webhook_url: str, backend_urls: Sequence[str]) -> Check:
    """The webhook's STEP_MAX_AGE is at most every backend's CALL_MAX_AGE: a step the
    webhook still accepts must be one the backend still remembers. (The backend refuses
    an older one with 410, so a mismatch costs calls, not safety: callers of a slow step
    hear "session expired".)"""
    name = "step age vs backend memory"
    step = _limit(webhook_url, "step_max_age_s")
    memories = {url: _limit(url, "call_max_age_s") for url in backend_urls}
    unknown = [url for url, memory in memories.items() if memory is None]
    if step is None or unknown:
        who = ", ".join(([] if step is not None else [webhook_url]) + unknown)
        # Not a second ✗ for a service that does not answer: its /readyz row says so.
        return Check.reminder(name, f"cannot tell: no limits in the /readyz of {who}")
    short = {
        url: memory for url, memory in memories.items() if memory is not None and memory < step
    }
    if short:
        shown = ", ".join(f"{url} {memory:g} s" for url, memory in short.items())
        return Check.failed(
            name,
            f"the webhook's STEP_MAX_AGE ({step:g} s) is longer than "
            f"CALL_MAX_AGE at {shown}: the backend refuses steps it "
            'no longer remembers, and those callers hear "session '
            'expired"',
            "give the backends a CALL_MAX_AGE of at least the webhook's "
            "STEP_MAX_AGE, or shorten STEP_MAX_AGE",
        )
    least = min(m for m in memories.values() if m is not None)
    return Check.passed(
        name, f"STEP_MAX_AGE {step:g} s ≤ CALL_MAX_AGE {least:g} s of {len(memories)} backend(s)"
    )


def is_development_host(host: str) -> bool:
    """Loopback (127.0.0.0/8, ::1) or ``localhost``: a URL only this machine can call,
    which is what development looks like. Anything else is treated as production."""
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def public_url_check(settings: Settings) -> Check:
    """PUBLIC_BASE_URL is https unless it is a development (loopback) URL. Twilio refuses
    no http URL by itself, but a caller's ciphertext and Twilio's signature would cross the
    internet in clear, and PCI Mode refuses a non-https <Gather> action."""
    name = "public URL"
    url = settings.public_base_url
    if not url:
        proxies = ", ".join(map(str, settings.trusted_proxies))
        return Check.passed(
            name,
            "PUBLIC_BASE_URL empty: signatures are checked against "
            f"the URL the trusted proxies ({proxies}) forward",
        )
    parts = urlsplit(url)
    if is_development_host(parts.hostname or ""):
        return Check.passed(
            name, f"{url}: a loopback URL (development); https is required only for a public one"
        )
    if parts.scheme != "https":
        return Check.failed(
            name,
            f"{url}: plain http on a public address",
            "PUBLIC_BASE_URL=https://… (the TLS proxy's URL, the one Twilio calls)",
        )
    return Check.passed(name, f"{url}: https")


def pci_reminder() -> Check:
    return Check.reminder(
        "Twilio PCI Mode",
        "not visible through Twilio's API, so not checked: turn on Voice PCI Mode (Console: "
        "Voice > Settings > General) so Twilio's own logs redact the digits callers type; "
        "it cannot be turned off again for that account, so give this service a "
        "subaccount of its own (docs/deployment.md)",
    )
