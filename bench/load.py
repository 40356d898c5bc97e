"""Load generation: pre-signed Twilio requests written to a file, replayed by wrk.

wrk (C, epoll) is much cheaper per request than the Python server it measures; Python
only prepares the requests beforehand, so no signing happens during a measurement.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from service.backend.enrolment import DEMO_ACCOUNT_NUMBER, DEMO_CARD, DEMO_PIN
from service.webhook.signature import compute_signature

LUA = Path(__file__).with_name("presigned.lua")
WRK_THREADS = 2  # one per core; more threads would only steal CPU from the server


@dataclass(frozen=True)
class Request:
    path: str
    params: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    ok: int
    bad: int
    wrapped: bool
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def call_params(call_sid: str, digits: str | None = None) -> tuple[tuple[str, str], ...]:
    params = {
        "CallSid": call_sid,
        "AccountSid": "AC" + "0" * 32,
        "From": "+15005550006",
        "To": "+15005550001",
        "CallStatus": "in-progress",
        "Direction": "inbound",
        "ApiVersion": "2010-04-01",
    }
    if digits is not None:
        params["Digits"] = digits
    return tuple(params.items())


def new_call_sid() -> str:
    return "CA" + secrets.token_hex(16)


# The card step after the caller pressed star (the registered-phone path: the demo
# account has the From below registered on it).
CARD_STEP = "/voice/card?registered=1"
REQUESTS_PER_CALL = 4  # /voice, /voice/account, /voice/card, /voice/pin
# Which identification the whole calls take (BENCH_CALL_PATH): "mix", every other call
# types the demo's account number (its /voice/account step encrypts it: one more Transit
# call than star), the others press star; "star" or "number": one path only.
CALL_PATHS = ("mix", "star", "number")


@dataclass(frozen=True)
class Call:
    """One whole call's pre-made ciphertexts (the webhook's own, made beforehand so that
    its steps can be pre-signed): the card's, and the typed account number's (None: the
    caller presses star)."""

    sid: str
    card: str
    number: str | None = None


def typed(path: str, count: int) -> list[bool]:
    """Per call, whether it types the account number (``path``: one of CALL_PATHS)."""
    if path not in CALL_PATHS:
        raise SystemExit(f"BENCH_CALL_PATH: expected one of {', '.join(CALL_PATHS)}")
    return [path == "number" or (path == "mix" and i % 2 == 1) for i in range(count)]


def card_requests(count: int) -> list[Request]:
    return [Request(CARD_STEP, call_params(new_call_sid(), DEMO_CARD)) for _ in range(count)]


def call_requests(calls: Sequence[Call]) -> list[Request]:
    """A whole call per :class:`Call`: /voice, /voice/account (star, or the account
    number), /voice/card, /voice/pin, each step's URL as the step before makes it (the
    identification rides in it; the PIN step's carries the card ciphertext). /voice/account
    and /voice/card still encrypt afresh."""
    out = []
    for call in calls:
        sid = call.sid
        out.append(Request("/voice", call_params(sid)))
        if call.number is None:
            account = (*call_params(sid, ""), ("FinishedOnKey", "*"))
            identification: dict[str, str | int] = {"registered": 1}
        else:
            account = (*call_params(sid, DEMO_ACCOUNT_NUMBER), ("FinishedOnKey", ""))
            identification = {"number": call.number}
        out.append(Request("/voice/account", account))
        out.append(Request(f"/voice/card?{urlencode(identification)}", call_params(sid, DEMO_CARD)))
        # The PIN step carries its issue time (STEP_MAX_AGE): the time these are made.
        query = {"card": call.card, "issued": int(time.time()), **identification}
        out.append(Request(f"/voice/pin?{urlencode(query)}", call_params(sid, DEMO_PIN)))
    return out


def write_requests(
    path: Path, requests: Iterable[Request], *, base_url: str, auth_token: str
) -> Path:
    with path.open("w", encoding="ascii") as out:
        for r in requests:
            signature = compute_signature(auth_token, base_url + r.path, list(r.params))
            out.write(f"{r.path}\t{urlencode(r.params)}\t{signature}\n")
    return path


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit("bench: wrk not found; `make bench` installs it (apt-get install -y wrk)")
    return found


def run_wrk(url: str, requests_file: Path, *, connections: int, seconds: float) -> WrkResult:
    threads = min(WRK_THREADS, connections)
    command = [
        wrk_binary(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        "-s",
        str(LUA),
        url,
        "--",
        str(requests_file),
        str(threads),
    ]
    out = subprocess.run(
        command, capture_output=True, text=True, check=True, timeout=seconds + 60
    ).stdout
    line = next((ln for ln in out.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    return WrkResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1e3,
        p90_ms=data["p90_us"] / 1e3,
        p99_ms=data["p99_us"] / 1e3,
        max_ms=data["max_us"] / 1e3,
        ok=data["ok"],
        bad=data["bad"],
        wrapped=bool(data["wrapped"]),
        errors=data["errors"],
    )
