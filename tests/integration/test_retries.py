"""Twilio retries: one request delivered twice is one PIN failure, not two.

Twilio's connection overrides (``#rc=``, ``#rt=``) make it resend a webhook whose answer
was slow or lost, with the same ``I-Twilio-Idempotency-Token``. The webhook passes that
token (else ``CallSid:pin:attempt``) to the backend as ``Idempotency-Key``; the backend
remembers its answer in the store and counts the failure once. Private stack: the test
counts failures of the demo card and must not share them.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import httpx
import pytest

from service.devtools.caller import new_call_sid
from service.devtools.devstack import DevVault
from service.vault.bootstrap import RoleCredentials
from service.webhook import twiml as texts
from tests.support.attack import base_params, gather_action, signed_post, spoken, twiml
from tests.support.stack import Stack, make_stack

FOUND = "Thank you. Your account number is AC12345678 and your balance is 12.55"


@pytest.fixture(scope="module")
def private(dev_vault: DevVault, credentials: dict[str, RoleCredentials],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = make_stack(dev_vault, credentials, tmp_path_factory.mktemp("retries"),
                         backend_env={"LOCKOUT_THRESHOLD": "100"})
    yield running
    running.stop()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


def failures(stack: Stack) -> int:
    with sqlite3.connect(stack.store_path) as db:
        (count,) = db.execute("SELECT COUNT(*) FROM pin_failures").fetchone()
    return int(count)


def pin_url(stack: Stack, client: httpx.Client, call_sid: str) -> str:
    root = twiml(signed_post(client, stack.twilio_token, stack.webhook.url + "/voice/card",
                             [*base_params(call_sid), ("Digits", "1234")]))
    action = gather_action(root)
    assert action is not None
    return stack.webhook.url + action


def deliver(stack: Stack, client: httpx.Client, url: str, call_sid: str, pin: str,
            token: str | None) -> str:
    headers = {"I-Twilio-Idempotency-Token": token} if token else {}
    root = twiml(signed_post(client, stack.twilio_token, url,
                             [*base_params(call_sid), ("Digits", pin)], headers=headers))
    return spoken(root)


def test_retry_with_idempotency_token_counts_once(private: Stack, client: httpx.Client) -> None:
    before = failures(private)
    call_sid = new_call_sid()
    url = pin_url(private, client, call_sid)
    token = secrets.token_hex(16)
    for _ in range(3):
        assert deliver(private, client, url, call_sid, "0000", token) == texts.NOT_FOUND
    assert failures(private) == before + 1
    # A different request (a new token) is a new failure: the dedupe is per request.
    assert deliver(private, client, url, call_sid, "0000", secrets.token_hex(16)) \
        == texts.NOT_FOUND
    assert failures(private) == before + 2


def test_retry_without_token_dedupes_on_call_and_step(private: Stack,
                                                      client: httpx.Client) -> None:
    before = failures(private)
    call_sid = new_call_sid()
    url = pin_url(private, client, call_sid)
    for _ in range(2):
        assert deliver(private, client, url, call_sid, "0000", None) == texts.NOT_FOUND
    assert failures(private) == before + 1
    # The same call at another step (attempt 2) is a different request.
    assert deliver(private, client, url + "&attempt=2", call_sid, "0000", None) \
        == texts.NOT_FOUND
    assert failures(private) == before + 2


def test_concurrent_duplicates_count_once(private: Stack) -> None:
    """A retry can race the original still in flight: both reach the backend before
    either answer is remembered. The store's unique request key settles it."""
    before = failures(private)
    call_sid = new_call_sid()
    with httpx.Client(timeout=10) as c:
        url = pin_url(private, c, call_sid)
    token = secrets.token_hex(16)

    def one(_: int) -> str:
        with httpx.Client(timeout=10) as c:
            return deliver(private, c, url, call_sid, "0000", token)

    with ThreadPoolExecutor(max_workers=6) as pool:
        heard = list(pool.map(one, range(6)))
    assert heard == [texts.NOT_FOUND] * 6
    assert failures(private) == before + 1


def test_retried_success_answers_the_same(private: Stack, client: httpx.Client) -> None:
    call_sid = new_call_sid()
    url = pin_url(private, client, call_sid)
    token = secrets.token_hex(16)
    assert deliver(private, client, url, call_sid, "4321", token) == FOUND
    assert deliver(private, client, url, call_sid, "4321", token) == FOUND


def test_a_token_is_bound_to_its_call(private: Stack, client: httpx.Client) -> None:
    """A remembered answer is keyed by CallSid too: replaying a token from a call that
    succeeded into another call with a wrong PIN does not return the success."""
    token = secrets.token_hex(16)
    first = new_call_sid()
    assert deliver(private, client, pin_url(private, client, first), first, "4321",
                   token) == FOUND
    second = new_call_sid()
    assert deliver(private, client, pin_url(private, client, second), second, "0000",
                   token) == texts.NOT_FOUND


@pytest.mark.parametrize("token", ["x" * 300, "bad token!", "ünï"])
def test_odd_tokens_fall_back_to_call_and_step(private: Stack, client: httpx.Client,
                                               token: str) -> None:
    call_sid = new_call_sid()
    url = pin_url(private, client, call_sid)
    headers = {"I-Twilio-Idempotency-Token": quote(token) if not token.isascii() else token}
    root = twiml(signed_post(client, private.twilio_token, url,
                             [*base_params(call_sid), ("Digits", "4321")], headers=headers))
    assert spoken(root) == FOUND
