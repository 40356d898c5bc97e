"""End-to-end proof that no digit a caller types reaches any output of any process.

One scenario, run once for the module on its own dev Vault (it pauses that Vault) and its own
backend + webhook processes: calls with random card/PIN pairs, the same kind of digits sent in
hostile ways, a backend stopped mid-call, a hung Vault and an unreachable one, the CLI. Then
everything is stopped and every captured byte is searched (tests/leak_search.py says how).
"""

from __future__ import annotations

import base64
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service import twiml
from service.accounts import DEMO_CARD, DEMO_PIN, add_account
from service.backend import create_backend_app
from service.bootstrap import bootstrap, issue_credentials
from service.caller import Caller, new_call_sid
from service.devstack import DevVault, ServiceProcess, free_port
from service.scrubbing import KNOWN_ROUTES
from service.settings import Settings
from service.vault_client import VaultClient
from service.webhook import create_webhook_app
from tests.conftest import ROLES, Stack, make_stack
from tests.leak_search import (
    SCRIPTS,
    LeakDetector,
    audit_findings,
    base64_needles,
    in_script,
    json_lines,
    service_log_findings,
    unhashed_transit_strings,
)

SEEDED = ("ACLEAKPROOF", "3.75")
CLI_SEEDED = ("ACCLISEEDED", "0.50")
PAIRS = 8


@dataclass
class Captured:
    """What the scenario typed, saw, and where each process wrote its output."""

    pairs: list[tuple[str, str]]
    typed: list[str] = field(default_factory=list)
    heard: dict[str, list[str]] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    service_logs: list[Path] = field(default_factory=list)
    cli_output: dict[str, str] = field(default_factory=dict)
    audit_log: Path = Path()
    server_log: Path = Path()
    webhook_settings: Settings | None = None
    backend_settings: Settings | None = None

    def detector(self) -> LeakDetector:
        plaintexts = [f"card:{c}".encode() for c, _ in self.pairs]
        plaintexts += [f"pin:{c}:{p}".encode() for c, p in self.pairs]
        return LeakDetector(self.typed, plaintexts)


def _draw_pairs(rng: random.Random, baseline: str) -> list[tuple[str, str]]:
    """Distinct random 4-digit strings that cannot be mistaken for a clock's or a port's.

    Years (19xx/20xx) and 0000 (the server log's "+0000 UTC") occur in Vault's own lines,
    and so does anything already present before the first call.
    """
    values: list[str] = []
    while len(values) < 2 * PAIRS:
        value = f"{rng.randrange(10_000):04d}"
        if (value in values or value in (DEMO_CARD, DEMO_PIN, "0000")
                or value[:2] in ("19", "20") or value in baseline):
            continue
        values.append(value)
    return list(zip(values[::2], values[1::2], strict=True))


def _signed(caller: Caller, path: str, params: dict[str, str]) -> httpx.Response:
    return caller.post(caller.base_url + path, params)


def _call_params(call_sid: str, **extra: str) -> dict[str, str]:
    return {"CallSid": call_sid, "AccountSid": "AC" + "ab" * 16, "From": "+15005550006",
            "To": "+15005550001", "CallStatus": "in-progress", **extra}


def _hostile(cap: Captured, caller: Caller, stack: Stack, client: httpx.Client,
             card: str, pin: str) -> None:
    base, sid = stack.webhook.url, new_call_sid()
    cap.statuses["get_with_query_digits"] = client.get(
        f"{base}/voice/card?Digits={card}&CallSid={sid}").status_code
    cap.statuses["unsigned_post"] = client.post(
        f"{base}/voice/card", data=_call_params(sid, Digits=card)).status_code
    for script in SCRIPTS:
        odd = in_script(card, script)
        cap.typed.append(odd)
        response = _signed(caller, "/voice/card", _call_params(sid, Digits=odd))
        cap.heard[f"script_{script}"] = [response.text]
    response = _signed(caller, f"/voice/card?Digits={card}", _call_params(sid))
    cap.heard["query_digits"] = [response.text]
    response = _signed(caller, f"/voice/pin?card={card}", _call_params(sid, Digits=pin))
    cap.heard["plain_card_in_query"] = [response.text]
    response = _signed(caller, "/voice/card", _call_params(sid, Digits=f"{card} {pin}#"))
    cap.heard["too_many_digits"] = [response.text]
    cap.statuses["bad_utf8"] = client.post(
        f"{base}/voice/card", content=b"Digits=" + card.encode() + b"\xff\xfe",
        headers={"Content-Type": "application/x-www-form-urlencoded"}).status_code
    body = {"call_sid": sid, "card_last4": card, "pin": pin}
    cap.statuses["backend_wrong_token"] = client.post(
        f"{stack.backend.url}/v1/lookup", json=body,
        headers={"Authorization": "Bearer wrong"}).status_code
    cap.statuses["backend_plain_digits"] = client.post(
        f"{stack.backend.url}/v1/lookup", json=body,
        headers={"Authorization": f"Bearer {stack.backend_token}"}).status_code


def _run_cli(cap: Captured, name: str, args: list[str], env: dict[str, str],
             stdin: str = "") -> None:
    done = subprocess.run([sys.executable, "-m", "service", *args], input=stdin.encode(),
                          capture_output=True, env=env, timeout=60, check=False)
    cap.cli_output[f"{name}.stdout"] = done.stdout.decode("utf-8", "replace")
    cap.cli_output[f"{name}.stderr"] = done.stderr.decode("utf-8", "replace")
    cap.statuses[f"cli_{name}"] = done.returncode


def _scenario(cap: Captured, vault: DevVault, stack: Stack, no_vault: ServiceProcess) -> None:
    (c0, p0), (c1, p1), (c2, p2), (c3, p3), (c4, p4), (c5, p5), (c6, _), (c7, p7) = cap.pairs
    backend_env = dict(stack.backend.env)
    add_account(Settings.from_environ(backend_env), account=SEEDED[0], balance=SEEDED[1],
                last4=c0, pin=p0)
    _run_cli(cap, "accounts_add", ["accounts", "add", "--account", CLI_SEEDED[0],
                                   "--balance", CLI_SEEDED[1]], backend_env, f"{c1}\n{p1}\n")
    with httpx.Client(timeout=15) as client:
        def play(name: str, entries: list[str], url: str = stack.webhook.url,
                 on_prompt: dict[str, object] | None = None) -> None:
            heard: list[str] = []

            def say(text: str) -> None:
                heard.append(text)
                if on_prompt and text in on_prompt:
                    on_prompt.pop(text)()  # type: ignore[operator]

            Caller(url, stack.twilio_token, client, say=say).play(entries)
            cap.heard[name] = heard

        play("seeded", [c0, p0])
        play("unknown", [c2, p2])
        play("wrong_pin", [c0, p3])
        play("backend_stopped", [c4, p4], on_prompt={twiml.ASK_PIN: stack.backend.stop})
        stack.backend.start()
        play("vault_hung", [c5, p5], on_prompt={twiml.ASK_CARD: vault.pause})
        vault.resume()
        play("vault_unreachable", [c6], url=no_vault.url)
        play("after_recovery", [c7, p7])
        _hostile(cap, Caller(stack.webhook.url, stack.twilio_token, client), stack, client,
                 c3, p3)
    cli_env = {**stack.webhook.env, "TWILIO_AUTH_TOKEN_FILE": str(stack.dir / "twilio")}
    _run_cli(cap, "call", ["call", "--card", c1, "--pin", p1, "--url", stack.webhook.url],
             cli_env)


@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Captured]:
    root = tmp_path_factory.mktemp("leaks")
    vault = DevVault.start(root / "vault")
    processes: list[ServiceProcess] = []
    try:
        admin = VaultClient(vault.addr, vault.root_token, timeout=10)
        bootstrap(admin)
        stack_dir = root / "stack"
        stack_dir.mkdir()
        stack = make_stack(vault, issue_credentials(admin, ROLES), stack_dir)
        processes += [stack.backend, stack.webhook]
        # A webhook whose Vault address has nothing listening: every encrypt is refused.
        no_vault = ServiceProcess("webhook", free_port(), {}, root / "no-vault")
        no_vault.env = {**stack.webhook.env, "VAULT_ADDR": f"http://127.0.0.1:{free_port()}",
                        "WEBHOOK_PORT": str(no_vault.port),
                        "PUBLIC_BASE_URL": no_vault.url}
        processes.append(no_vault.start())
        service_logs = [p for proc in processes for p in (proc.stdout_path, proc.stderr_path)]
        baseline = "".join(p.read_text() for p in [*service_logs, vault.server_log])
        seed = int.from_bytes(os.urandom(8), "big")
        cap = Captured(_draw_pairs(random.Random(seed), baseline))
        cap.typed += [d for pair in cap.pairs for d in pair]
        cap.service_logs, cap.audit_log, cap.server_log = (service_logs, vault.audit_log,
                                                            vault.server_log)
        cap.webhook_settings = Settings.from_environ(stack.webhook.env)
        cap.backend_settings = Settings.from_environ(stack.backend.env)
        try:
            _scenario(cap, vault, stack, no_vault)
        finally:
            vault.resume()
            for proc in processes:
                proc.stop()
            vault.stop()
        print(f"log-leak scenario seed {seed}: pairs {cap.pairs}")
        yield cap
    finally:
        for proc in processes:
            proc.stop()
        vault.resume()
        vault.stop()


def _access_lines(cap: Captured) -> list[dict[str, object]]:
    lines = []
    for path in cap.service_logs:
        for _, _, parsed in json_lines(path.read_text()):
            if isinstance(parsed, dict) and parsed.get("logger") == "ivr.access":
                lines.append(parsed)
    return lines


def _outcomes(cap: Captured) -> dict[str, set[str]]:
    seen: dict[str, set[str]] = {}
    for line in _access_lines(cap):
        seen.setdefault(str(line.get("outcome")), set()).add(str(line.get("error_kind")))
    return seen


def test_the_scenario_took_every_path(captured: Captured) -> None:
    """Without this, "nothing leaked" could mean "nothing happened"."""
    heard, statuses = captured.heard, captured.statuses
    assert f"account number is {SEEDED[0]} and your balance is {SEEDED[1]}" in heard["seeded"][-1]
    assert CLI_SEEDED[0] in captured.cli_output["call.stdout"]
    for name in ("unknown", "wrong_pin", "after_recovery"):
        assert heard[name][-1] == twiml.NOT_FOUND, name
    for name in ("backend_stopped", "vault_hung", "vault_unreachable"):
        assert heard[name][-1] == twiml.TRY_LATER, name
    assert heard["backend_stopped"][-2] == twiml.ASK_PIN  # stopped mid-call, not before
    for name in [f"script_{s}" for s in SCRIPTS] + ["query_digits", "too_many_digits"]:
        assert twiml.RETRY in heard[name][0], name
    assert twiml.CALL_AGAIN in heard["plain_card_in_query"][0]
    assert statuses == {"cli_accounts_add": 0, "cli_call": 0, "get_with_query_digits": 405,
                        "unsigned_post": 403, "bad_utf8": 400, "backend_wrong_token": 401,
                        "backend_plain_digits": 422}
    outcomes = _outcomes(captured)
    assert {"found", "not_found", "backend_unavailable", "refused_signature",
            "refused_malformed_form", "bad_card_ciphertext", "reprompted", "unauthorized",
            "invalid"} <= set(outcomes)
    assert {"timeout", "unavailable"} <= outcomes["vault_unavailable"]
    audit = captured.audit_log.read_text()
    for path in ("transit/encrypt/ivr-dtmf", "transit/decrypt/ivr-dtmf", "transit/hmac/ivr-lookup"):
        assert f'"path":"{path}"' in audit, path


def test_access_lines_name_known_routes_verbatim(captured: Captured) -> None:
    routes = {str(line["route"]) for line in _access_lines(captured)}
    assert {"/voice", "/voice/card", "/voice/pin", "/v1/lookup", "/healthz"} <= routes
    assert routes <= KNOWN_ROUTES


def test_known_routes_cover_both_apps(captured: Captured) -> None:
    assert captured.webhook_settings and captured.backend_settings
    apps = [create_webhook_app(captured.webhook_settings),
            create_backend_app(captured.backend_settings)]
    served = {str(getattr(route, "path", "")) for app in apps for route in app.routes}
    assert served <= KNOWN_ROUTES, served - KNOWN_ROUTES


def test_no_typed_digit_in_service_output(captured: Captured) -> None:
    detector = captured.detector()
    findings: list[str] = []
    for path in captured.service_logs:
        findings += service_log_findings(f"{path.parent.name}/{path.name}", path.read_text(),
                                         detector)
    for name, text in captured.cli_output.items():
        if name.endswith(".stderr"):  # the CLI's log lines: the same pipeline, JSON
            findings += service_log_findings(f"cli {name}", text, detector)
        else:  # what the CLI prints for its user: free text, no typed digits either
            findings += [f"cli {name}: {hit!r}" for hit in detector.find(text)]
    assert findings == []
    assert sum(len(p.read_text().splitlines()) for p in captured.service_logs) > 50


def test_vault_hmacs_every_transit_string(captured: Captured) -> None:
    audit = captured.audit_log.read_text()
    assert audit.count('"path":"transit/') > 20
    assert unhashed_transit_strings(audit) == []


def test_no_typed_digit_in_vault_logs(captured: Captured) -> None:
    detector = captured.detector()
    assert audit_findings("audit", captured.audit_log.read_text(), detector) == []
    server = captured.server_log.read_text()
    assert "OpenBao server started" in server
    assert detector.find(server) == []


def test_the_search_finds_planted_digits(captured: Captured, tmp_path: Path) -> None:
    """The detector is not blind: each kind of output, with one typed string planted in a copy,
    is flagged; and digits the test did not type (hex, ports) are not."""
    detector = captured.detector()
    card, pin = captured.pairs[0]
    arabic = in_script(card, "arabic-indic")
    log = captured.service_logs[1].read_text()
    assert service_log_findings("copy", log, detector) == []
    for planted in (f'{{"event": "x", "note": "Digits={card}"}}',
                    f'{{"event": "x", "note": "{arabic}"}}',
                    f'{{"event": "x", "status": {card}}}',
                    f"plain text pin {pin}"):
        assert service_log_findings("copy", log + planted + "\n", detector), planted
    hidden = base64.b64encode(f"pin:{card}:{pin}".encode()).decode()
    assert detector.find(f"context {hidden.rstrip('=')} end")
    assert detector.find("x" + base64.b64encode(b"ab" + card.encode()).decode())
    assert not detector.find(f"CAab{card}cd 127.0.0.1:5{card}")

    audit = captured.audit_log.read_text()
    line = next(row for row in audit.splitlines() if '"transit/encrypt/ivr-dtmf"' in row
                and '"plaintext":"hmac-sha256:' in row)
    start = line.index('"plaintext":"') + len('"plaintext":"')
    end = line.index('"', start)
    leaked = line[:start] + base64.b64encode(card.encode()).decode() + line[end:]
    assert unhashed_transit_strings(audit + leaked + "\n")
    assert audit_findings("copy", audit + leaked + "\n", detector)
    errored = line.replace('"type":"request"', f'"error":"bad input {pin}","type":"request"')
    assert audit_findings("copy", audit + errored + "\n", detector)

    server = captured.server_log.read_text()
    assert detector.find(server + f"[ERROR] transit: invalid plaintext {card}\n")


@given(prefix=st.binary(max_size=7), suffix=st.binary(max_size=7),
       digits=st.text("0123456789", min_size=4, max_size=4))
@settings(max_examples=200, deadline=None)
def test_base64_needles_catch_any_alignment(prefix: bytes, suffix: bytes, digits: str) -> None:
    whole = base64.b64encode(prefix + digits.encode() + suffix).decode()
    assert any(needle in whole for needle in base64_needles(digits.encode()))
