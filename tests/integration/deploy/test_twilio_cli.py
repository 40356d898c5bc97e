"""``ivr-vault twilio configure-number`` against a real local HTTP server.

Twilio's API is not reachable from here, so the transport is pointed (TWILIO_API_BASE_URL)
at a recorder that answers like api.twilio.com and keeps every request twilio-python sent:
the test checks the real request — path, method, form body, basic auth — not a mock call.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from service.cli.twilio import PCI_REMINDER
from service.devtools.devstack import free_port

ACCOUNT = "AC" + "0" * 31 + "1"
NUMBER_SID = "PN" + "a" * 32
NUMBER = "+15005550006"


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    form: dict[str, list[str]]
    authorization: str


@dataclass
class Recorder:
    url: str
    requests: list[Recorded] = field(default_factory=list)
    refuse: bool = False


def _number() -> dict[str, object]:
    return {
        "sid": NUMBER_SID,
        "account_sid": ACCOUNT,
        "phone_number": NUMBER,
        "voice_url": "https://old.example.com/voice",
        "voice_method": "POST",
    }


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    state = Recorder(url="")

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            state.requests.append(
                Recorded(
                    self.command,
                    parts.path,
                    parse_qs(parts.query),
                    parse_qs(body),
                    self.headers.get("Authorization", ""),
                )
            )
            if state.refuse:
                self._json(401, {"code": 20003, "message": "Authenticate", "status": 401})
            elif self.command == "GET":
                self._json(
                    200,
                    {
                        "incoming_phone_numbers": [_number()],
                        "page": 0,
                        "page_size": 2,
                        "next_page_uri": None,
                        "uri": parts.path,
                    },
                )
            else:
                self._json(200, {**_number(), "voice_url": parse_qs(body)["VoiceUrl"][0]})

        do_GET = do_POST = _answer

        def _json(self, status: int, payload: object) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", "twilio", "configure-number", "--number", NUMBER, *args],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_sets_the_voice_url_with_the_auth_token_from_a_file(
    recorder: Recorder, tmp_path: Path
) -> None:
    token = "auth-token-" + "x" * 21
    (tmp_path / "token").write_text(token + "\n")
    result = _run(
        {
            "TWILIO_ACCOUNT_SID": ACCOUNT,
            "TWILIO_AUTH_TOKEN_FILE": str(tmp_path / "token"),
            "TWILIO_API_BASE_URL": recorder.url,
            "PUBLIC_BASE_URL": "https://ivr.example.com",
        }
    )
    assert result.returncode == 0, result.stderr
    assert (
        f"{NUMBER} ({NUMBER_SID}) now sends calls to POST https://ivr.example.com/voice"
        in result.stdout
    )
    # Twilio's own logs keep the typed digits unless Voice PCI Mode is on: the reminder.
    assert result.stdout.splitlines()[-1] == PCI_REMINDER
    assert "cannot be turned off" in PCI_REMINDER and "subaccount" in PCI_REMINDER
    assert token not in result.stdout + result.stderr
    lookup, update = recorder.requests
    assert (lookup.method, lookup.path) == (
        "GET",
        f"/2010-04-01/Accounts/{ACCOUNT}/IncomingPhoneNumbers.json",
    )
    assert lookup.query["PhoneNumber"] == [NUMBER]
    assert (update.method, update.path) == (
        "POST",
        f"/2010-04-01/Accounts/{ACCOUNT}/IncomingPhoneNumbers/{NUMBER_SID}.json",
    )
    assert update.form == {"VoiceUrl": ["https://ivr.example.com/voice"], "VoiceMethod": ["POST"]}
    assert update.authorization == lookup.authorization == _basic(ACCOUNT, token)


def test_api_key_credentials_and_an_explicit_url(recorder: Recorder) -> None:
    result = _run(
        {
            "TWILIO_ACCOUNT_SID": ACCOUNT,
            "TWILIO_API_KEY": "SK" + "b" * 32,
            "TWILIO_API_SECRET": "api-secret-value",
            "TWILIO_API_BASE_URL": recorder.url,
        },
        "--url",
        "https://calls.example.org/voice",
    )
    assert result.returncode == 0, result.stderr
    update = recorder.requests[-1]
    assert update.form["VoiceUrl"] == ["https://calls.example.org/voice"]
    assert update.authorization == _basic("SK" + "b" * 32, "api-secret-value")


def test_refusals_are_one_line_without_the_secret(recorder: Recorder) -> None:
    recorder.refuse = True
    secret = "wrong-token-" + "y" * 20
    result = _run(
        {
            "TWILIO_ACCOUNT_SID": ACCOUNT,
            "TWILIO_AUTH_TOKEN": secret,
            "TWILIO_API_BASE_URL": recorder.url,
            "PUBLIC_BASE_URL": "https://x.example",
        }
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "HTTP 401" in lines[0], result.stderr
    assert secret not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"TWILIO_AUTH_TOKEN": "t"}, "TWILIO_ACCOUNT_SID"),
        ({"TWILIO_ACCOUNT_SID": ACCOUNT}, "TWILIO_AUTH_TOKEN"),
        (
            {
                "TWILIO_ACCOUNT_SID": ACCOUNT,
                "TWILIO_AUTH_TOKEN": "t",
                "PUBLIC_BASE_URL": "http://plain.example",
            },
            "--url",
        ),
    ],
)
def test_missing_credentials_or_plain_http_stop_before_any_request(
    recorder: Recorder, env: dict[str, str], named: str
) -> None:
    result = _run({**env, "TWILIO_API_BASE_URL": recorder.url})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and named in result.stderr
    assert recorder.requests == []


@pytest.mark.parametrize(
    "number", ["15551234567", "+1 555 123 4567", "+0155512345", "+1555123456789012", "anonymous"]
)
def test_a_number_not_in_e164_is_bad_input_before_any_request(
    recorder: Recorder, number: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "twilio", "configure-number", "--number", number],
        env={
            "PATH": "/usr/bin:/bin",
            "TWILIO_ACCOUNT_SID": ACCOUNT,
            "TWILIO_AUTH_TOKEN": "t",
            "TWILIO_API_BASE_URL": recorder.url,
            "PUBLIC_BASE_URL": "https://x.example",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stderr) == (
        2,
        (
            "ivr-vault: bad input: --number: expected E.164, a + then the country code and "
            "number, at most 15 digits (+15551234567)\n"
        ),
    )
    assert recorder.requests == []


def test_an_unreachable_api_is_named_by_its_url() -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    result = _run(
        {
            "TWILIO_ACCOUNT_SID": ACCOUNT,
            "TWILIO_AUTH_TOKEN": "t",
            "TWILIO_API_BASE_URL": nowhere,
            "PUBLIC_BASE_URL": "https://x.example",
        }
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"ivr-vault: TwilioApiError: cannot reach Twilio's API at {nowhere} (ConnectionError)"
    ]
