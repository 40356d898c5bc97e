"""The scenario behind tests/integration/calls/test_log_leaks.py: what is typed, and how, on real
processes.

Random card/PIN pairs and account numbers through the real call flow (one account seeded
with ``add_account``, with a caller number registered on it, one with the CLI), on both
identification paths, the same digits sent in hostile ways, and the failure paths: backend
stopped mid-call, Vault hung (SIGSTOP) and Vault unreachable. Everything typed is recorded
in :class:`Captured` so the tests can search every output for it afterwards.
"""

from __future__ import annotations

import random
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from service.backend.enrolment import DEMO_CARD, DEMO_PIN, Enrolment, add_account
from service.backend.pin_rules import weakness
from service.devtools.caller import REGISTERED, Caller, new_call_sid
from service.devtools.devstack import DevVault, ServiceProcess
from service.settings import Settings
from service.webhook import twiml
from tests.support.leak_search import SCRIPTS, LeakDetector, in_script, json_lines
from tests.support.stack import Stack

SEEDED = ("ACLEAKPROOF", "3.75")
# The scenario's webhook offers the language menu and answers this number in Japanese
# (test_log_leaks.py), so Japanese prompts are in the flow too.
JA_NUMBER = "+81312345678"
LOCALE_ENV = {"LANGUAGE_MENU": "ja-JP,en-US", "LOCALE_BY_NUMBER": f"{JA_NUMBER}=ja-JP"}
CLI_SEEDED = ("ACCLISEEDED", "0.50")
PAIRS = 8
NUMBERS = 4  # account numbers typed: two enrolled, two unknown


@dataclass
class Captured:
    """What the scenario typed, saw, and where each process wrote its output."""

    pairs: list[tuple[str, str]]
    numbers: list[str] = field(default_factory=list)  # 8-digit account numbers
    registered: str = ""  # a caller number registered on the seeded account
    typed: list[str] = field(default_factory=list)
    heard: dict[str, list[str]] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    service_logs: list[Path] = field(default_factory=list)
    cli_output: dict[str, str] = field(default_factory=dict)
    audit_log: Path = Path()
    server_log: Path = Path()
    webhook_settings: Settings | None = None
    backend_settings: Settings | None = None
    # The ports, PIDs and listen address of the processes started: the only such numbers
    # uvicorn's start lines (and, for the Vault's port, urllib3's request lines) may show.
    known: set[str] = field(default_factory=set)

    def started(self, process: ServiceProcess) -> None:
        assert process.process is not None
        self.known |= {str(process.port), str(process.process.pid), "127.0.0.1"}

    def detector(self) -> LeakDetector:
        plaintexts = [f"card:{c}".encode() for c, _ in self.pairs]
        plaintexts += [f"pin:{c}:{p}".encode() for c, p in self.pairs]
        plaintexts += [f"acctno:{n}".encode() for n in self.numbers]
        plaintexts += [f"callerid:{self.registered}".encode()]
        return LeakDetector(self.typed, plaintexts)


def draw_numbers(rng: random.Random, baseline: str) -> list[str]:
    """Distinct random account numbers (8 digits) found nowhere before the first call, and
    not starting like a year."""
    values: list[str] = []
    while len(values) < NUMBERS:
        value = f"{rng.randrange(10_000_000, 100_000_000)}"
        if value not in values and value not in baseline and value[:2] not in ("19", "20"):
            values.append(value)
    return values


def draw_pairs(rng: random.Random, baseline: str) -> list[tuple[str, str]]:
    """Distinct random 4-digit strings that cannot be mistaken for a clock's or a port's.

    Years (19xx/20xx) and 0000 (the server log's "+0000 UTC") occur in Vault's own lines,
    and so does anything already present before the first call. Weak PINs are left out
    too: enrolment would refuse them.
    """
    values: list[str] = []
    while len(values) < 2 * PAIRS:
        value = f"{rng.randrange(10_000):04d}"
        if (
            value in values
            or value in (DEMO_CARD, DEMO_PIN, "0000")
            or value[:2] in ("19", "20")
            or value in baseline
            or weakness(value) is not None
        ):
            continue
        values.append(value)
    return list(zip(values[::2], values[1::2], strict=True))


def _signed(caller: Caller, path: str, params: dict[str, str]) -> httpx.Response:
    return caller.post(caller.base_url + path, params)


def _call_params(call_sid: str, **extra: str) -> dict[str, str]:
    return {
        "CallSid": call_sid,
        "AccountSid": "AC" + "ab" * 16,
        "From": "+15005550006",
        "To": "+15005550001",
        "CallStatus": "in-progress",
        **extra,
    }


def _hostile(
    cap: Captured,
    caller: Caller,
    stack: Stack,
    client: httpx.Client,
    card: str,
    pin: str,
    number: str,
) -> None:
    base, sid = stack.webhook.url, new_call_sid()
    cap.statuses["get_with_query_digits"] = client.get(
        f"{base}/voice/card?Digits={card}&CallSid={sid}"
    ).status_code
    cap.statuses["unsigned_post"] = client.post(
        f"{base}/voice/card", data=_call_params(sid, Digits=card)
    ).status_code
    for script in SCRIPTS:
        odd = in_script(card, script)
        cap.typed.append(odd)
        response = _signed(caller, "/voice/card?registered=1", _call_params(sid, Digits=odd))
        cap.heard[f"script_{script}"] = [response.text]
        odd_number = in_script(number, script)
        cap.typed.append(odd_number)
        response = _signed(caller, "/voice/account", _call_params(sid, Digits=odd_number))
        cap.heard[f"account_script_{script}"] = [response.text]
    response = _signed(caller, f"/voice/account?Digits={number}", _call_params(sid))
    cap.heard["account_query_digits"] = [response.text]
    response = _signed(caller, f"/voice/card?number={number}", _call_params(sid, Digits=card))
    cap.heard["plain_number_in_query"] = [response.text]
    response = _signed(caller, f"/voice/card?registered=1&Digits={card}", _call_params(sid))
    cap.heard["query_digits"] = [response.text]
    response = _signed(
        caller, f"/voice/pin?card={card}&registered=1", _call_params(sid, Digits=pin)
    )
    cap.heard["plain_card_in_query"] = [response.text]
    response = _signed(
        caller, "/voice/card?registered=1", _call_params(sid, Digits=f"{card} {pin}#")
    )
    cap.heard["too_many_digits"] = [response.text]
    cap.statuses["bad_utf8"] = client.post(
        f"{base}/voice/card",
        content=b"Digits=" + card.encode() + b"\xff\xfe",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ).status_code
    cap.statuses["oversized_body"] = client.post(
        f"{base}/voice/card",
        content=f"Digits={card}&pad={card * 20_000}".encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ).status_code
    # Not HTTP at all: uvicorn's own parser refuses it and logs through uvicorn.error.
    with socket.create_connection(("127.0.0.1", stack.webhook.port), timeout=5) as sock:
        sock.sendall(
            f"POST /voice/card?Digits={card} HTTP/1.1\r\nHost: x\r\nDigits: {card}"
            f"\r\nContent-Length: {pin}{pin}x\r\n\r\n".encode()
        )
        cap.statuses["not_http"] = int(sock.recv(64).split()[1])
    body = {"call_sid": sid, "card_last4": card, "pin": pin, "account_number": number}
    cap.statuses["backend_wrong_token"] = client.post(
        f"{stack.backend.url}/v1/lookup", json=body, headers={"Authorization": "Bearer wrong"}
    ).status_code
    cap.statuses["backend_plain_digits"] = client.post(
        f"{stack.backend.url}/v1/lookup",
        json=body,
        headers={"Authorization": f"Bearer {stack.backend_token}"},
    ).status_code


def _run_cli(
    cap: Captured, name: str, args: list[str], env: dict[str, str], stdin: str = ""
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "service", *args],
        input=stdin.encode(),
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    cap.cli_output[f"{name}.stdout"] = done.stdout.decode("utf-8", "replace")
    cap.cli_output[f"{name}.stderr"] = done.stderr.decode("utf-8", "replace")
    cap.statuses[f"cli_{name}"] = done.returncode


def run_scenario(cap: Captured, vault: DevVault, stack: Stack, no_vault: ServiceProcess) -> None:
    (c0, p0), (c1, p1), (c2, p2), (c3, p3), (c4, p4), (c5, p5), (c6, _), (c7, p7) = cap.pairs
    cap.known.add(str(vault.port))  # the Vault the services and the CLI ask
    n0, n1, n2, n3 = cap.numbers
    backend_env = dict(stack.backend.env)
    add_account(
        Settings.from_environ(backend_env),
        Enrolment(SEEDED[0], SEEDED[1], n0, c0, p0, (cap.registered,)),
    )
    # -vv: operator commands are quiet by default; here they say all they ever would.
    _run_cli(
        cap,
        "accounts_add",
        ["-vv", "accounts", "add", "--account", CLI_SEEDED[0], "--balance", CLI_SEEDED[1]],
        backend_env,
        f"{n1}\n{c1}\n{p1}\n",
    )
    with httpx.Client(timeout=15) as client:

        def play(
            name: str,
            entries: list[str],
            url: str = stack.webhook.url,
            on_prompt: dict[str, object] | None = None,
            identify: str = n2,
            caller: str = "+15005550006",
            **how: str,
        ) -> None:
            heard: list[str] = []

            def say(text: str) -> None:
                heard.append(text)
                if on_prompt and text in on_prompt:
                    on_prompt.pop(text)()  # type: ignore[operator]

            Caller(url, stack.twilio_token, client, say=say, identify=identify, caller=caller).play(
                entries, **how
            )
            cap.heard[name] = heard

        play("seeded", [c0, p0], identify=n0)
        play("registered", [c0, p0], identify=REGISTERED, caller=cap.registered)
        play("unknown", [c2, p2], identify=n3)
        play("wrong_pin", [c0, p3], identify=n0)
        play("backend_stopped", [c4, p4], on_prompt={twiml.ASK_PIN: stack.backend.stop})
        stack.backend.start()
        cap.started(stack.backend)  # a new PID
        play("vault_hung", [c5, p5], on_prompt={twiml.ASK_CARD: vault.pause})
        vault.resume()
        play("vault_unreachable", [c6], url=no_vault.url)
        play("after_recovery", [c7, p7])
        play("ja_chosen", [c0, p0], identify=n0, lang="ja-JP")  # found, in the menu's Japanese
        play("ja_by_number", [c2, p2], to=JA_NUMBER)  # unknown, the number's Japanese
        _hostile(
            cap, Caller(stack.webhook.url, stack.twilio_token, client), stack, client, c3, p3, n2
        )
    cli_env = {**stack.webhook.env, "TWILIO_AUTH_TOKEN_FILE": str(stack.dir / "twilio")}
    _run_cli(
        cap,
        "call",
        [
            "-vv",
            "call",
            "--account-number",
            n1,
            "--card",
            c1,
            "--pin",
            p1,
            "--url",
            stack.webhook.url,
        ],
        cli_env,
    )


def access_lines(cap: Captured) -> list[dict[str, object]]:
    lines = []
    for path in cap.service_logs:
        for _, _, parsed in json_lines(path.read_text()):
            if isinstance(parsed, dict) and parsed.get("logger") == "ivr.access":
                lines.append(parsed)
    return lines
