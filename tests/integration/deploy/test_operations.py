"""Operations against real processes: /healthz, /readyz, Prometheus /metrics, graceful
shutdown and token revocation.

This module runs its own OpenBao dev server, because it pauses Vault, locks the demo card
and stops services: the session ``stack`` is left undisturbed.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.devtools.caller import Caller, new_call_sid
from service.devtools.devstack import DevVault, free_port
from service.errors import VaultRequestError
from service.vault.bootstrap import RoleCredentials
from service.vault.client import VaultClient
from tests.support.demo import FOUND
from tests.support.keys import private_vault
from tests.support.stack import Stack, make_stack


@dataclass
class Ops:
    vault: DevVault
    admin: VaultClient
    credentials: dict[str, RoleCredentials]
    stack: Stack
    tmp: Path


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ops]:
    with private_vault(tmp_path_factory.mktemp("ops-vault")) as pv:
        # A short Vault timeout keeps the paused-Vault checks quick; a low lockout threshold
        # lets two wrong PINs lock the demo card.
        stack = make_stack(
            pv.vault,
            pv.credentials,
            tmp_path_factory.mktemp("ops-stack"),
            webhook_env={"VAULT_TIMEOUT": "1"},
            backend_env={"VAULT_TIMEOUT": "1", "LOCKOUT_THRESHOLD": "2"},
        )
        try:
            yield Ops(pv.vault, pv.admin, pv.credentials, stack, tmp_path_factory.mktemp("ops"))
        finally:
            stack.stop()


def _get(url: str) -> httpx.Response:
    return httpx.get(url, timeout=10)


def _metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = _get(f"{url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


# -- health and readiness -------------------------------------------------------------------


def test_healthz_and_readyz_when_everything_is_up(ops: Ops) -> None:
    for service in (ops.stack.webhook, ops.stack.backend):
        assert _get(f"{service.url}/healthz").json() == {"status": "ok"}
    webhook = _get(f"{ops.stack.webhook.url}/readyz")
    assert webhook.status_code == 200
    assert webhook.json() == {
        "status": "ready",
        "checks": {"vault": True, "backend": True},
        "limits": {"step_max_age_s": 300.0},
    }  # doctor compares them
    backend = _get(f"{ops.stack.backend.url}/readyz")
    assert (backend.status_code, backend.json()["checks"]) == (
        200,
        {"vault": True, "ivr-lookup": True},
    )
    assert backend.json()["limits"] == {"call_max_age_s": 14400.0}


def test_readyz_is_503_while_vault_hangs_and_recovers(ops: Ops) -> None:
    ops.vault.pause()
    try:
        for service in (ops.stack.webhook, ops.stack.backend):
            response = _get(f"{service.url}/readyz")
            assert response.status_code == 503, service.role
            assert response.json()["status"] == "unavailable"
            # Liveness is not readiness: the process itself is fine.
            assert _get(f"{service.url}/healthz").status_code == 200
        # A caller in the middle of a call hears a calm goodbye, counted as a Vault error.
        caller = Caller(
            ops.stack.webhook.url,
            ops.stack.twilio_token,
            httpx.Client(timeout=10),
            say=lambda _: None,
        )
        card = caller.post(
            f"{ops.stack.webhook.url}/voice/card?registered=1",
            {"CallSid": new_call_sid(), "Digits": "1234"},
        )
        assert card.status_code == 200 and "<Hangup" in card.text
    finally:
        ops.vault.resume()
    deadline = time.monotonic() + 10
    while _get(f"{ops.stack.webhook.url}/readyz").status_code != 200:
        assert time.monotonic() < deadline, "webhook did not become ready after Vault resumed"
        time.sleep(0.2)
    samples = _metrics(ops.stack.webhook.url)
    assert _value(samples, "ivr_vault_errors_total", kind="timeout") >= 1
    assert (
        _value(samples, "ivr_requests_total", route="/voice/card", outcome="vault_unavailable") == 1
    )


def test_webhook_readyz_is_503_without_its_backend(ops: Ops) -> None:
    stack = make_stack(
        ops.vault,
        ops.credentials,
        ops.tmp / "no-backend",
        start=False,
        webhook_env={"BACKEND_URL": f"http://127.0.0.1:{free_port()}"},
    )
    stack.webhook.start()
    try:
        response = _get(f"{stack.webhook.url}/readyz")
        assert response.status_code == 503
        assert response.json()["checks"] == {"vault": True, "backend": False}
    finally:
        stack.webhook.stop()


def test_readyz_is_503_when_vault_refuses_the_service_identity(ops: Ops) -> None:
    stack = make_stack(ops.vault, ops.credentials, ops.tmp / "bad-identity", start=False)
    (ops.tmp / "bad-identity" / "ivr-backend" / "secret_id").write_text(
        "00000000-0000-0000-0000-000000000000\n"
    )
    stack.backend.start()
    try:
        response = _get(f"{stack.backend.url}/readyz")
        assert (response.status_code, response.json()["checks"]) == (503, {"vault": False})
        assert _value(_metrics(stack.backend.url), "ivr_vault_errors_total", kind="auth") >= 1
    finally:
        stack.backend.stop()


# -- metrics after real calls ---------------------------------------------------------------


def test_metrics_count_calls_without_any_caller_data(ops: Ops) -> None:
    webhook, backend = ops.stack.webhook.url, ops.stack.backend.url
    before_w, before_b = _metrics(webhook), _metrics(backend)
    heard: list[str] = []
    sids = [new_call_sid() for _ in range(4)]
    with httpx.Client(timeout=20) as client:
        caller = Caller(webhook, ops.stack.twilio_token, client, say=heard.append)
        assert caller.play(["1234", "4321"], call_sid=sids[0]).completed
        assert FOUND in heard
        # Two wrong PINs lock the card (LOCKOUT_THRESHOLD=2); the third call finds it locked.
        for sid in sids[1:]:
            assert caller.play(["1234", "9876"], call_sid=sid).completed
        forged = client.post(
            f"{webhook}/voice",
            data={"CallSid": new_call_sid()},
            headers={"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"},
        )
        assert forged.status_code == 403
        # A client-chosen path must not become a label (unbounded, and it could carry data).
        assert client.get(f"{webhook}/voice-{sids[0]}-1234").status_code == 404
    after_w, after_b = _metrics(webhook), _metrics(backend)

    def delta(
        after: dict[tuple[str, tuple[tuple[str, str], ...]], float],
        before: dict[tuple[str, tuple[tuple[str, str], ...]], float],
        name: str,
        **labels: str,
    ) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert delta(after_w, before_w, "ivr_requests_total", route="/voice", outcome="prompted") == 4
    assert (
        delta(
            after_w, before_w, "ivr_requests_total", route="/voice/card", outcome="card_encrypted"
        )
        == 4
    )
    assert delta(after_w, before_w, "ivr_requests_total", route="/voice/pin", outcome="found") == 1
    assert (
        delta(after_w, before_w, "ivr_requests_total", route="/voice/pin", outcome="not_found") == 2
    )
    assert delta(after_w, before_w, "ivr_requests_total", route="/voice/pin", outcome="locked") == 1
    assert delta(after_w, before_w, "ivr_signature_failures_total") == 1
    assert (
        delta(after_w, before_w, "ivr_requests_total", route="unmatched", outcome="http_4xx") == 1
    )
    # 12 items encrypted (4 cards, 4 PINs, 4 caller numbers): the latency histogram saw
    # every Transit call, the batch-size histogram every item.
    assert delta(after_w, before_w, "ivr_transit_batch_size_sum", operation="encrypt") == 12
    calls = delta(after_w, before_w, "ivr_transit_latency_seconds_count", operation="encrypt")
    assert 1 <= calls <= 12
    assert (
        delta(
            after_w, before_w, "ivr_transit_latency_seconds_bucket", operation="encrypt", le="+Inf"
        )
        == calls
    )

    assert delta(after_b, before_b, "ivr_lookups_total", outcome="found") == 1
    assert delta(after_b, before_b, "ivr_lookups_total", outcome="not_found") == 2
    assert delta(after_b, before_b, "ivr_lookups_total", outcome="locked") == 1
    assert delta(after_b, before_b, "ivr_lockouts_total", kind="card") == 1
    assert delta(after_b, before_b, "ivr_wrong_pins_total") == 2  # the locked call: not compared
    assert delta(after_b, before_b, "ivr_requests_total", route="/v1/lookup", outcome="found") == 1
    assert delta(after_b, before_b, "ivr_transit_batch_size_sum", operation="decrypt") == 12
    assert delta(after_b, before_b, "ivr_transit_latency_seconds_count", operation="hmac") >= 4

    for url in (webhook, backend):
        text = _get(f"{url}/metrics").text
        assert "vault:v" not in text
        assert not re.search(r"CA[0-9a-f]{32}", text)
        for sid in sids:
            assert sid not in text and sid[2:] not in text
        for _name, labels in _metrics(url):
            for _label, value in labels:
                for digits in ("1234", "4321", "9876"):
                    assert digits not in value, (url, labels)


# -- graceful shutdown ----------------------------------------------------------------------


def _accessors(admin: VaultClient) -> set[str]:
    listing = admin.request("LIST", "auth/token/accessors", "list accessors")
    return set(listing["data"]["keys"])


def _token_alive(admin: VaultClient, accessor: str) -> bool:
    try:
        admin.write("auth/token/lookup-accessor", "lookup accessor", {"accessor": accessor})
    except VaultRequestError:  # Vault: 400 "invalid accessor" once revoked
        return False
    return True


def test_sigterm_lets_the_request_in_flight_finish_and_revokes_the_tokens(ops: Ops) -> None:
    stack = make_stack(ops.vault, ops.credentials, ops.tmp / "shutdown", start=False)
    known = _accessors(ops.admin)
    stack.backend.start()
    stack.webhook.start()
    service_tokens = _accessors(ops.admin) - known
    # Each service logged in once, at start-up, with its own AppRole.
    assert len(service_tokens) == 2
    assert all(_token_alive(ops.admin, a) for a in service_tokens)

    webhook = stack.webhook.process
    assert webhook is not None
    caller = Caller(
        stack.webhook.url, stack.twilio_token, httpx.Client(timeout=20), say=lambda _: None
    )
    answer: list[httpx.Response] = []
    ops.vault.pause()  # the encrypt below hangs in Vault: a request in flight
    try:
        request = threading.Thread(
            target=lambda: answer.append(
                caller.post(
                    f"{stack.webhook.url}/voice/card?registered=1",
                    {"CallSid": new_call_sid(), "Digits": "1234"},
                )
            )
        )
        request.start()
        time.sleep(0.4)
        webhook.send_signal(signal.SIGTERM)
        time.sleep(0.4)
        assert webhook.poll() is None, "the webhook exited with a request in flight"
        # New connections are refused while the old request drains.
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{stack.webhook.url}/healthz", timeout=2)
    finally:
        ops.vault.resume()
    request.join(timeout=15)
    assert answer and answer[0].status_code == 200
    # The real answer, not the give-up one: the encrypted card rides in the PIN prompt.
    assert "/voice/pin?card=vault%3Av" in answer[0].text or "card=vault:v" in answer[0].text
    # uvicorn finishes its graceful shutdown (lifespan included), then re-raises the
    # signal it caught, so a clean stop by SIGTERM reads as -15.
    clean = (0, -signal.SIGTERM)
    assert webhook.wait(timeout=15) in clean
    stack.backend.stop()
    backend = stack.backend.process
    assert backend is not None and backend.returncode in clean
    for service in (stack.webhook, stack.backend):
        assert "Traceback" not in service.stderr_path.read_text()
    assert not any(_token_alive(ops.admin, a) for a in service_tokens)
