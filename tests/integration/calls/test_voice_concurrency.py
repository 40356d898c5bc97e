"""VOICE_CONCURRENCY on a real webhook (uvicorn, OpenBao, backend): past the limit a
``/voice*`` request hears the calm goodbye, HTTP 200 with TwiML that hangs up, never the
503 that uvicorn's own ``limit_concurrency`` answers and Twilio reads out as an
application error. The calls holding the slots are unharmed, and the slots come back."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import httpx
import pytest

from service.backend.enrolment import DEMO_CARD, DEMO_PIN
from service.devtools.caller import new_call_sid
from service.webhook import twiml as texts
from tests.support.attack import base_params, hangs_up, pin_url, place_call, signed_post, spoken
from tests.support.attack import twiml as document
from tests.support.demo import FOUND
from tests.support.stack import Stacks

LIMIT = 2


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=20) as c:
        yield c


def test_past_the_limit_a_caller_hears_the_calm_goodbye(
    new_stack: Stacks, client: httpx.Client
) -> None:
    stack = new_stack("busy", webhook_env={"VOICE_CONCURRENCY": str(LIMIT)})
    token, webhook = stack.twilio_token, stack.webhook.url
    pins = [pin_url(client, token, webhook, new_call_sid(), DEMO_CARD) for _ in range(LIMIT)]
    backend = stack.backend.process
    assert backend is not None
    # A paused backend answers nothing: each PIN step holds its slot until its budget ends.
    os.kill(backend.pid, signal.SIGSTOP)
    try:
        with httpx.Client(timeout=20) as other, ThreadPoolExecutor(LIMIT) as pool:
            held: list[Future[httpx.Response]] = [
                pool.submit(signed_post, other, token, url, [*base_params(), ("Digits", DEMO_PIN)])
                for url in pins
            ]
            busy = None
            while not any(f.done() for f in held):
                started = time.monotonic()
                answer = signed_post(client, token, webhook + "/voice", base_params())
                took = time.monotonic() - started
                if texts.TRY_LATER in spoken(document(answer)):
                    busy = answer
                    break
                time.sleep(0.05)  # the held requests are not in yet
            assert busy is not None, "a request past the limit was served"
            assert not any(f.done() for f in held)  # refused while both slots were taken
            assert took < 1.0  # refused at once, not queued
            assert hangs_up(document(busy))
            # Not every path is limited: health and metrics answer while /voice is full.
            assert client.get(webhook + "/healthz").status_code == 200
    finally:
        os.kill(backend.pid, signal.SIGCONT)
    for future in held:
        # The held steps are not dropped: no backend answered within the budget, so each
        # goes round again through the proxy (a Redirect, as for a webhook cut off from
        # the backends), a 200 TwiML, never a 5xx.
        assert document(future.result()).find("Redirect") is not None
    # The slots are free again: a whole call goes through.
    assert place_call(client, token, webhook, DEMO_CARD, DEMO_PIN) == FOUND
