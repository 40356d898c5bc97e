"""Replicas of each service on the session's Vault, with real processes: two backends on
one store, two webhooks whose BACKEND_URL names both.

- The webhook is stateless (the card's ciphertext rides in the signed URL): one call's
  steps are served by different webhooks.
- A lookup is idempotent across backends (Idempotency-Key): a retry on the other backend
  gets the same answer, not "a second lookup".
- A backend killed while it holds lookups: they are sent to the other, and every caller
  still hears the account; while it is dead, lookups skip it.
- VAULT_ADDR with a dead node first: login and Transit go to the next one.
- SIGTERM mid-request (SHUTDOWN_DRAIN): /readyz turns 503 at once, the server still
  serves, the request in flight is answered, then it exits.

(The same under load on make run-ha's whole topology: test_ha_drills.py.)
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urljoin

import httpx
import pytest

from service.devtools.caller import new_call_sid
from service.devtools.devstack import DevVault, ServiceProcess, free_port
from service.vault.bootstrap import RoleCredentials
from service.vault.transit import b64, call_context
from tests.support.attack import (
    base_params,
    gather_action,
    signed_post,
    spoken,
    twiml,
)
from tests.support.demo import ANSWER, FOUND
from tests.support.stack import Stack, make_stack, role_client

PUBLIC = "https://ivr.example.test"  # the proxy's URL, which Twilio signs


@dataclass
class Replicas:
    stack: Stack
    backends: list[ServiceProcess]
    webhooks: list[ServiceProcess]

    @property
    def token(self) -> str:
        return self.stack.twilio_token


def _replica(service: ServiceProcess, name: str, **env: str) -> ServiceProcess:
    port = free_port()
    key = f"{service.role.upper()}_PORT"
    return ServiceProcess(
        service.role, port, {**service.env, key: str(port), **env}, service.log_dir, name=name
    )


@pytest.fixture(scope="module")
def replicas(
    dev_vault: DevVault,
    credentials: dict[str, RoleCredentials],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Replicas]:
    directory = tmp_path_factory.mktemp("replicas")
    backend_a = free_port()
    backend_b = free_port()
    stack = make_stack(
        dev_vault,
        credentials,
        directory,
        start=False,
        backend_env={"BACKEND_PORT": str(backend_a)},
        webhook_env={
            "PUBLIC_BASE_URL": PUBLIC,
            "SHUTDOWN_DRAIN": "1.5",
            "BACKEND_URL": f"http://127.0.0.1:{backend_a},http://127.0.0.1:{backend_b}",
        },
    )
    stack.backend.port = backend_a
    dead = f"http://127.0.0.1:{free_port()}"  # a Vault node that never answers
    second = ServiceProcess(
        "backend",
        backend_b,
        {
            **stack.backend.env,
            "BACKEND_PORT": str(backend_b),
            "VAULT_ADDR": f"{dead},{dev_vault.addr}",
        },
        directory,
        name="backend-b",
    )
    backends = [stack.backend, second]
    webhooks = [
        stack.webhook,
        _replica(stack.webhook, "webhook-b", VAULT_ADDR=f"{dead},{dev_vault.addr}"),
    ]
    try:
        for service in (*backends, *webhooks):
            service.start()
        yield Replicas(stack, backends, webhooks)
    finally:
        for service in (*webhooks, *backends):
            service.stop(sig=signal.SIGINT)


def card_step(
    client: httpx.Client, r: Replicas, webhook: ServiceProcess, call_sid: str, card: str = "1234"
) -> str:
    """The card step on ``webhook``; the PIN step's path and query, as Twilio gets it."""
    root = twiml(
        signed_post(
            client,
            r.token,
            webhook.url + "/voice/card?registered=1",
            [*base_params(call_sid), ("Digits", card)],
            sign_url=PUBLIC + "/voice/card?registered=1",
        )
    )
    action = gather_action(root)
    assert action is not None, spoken(root)
    return action


def pin_step(
    client: httpx.Client,
    r: Replicas,
    webhook: ServiceProcess,
    call_sid: str,
    action: str,
    pin: str = "4321",
) -> str:
    url = urljoin(webhook.url + "/voice/card?registered=1", action)
    signed_for = urljoin(PUBLIC + "/voice/card?registered=1", action)
    return spoken(
        twiml(
            signed_post(
                client, r.token, url, [*base_params(call_sid), ("Digits", pin)], sign_url=signed_for
            )
        )
    )


def whole_call(r: Replicas, card_on: ServiceProcess, pin_on: ServiceProcess) -> str:
    with httpx.Client(timeout=15) as client:
        call_sid = new_call_sid()
        return pin_step(client, r, pin_on, call_sid, card_step(client, r, card_on, call_sid))


def lookups(backend: ServiceProcess) -> float:
    text = httpx.get(backend.url + "/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("ivr_lookups_total{")
    )


def test_one_call_served_by_two_webhooks_in_turn(replicas: Replicas) -> None:
    first, second = replicas.webhooks
    assert whole_call(replicas, first, second) == FOUND
    assert whole_call(replicas, second, first) == FOUND


def test_lookups_take_turns_across_the_backends(replicas: Replicas) -> None:
    before = [lookups(b) for b in replicas.backends]
    for _ in range(6):
        assert whole_call(replicas, *replicas.webhooks) == FOUND
    after = [lookups(b) for b in replicas.backends]
    assert [a - b for a, b in zip(after, before, strict=True)] == [3, 3]


def test_a_lookup_sent_again_to_the_other_backend_gets_the_same_answer(
    replicas: Replicas, dev_vault: DevVault, credentials: dict[str, RoleCredentials]
) -> None:
    """What the webhook's failover relies on: the second backend answers what the first
    decided (the shared store remembers it under the Idempotency-Key)."""
    with httpx.Client(timeout=15) as client:
        call_sid = new_call_sid()
        action = card_step(client, replicas, replicas.webhooks[0], call_sid)
        card = httpx.URL(urljoin(PUBLIC, action)).params["card"]
    encrypter = role_client(dev_vault, credentials["ivr-webhook"])
    try:
        out = encrypter.write(
            "transit/encrypt/ivr-dtmf",
            "encrypt",
            {
                "batch_input": [
                    {"plaintext": b64(b"4321"), "context": b64(call_context(call_sid, "pin"))},
                    {
                        "plaintext": b64(b"+15005550006"),
                        "context": b64(call_context(call_sid, "caller")),
                    },
                ]
            },
        )["data"]["batch_results"]
    finally:
        encrypter.close()
    body = {
        "call_sid": call_sid,
        "card_last4": card,
        "pin": out[0]["ciphertext"],
        "caller": out[1]["ciphertext"],
        "registered": True,
        "issued": str(int(time.time())),
    }
    bearer = {"Authorization": f"Bearer {replicas.stack.backend_token}"}
    first, second = replicas.backends
    answers = [
        httpx.post(
            f"{backend.url}/v1/lookup",
            json=body,
            timeout=10,
            headers={**bearer, "Idempotency-Key": "retried-request"},
        )
        for backend in (first, second)
    ]
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].json() == answers[1].json() == ANSWER
    # Another request in the same call is a second lookup, whichever backend gets it.
    other = httpx.post(
        f"{second.url}/v1/lookup",
        json=body,
        timeout=10,
        headers={**bearer, "Idempotency-Key": "another-request"},
    )
    assert other.status_code == 409


def test_a_backend_killed_holding_lookups(replicas: Replicas) -> None:
    """SIGSTOP the first backend so that lookups sent to it wait there, SIGKILL it: the
    webhooks send them to the other backend. Then, while it is dead, calls skip it."""
    victim = replicas.backends[0]
    assert victim.process is not None
    with httpx.Client(timeout=15) as client:
        steps = []
        for i in range(6):
            call_sid = new_call_sid()
            webhook = replicas.webhooks[i % 2]
            steps.append((webhook, call_sid, card_step(client, replicas, webhook, call_sid)))
    before = lookups(replicas.backends[1])
    victim.process.send_signal(signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(max_workers=6) as pool:

            def pin(step: tuple[ServiceProcess, str, str]) -> tuple[str, float]:
                started = time.monotonic()
                with httpx.Client(timeout=15) as c:
                    heard = pin_step(c, replicas, step[0], step[1], step[2])
                return heard, time.monotonic() - started

            pending = [pool.submit(pin, step) for step in steps]
            time.sleep(0.5)  # the lookups that went to the victim wait in its sockets
            victim.process.kill()
            results = [p.result() for p in pending]
        assert [heard for heard, _ in results] == [FOUND] * 6
        assert max(took for _, took in results) < 2.5  # within the webhook's budget
        assert lookups(replicas.backends[1]) - before == 6  # all of them decided there
        for _ in range(4):  # it is dead: lookups skip it, nobody waits
            assert whole_call(replicas, *replicas.webhooks) == FOUND
    finally:
        victim.process.wait()
        victim.start()


def test_sigterm_mid_request_drains_then_answers(replicas: Replicas) -> None:
    webhook = replicas.webhooks[0]
    assert webhook.process is not None
    with httpx.Client(timeout=15) as client:
        call_sid = new_call_sid()
        action = card_step(client, replicas, webhook, call_sid)
    stopped = [b.process for b in replicas.backends if b.process is not None]
    for process in stopped:  # the lookup will wait for them
        process.send_signal(signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:

            def pin() -> str:
                with httpx.Client(timeout=15) as c:
                    return pin_step(c, replicas, webhook, call_sid, action)

            in_flight = pool.submit(pin)
            time.sleep(0.3)
            webhook.process.send_signal(signal.SIGTERM)
            time.sleep(0.1)
            ready = httpx.get(webhook.url + "/readyz", timeout=5)
            assert (ready.status_code, ready.json()["status"]) == (503, "draining")
            with httpx.Client(timeout=15) as client:  # still serving while draining
                assert twiml(
                    signed_post(
                        client,
                        replicas.token,
                        webhook.url + "/voice",
                        base_params(),
                        sign_url=PUBLIC + "/voice",
                    )
                )
            for process in stopped:
                process.send_signal(signal.SIGCONT)
            assert in_flight.result() == FOUND
        webhook.process.wait(timeout=15)  # SHUTDOWN_DRAIN (1.5 s), then it exits
    finally:
        for process in stopped:
            process.send_signal(signal.SIGCONT)
        if not webhook.running:
            webhook.start()
