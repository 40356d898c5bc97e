"""Replays count once, on real processes (OpenBao, uvicorn backend and webhook).

- Twilio resends a webhook whose answer was slow or lost (``#rc``, ``#rt``): the same
  signature, URL and parameters. The webhook's Idempotency-Key for the backend is made of
  exactly those, so a retry, even one racing the original, gets the remembered answer.
- ``I-Twilio-Idempotency-Token`` is not covered by the signature: a captured wrong-PIN
  request replayed with fresh tokens used to count as a fresh guess each time, and locked
  the owner out. It counts once now.
- One lookup per CallSid: a second, differently signed PIN step in the same call is
  refused (it sounds like a wrong PIN) and counted as a failure, its PIN never compared.
- The PIN step's URL carries its signed issue time: a replay older than STEP_MAX_AGE hears
  a calm goodbye without reaching the backend, whose memory of the call lasts longer.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.backend.enrolment import DEMO_CARD, DEMO_PIN
from service.devtools.caller import new_call_sid
from service.webhook import twiml as texts
from tests.support.attack import (
    base_params,
    gather_action,
    pin_outcomes,
    pin_url,
    place_call,
    signed_post,
    spoken,
    twiml,
)
from tests.support.demo import FOUND
from tests.support.stack import Stack, Stacks

CARD, PIN = DEMO_CARD, DEMO_PIN


@pytest.fixture
def private(new_stack: Stacks) -> Stack:
    """A stack of its own for each test: each counts the demo card's failures from zero.
    A short STEP_MAX_AGE, so that a replay can be made old within the test."""
    return new_stack("private", webhook_env={"STEP_MAX_AGE": "3s"})


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=20) as c:
        yield c


def card_failures(stack: Stack) -> int:
    with closing(sqlite3.connect(stack.store_path)) as db:
        row = db.execute("SELECT failures FROM card_lockout").fetchone()
    return 0 if row is None else int(row[0])


def deliver(
    client: httpx.Client, stack: Stack, url: str, call_sid: str, pin: str, token: str | None = None
) -> str:
    """One delivery of a signed PIN step (the same bytes each time for the same
    arguments), optionally with an ``I-Twilio-Idempotency-Token``."""
    headers = {"I-Twilio-Idempotency-Token": token} if token else {}
    return spoken(
        twiml(
            signed_post(
                client,
                stack.twilio_token,
                url,
                [*base_params(call_sid), ("Digits", pin)],
                headers=headers,
            )
        )
    )


def test_a_replay_with_fresh_unsigned_tokens_counts_once(
    private: Stack, client: httpx.Client
) -> None:
    """The review's attack: one captured wrong-PIN request, replayed 8 times with a new
    I-Twilio-Idempotency-Token each, locked the owner out. Now it is one failure."""
    call_sid = new_call_sid()
    url = pin_url(client, private.twilio_token, private.webhook.url, call_sid, CARD)
    before = pin_outcomes(private.webhook.url)
    heard = [
        deliver(client, private, url, call_sid, "0000", secrets.token_hex(16)) for _ in range(9)
    ]
    assert heard == [texts.NOT_FOUND] * 9
    # The owner is not locked out.
    assert place_call(client, private.twilio_token, private.webhook.url, CARD, PIN) == FOUND
    assert pin_outcomes(private.webhook.url)["found"] - before["found"] == 1
    # The backend decided once and answered the other 8 from memory; a correct PIN then
    # cleared the one failure.
    assert backend_outcomes(private) == {"not_found": 1, "replayed": 8, "found": 1}
    print("replays: 9 deliveries counted 1")  # the figure for the report


def test_twilio_retries_racing_the_original_count_once(private: Stack) -> None:
    """A retry can reach the backend while the original is still being decided: the
    decision's one transaction and the per-call memory settle it."""
    call_sid = new_call_sid()
    with httpx.Client(timeout=20) as c:
        url = pin_url(c, private.twilio_token, private.webhook.url, call_sid, CARD)
    go = threading.Barrier(6)

    def one(_: int) -> str:
        with httpx.Client(timeout=20) as c:
            go.wait(timeout=20)
            return deliver(c, private, url, call_sid, "0000")

    with ThreadPoolExecutor(max_workers=6) as pool:
        heard = list(pool.map(one, range(6)))
    assert heard == [texts.NOT_FOUND] * 6
    assert backend_outcomes(private) == {"not_found": 1, "replayed": 5}
    assert card_failures(private) == 1


def test_a_retried_success_answers_the_same(private: Stack, client: httpx.Client) -> None:
    call_sid = new_call_sid()
    url = pin_url(client, private.twilio_token, private.webhook.url, call_sid, CARD)
    assert [deliver(client, private, url, call_sid, PIN) for _ in range(3)] == [FOUND] * 3
    assert backend_outcomes(private) == {"found": 1, "replayed": 2}


def test_a_second_lookup_in_one_call_is_refused_and_counted(
    private: Stack, client: httpx.Client
) -> None:
    """A PIN step signed anew for a call that already had its lookup (not a retry: other
    digits, so another key) is refused, even with the right PIN, and counts as a failure."""
    call_sid = new_call_sid()
    url = pin_url(client, private.twilio_token, private.webhook.url, call_sid, CARD)
    assert deliver(client, private, url, call_sid, "0000") == texts.NOT_FOUND
    before = pin_outcomes(private.webhook.url)
    assert deliver(client, private, url, call_sid, PIN) == texts.NOT_FOUND
    assert deliver(client, private, url + "&attempt=2", call_sid, PIN) == texts.NOT_FOUND
    outcomes = pin_outcomes(private.webhook.url) - before
    assert outcomes["second_lookup"] == 2
    assert card_failures(private) == 3


def test_an_old_replay_ends_the_call_without_a_lookup(private: Stack, client: httpx.Client) -> None:
    call_sid = new_call_sid()
    url = pin_url(client, private.twilio_token, private.webhook.url, call_sid, CARD)
    assert deliver(client, private, url, call_sid, "0000") == texts.NOT_FOUND
    time.sleep(4.2)  # past STEP_MAX_AGE=3s (issue times are whole seconds)
    before = pin_outcomes(private.webhook.url)
    for token in (None, secrets.token_hex(16)):
        assert deliver(client, private, url, call_sid, "0000", token) == texts.CALL_AGAIN
    assert (pin_outcomes(private.webhook.url) - before)["step_expired"] == 2
    assert backend_outcomes(private) == {"not_found": 1}  # the backend never saw them
    assert card_failures(private) == 1


def test_a_backend_with_a_shorter_memory_refuses_a_step_it_forgot(
    new_stack: Stacks, client: httpx.Client
) -> None:
    """docs/security.md, "step age at the backend": the webhook accepts a step for STEP_MAX_AGE (5
    min here), a backend
    told CALL_MAX_AGE=3s forgets the call's answers after 3 s: a replay in between used to
    be decided afresh (a second failure counted). The backend gets the step's signed issue
    time and refuses it (410, "session expired") once older than its own memory."""
    short = new_stack("short-memory", backend_env={"CALL_MAX_AGE": "3s"})
    call_sid = new_call_sid()
    url = pin_url(client, short.twilio_token, short.webhook.url, call_sid, CARD)
    assert deliver(client, short, url, call_sid, "0000") == texts.NOT_FOUND
    time.sleep(4.2)  # past the backend's CALL_MAX_AGE, within the webhook's STEP_MAX_AGE
    assert deliver(client, short, url, call_sid, "0000") == texts.CALL_AGAIN
    assert card_failures(short) == 1
    assert backend_outcomes(short) == {"not_found": 1, "step_expired": 1}


@pytest.fixture
def derived(new_stack: Stacks) -> Stack:
    """A stack with no PUBLIC_BASE_URL: the webhook rebuilds the URL from ``Host`` (the
    proxy in TRUSTED_PROXIES sends no X-Forwarded-Host here)."""
    return new_stack(
        "derived", webhook_env={"PUBLIC_BASE_URL": "", "TRUSTED_PROXIES": "127.0.0.1/32"}
    )


def test_a_replay_with_a_shifted_port_in_host_counts_once(
    derived: Stack, client: httpx.Client
) -> None:
    """The review's attack (docs/security.md, "port-shifted replays"): the signature holds for the
    URL with or without
    its port, so one captured PIN step replayed with ``Host: ivr.test:1`` ... ``:9`` was
    10 fresh guesses and locked the card. The key is the port-less URL now: one guess."""
    call_sid = new_call_sid()
    public = "http://ivr.test"
    card_step = "/voice/card?registered=1"  # the demo's number, registered on its account
    card = signed_post(
        client,
        derived.twilio_token,
        derived.webhook.url + card_step,
        [*base_params(call_sid), ("Digits", CARD)],
        sign_url=public + card_step,
        headers={"Host": "ivr.test"},
    )
    action = gather_action(twiml(card))
    assert action is not None
    pairs = [*base_params(call_sid), ("Digits", "0000")]
    heard = [
        spoken(
            twiml(
                signed_post(
                    client,
                    derived.twilio_token,
                    derived.webhook.url + action,
                    pairs,
                    sign_url=public + action,
                    headers={"Host": host},
                )
            )
        )
        for host in ["ivr.test", *(f"ivr.test:{port}" for port in range(1, 10))]
    ]
    assert heard == [texts.NOT_FOUND] * 10
    assert backend_outcomes(derived) == {"not_found": 1, "replayed": 9}
    assert card_failures(derived) == 1


def backend_outcomes(stack: Stack) -> dict[str, int]:
    """The backend's ``ivr_requests_total{route="/v1/lookup"}`` by outcome (one worker):
    ``replayed`` is an answer given from memory, every other outcome a decision."""
    counts: dict[str, int] = {}
    text = httpx.get(stack.backend.url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "ivr_requests_total" and sample.labels["route"] == "/v1/lookup":
                counts[sample.labels["outcome"]] = int(sample.value)
    return counts
