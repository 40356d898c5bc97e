"""End-to-end proof that no digit a caller types reaches any output of any process.

One scenario, run once for the module on its own dev Vault (it pauses that Vault) and its own
backend + webhook processes: calls with random card/PIN pairs, the same kind of digits sent in
hostile ways, a backend stopped mid-call, a hung Vault and an unreachable one, the CLI. Then
everything is stopped and every captured byte is searched (tests/support/leak_search.py says how).
"""

from __future__ import annotations

import base64
import json
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.backend.app import create_backend_app
from service.devtools.devstack import ServiceProcess, free_port
from service.logs.scrubbing import KNOWN_ROUTES
from service.settings import Settings
from service.webhook import twiml
from service.webhook.app import create_webhook_app
from service.webhook.locales.registry import CATALOGS
from tests.support.keys import private_vault
from tests.support.leak_scenario import (
    CLI_SEEDED,
    LOCALE_ENV,
    SEEDED,
    Captured,
    access_lines,
    draw_numbers,
    draw_pairs,
    run_scenario,
)
from tests.support.leak_search import (
    SCRIPTS,
    audit_findings,
    in_script,
    json_lines,
    service_log_findings,
    unhashed_transit_strings,
)
from tests.support.stack import make_stack


@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Captured]:
    root = tmp_path_factory.mktemp("leaks")
    processes: list[ServiceProcess] = []
    with private_vault(root) as pv:
        try:
            vault = pv.vault
            stack_dir = root / "stack"
            stack_dir.mkdir()
            # DEBUG: every library says the most it ever will; all of it must still be clean.
            debug = {"LOG_LEVEL": "DEBUG"}
            stack = make_stack(
                vault,
                pv.credentials,
                stack_dir,
                webhook_env={**debug, **LOCALE_ENV},
                backend_env=debug,
            )
            processes += [stack.backend, stack.webhook]
            # A webhook whose Vault address has nothing listening: every encrypt is refused.
            no_vault = ServiceProcess("webhook", free_port(), {}, root / "no-vault")
            no_vault.env = {
                **stack.webhook.env,
                "VAULT_ADDR": f"http://127.0.0.1:{free_port()}",
                "WEBHOOK_PORT": str(no_vault.port),
                "PUBLIC_BASE_URL": no_vault.url,
            }
            processes.append(no_vault.start())
            service_logs = [p for proc in processes for p in (proc.stdout_path, proc.stderr_path)]
            baseline = "".join(p.read_text() for p in [*service_logs, vault.server_log])
            seed = int.from_bytes(os.urandom(8), "big")
            rng = random.Random(seed)
            cap = Captured(
                draw_pairs(rng, baseline),
                draw_numbers(rng, baseline),
                f"+1555{rng.randrange(1_000_000, 10_000_000)}",
            )
            cap.typed += [d for pair in cap.pairs for d in pair]
            cap.typed += [*cap.numbers, cap.registered[1:]]
            cap.service_logs, cap.audit_log, cap.server_log = (
                service_logs,
                vault.audit_log,
                vault.server_log,
            )
            for proc in processes:
                cap.started(proc)
            cap.webhook_settings = Settings.from_environ(stack.webhook.env)
            cap.backend_settings = Settings.from_environ(stack.backend.env)
            try:
                run_scenario(cap, vault, stack, no_vault)
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


def _outcomes(cap: Captured) -> dict[str, set[str]]:
    seen: dict[str, set[str]] = {}
    for line in access_lines(cap):
        seen.setdefault(str(line.get("outcome")), set()).add(str(line.get("error_kind")))
    return seen


def test_the_scenario_took_every_path(captured: Captured) -> None:
    """Without this, "nothing leaked" could mean "nothing happened"."""
    heard, statuses = captured.heard, captured.statuses
    for name in ("seeded", "registered"):
        assert (
            f"account number is {SEEDED[0]} and your balance is {SEEDED[1]}" in heard[name][-1]
        ), name
    assert CLI_SEEDED[0] in captured.cli_output["call.stdout"]
    for name in ("unknown", "wrong_pin", "after_recovery"):
        assert heard[name][-1] == twiml.NOT_FOUND, name
    for name in ("backend_stopped", "vault_hung", "vault_unreachable"):
        assert heard[name][-1] == twiml.TRY_LATER, name
    assert heard["backend_stopped"][-2] == twiml.ASK_PIN  # stopped mid-call, not before
    for name in [f"script_{s}" for s in SCRIPTS] + ["query_digits", "too_many_digits"]:
        assert twiml.RETRY in heard[name][0], name
    for name in [f"account_script_{s}" for s in SCRIPTS] + ["account_query_digits"]:
        assert twiml.RETRY_ACCOUNT.format(digits=8) in heard[name][0], name
    assert twiml.CALL_AGAIN in heard["plain_card_in_query"][0]
    ja = CATALOGS["ja-JP"]
    assert heard["ja_chosen"][-1] == ja.text("found", account=SEEDED[0], balance=SEEDED[1])
    assert heard["ja_by_number"][-1] == ja.text("not_found")
    assert twiml.CALL_AGAIN in heard["plain_number_in_query"][0]
    assert statuses == {
        "cli_accounts_add": 0,
        "cli_call": 0,
        "get_with_query_digits": 405,
        "unsigned_post": 403,
        "bad_utf8": 400,
        "backend_wrong_token": 401,
        "backend_plain_digits": 422,
        "oversized_body": 413,
        "not_http": 400,
    }
    outcomes = _outcomes(captured)
    assert {
        "found",
        "not_found",
        "backend_unavailable",
        "refused_signature",
        "refused_malformed_form",
        "bad_card_ciphertext",
        "reprompted",
        "unauthorized",
        "invalid",
        "language_chosen",
        "language_default",
        "account_number_encrypted",
        "registered_phone",
        "bad_identification",
    } <= set(outcomes)
    assert {"timeout", "unavailable"} <= outcomes["vault_unavailable"]
    audit = captured.audit_log.read_text()
    for path in ("transit/encrypt/ivr-dtmf", "transit/decrypt/ivr-dtmf", "transit/hmac/ivr-lookup"):
        assert f'"path":"{path}"' in audit, path


def test_access_lines_name_known_routes_verbatim(captured: Captured) -> None:
    routes = {str(line["route"]) for line in access_lines(captured)}
    assert {
        "/voice",
        "/voice/account",
        "/voice/card",
        "/voice/pin",
        "/v1/lookup",
        "/healthz",
    } <= routes
    assert routes <= KNOWN_ROUTES


def test_known_routes_cover_both_apps(captured: Captured) -> None:
    assert captured.webhook_settings and captured.backend_settings
    apps = [
        create_webhook_app(captured.webhook_settings),
        create_backend_app(captured.backend_settings),
    ]
    served = {str(getattr(route, "path", "")) for app in apps for route in app.routes}
    assert served <= KNOWN_ROUTES, served - KNOWN_ROUTES


def test_no_typed_digit_in_service_output(captured: Captured) -> None:
    detector = captured.detector()
    findings: list[str] = []
    for path in captured.service_logs:
        findings += service_log_findings(
            f"{path.parent.name}/{path.name}", path.read_text(), detector, captured.known
        )
    for name, text in captured.cli_output.items():
        if name.endswith(".stderr"):  # the CLI's log lines (-vv): the same pipeline, JSON
            findings += service_log_findings(f"cli {name}", text, detector, captured.known)
        else:  # what the CLI prints for its user: free text, no typed digits either
            findings += [f"cli {name}: {hit!r}" for hit in detector.find(text)]
    assert findings == []
    assert sum(len(p.read_text().splitlines()) for p in captured.service_logs) > 50


def test_start_lines_show_real_ports_and_pids(captured: Captured) -> None:
    """Readable where it is safe (issue 15): uvicorn's lines show each process's real PID
    and port, and the CLI's log lines their TTL, while every check above still holds."""
    events = [
        line
        for path in captured.service_logs
        for _, _, line in json_lines(path.read_text())
        if isinstance(line, dict)
    ]
    started = {str(e["event"]) for e in events if e.get("logger") == "uvicorn.error"}
    pids = [value for value in captured.known if value.isdigit()]
    shown = {value for value in pids if f"Started server process [{value}]" in started}
    listening = {
        value
        for value in pids
        if f"Uvicorn running on http://127.0.0.1:{value} (Press CTRL+C to quit)" in started
    }
    assert len(shown) == 4  # backend (twice: it was restarted), webhook, the no-Vault webhook
    assert len(listening) == 3  # their three ports
    logins = [
        json.loads(line)
        for line in captured.cli_output["accounts_add.stderr"].splitlines()
        if '"vault login"' in line
    ]
    assert logins and logins[0]["ttl_s"] == 3600.0


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
    known = captured.known
    assert service_log_findings("copy", log, detector, known) == []
    for planted in (
        f'{{"event": "x", "note": "Digits={card}"}}',
        f'{{"event": "x", "note": "{arabic}"}}',
        f'{{"event": "x", "status": {card}}}',
        f'{{"event": "x", "ttl_s": "{card}"}}',
        f'{{"event": "x", "port": {card}}}',
        f"plain text pin {pin}",
        # a template's line, with a number that is none of this test's processes
        f'{{"event": "Started server process [{card}]", "logger": "uvicorn.error"}}',
        '{"event": "Uvicorn running on http://127.0.0.1:'
        + card
        + ' (Press CTRL+C to quit)", "logger": "uvicorn.error"}',
        f'{{"event": "Uvicorn running on http://{card}.0.0.1:80 (Press CTRL+C to '
        'quit)", "logger": "uvicorn.error"}',
        f'{{"event": "Started server process [{card}]", "logger": "hvac"}}',
    ):
        assert service_log_findings("copy", log + planted + "\n", detector, known), planted
    hidden = base64.b64encode(f"pin:{card}:{pin}".encode()).decode()
    assert detector.find(f"context {hidden.rstrip('=')} end")
    assert detector.find("x" + base64.b64encode(b"ab" + card.encode()).decode())
    assert not detector.find(f"CAab{card}cd 127.0.0.1:5{card}")

    audit = captured.audit_log.read_text()
    line = next(
        row
        for row in audit.splitlines()
        if '"transit/encrypt/ivr-dtmf"' in row and '"plaintext":"hmac-sha256:' in row
    )
    start = line.index('"plaintext":"') + len('"plaintext":"')
    end = line.index('"', start)
    leaked = line[:start] + base64.b64encode(card.encode()).decode() + line[end:]
    assert unhashed_transit_strings(audit + leaked + "\n")
    # The clear creation_time of a key version is let through only as a time of day.
    planted = line[:start] + card + line[end:]
    renamed = planted.replace('"plaintext":', '"creation_time":', 1)
    assert unhashed_transit_strings(audit + renamed + "\n") == [card]
    assert audit_findings("copy", audit + leaked + "\n", detector)
    errored = line.replace('"type":"request"', f'"error":"bad input {pin}","type":"request"')
    assert audit_findings("copy", audit + errored + "\n", detector)

    server = captured.server_log.read_text()
    assert detector.find(server + f"[ERROR] transit: invalid plaintext {card}\n")
