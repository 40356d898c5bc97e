"""Outages, produced with the real processes: Vault stopped, sealed or hung; the backend
down or hung. Every webhook request still gets calm TwiML within 3 s (Twilio waits 15),
/readyz turns 503, and a whole call works again within seconds of the dependency's return.

The Vault is this module's own (a DevVault: server mode, Raft storage), so the session's is
never stopped, sealed or paused: it survives a restart (sealed, as a real one does) and
keeps the services' AppRoles and tokens. Its own stack too.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urljoin

import httpx
import pytest

from service.devtools.caller import Caller, new_call_sid
from service.devtools.devstack import DevVault
from service.webhook import twiml as texts
from tests.support.attack import base_params, gather_action, hangs_up, signed_post, spoken, twiml
from tests.support.demo import FOUND
from tests.support.keys import private_vault
from tests.support.stack import Stack, make_stack

CALM_WITHIN_S = 3.0
RECOVER_WITHIN_S = 10.0


@dataclass
class Lab:
    vault: DevVault
    stack: Stack
    client: httpx.Client


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with private_vault(tmp_path_factory.mktemp("outage-vault")) as pv:
        stack = make_stack(pv.vault, pv.credentials, tmp_path_factory.mktemp("outage-stack"))
        try:
            with httpx.Client(timeout=10) as client:
                yield Lab(pv.vault, stack, client)
        finally:
            stack.stop()


def timed(func: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = func()
    return response, time.monotonic() - started


def pin_url(lab: Lab, call_sid: str) -> str:
    """Take a call as far as the PIN prompt (while everything is up)."""
    root = twiml(
        signed_post(
            lab.client,
            lab.stack.twilio_token,
            lab.stack.webhook.url + "/voice/card?registered=1",
            [*base_params(call_sid), ("Digits", "1234")],
        )
    )
    action = gather_action(root)
    assert action is not None
    return lab.stack.webhook.url + action


def assert_calm(
    lab: Lab,
    *,
    pin_step: tuple[str, str] | None = None,
    card_step: bool = True,
    parallel: int = 6,
    resent: bool = False,
) -> None:
    """Every caller route answers valid TwiML within the budget, even with several
    callers at once; the ones that need the dependency end the call calmly (``resent``:
    the PIN step after it went round again, as it does when no backend answered)."""
    token = lab.stack.twilio_token
    webhook = lab.stack.webhook.url

    def voice() -> httpx.Response:
        with httpx.Client(timeout=15) as c:
            return signed_post(c, token, webhook + "/voice", base_params())

    def card() -> httpx.Response:
        with httpx.Client(timeout=15) as c:
            return signed_post(
                c, token, webhook + "/voice/card?registered=1", [*base_params(), ("Digits", "1234")]
            )

    calls: list[Callable[[], httpx.Response]] = [voice]
    if card_step:
        calls += [card] * parallel
    if pin_step is not None:
        url, call_sid = pin_step

        def pin() -> httpx.Response:
            """The PIN step, and with ``resent`` the same step sent round again (a
            ``<Redirect>``: another webhook might reach a backend), as Twilio follows it.
            Each request within the budget."""
            with httpx.Client(timeout=15) as c:
                first, took = timed(
                    lambda: signed_post(c, token, url, [*base_params(call_sid), ("Digits", "4321")])
                )
                assert took < CALM_WITHIN_S, ("pin", took)
                if not resent:
                    return first
                (verb,) = list(twiml(first))
                assert verb.tag == "Redirect" and verb.text, first.text
                again, took = timed(
                    lambda: signed_post(c, token, urljoin(url, verb.text), base_params(call_sid))
                )
                assert took < CALM_WITHIN_S, ("pin sent round", took)
                return again

        calls += [pin] * 2
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        results = list(pool.map(timed, calls))
    for (response, took), call in zip(results, calls, strict=True):
        assert took < CALM_WITHIN_S or call.__name__ == "pin", (call.__name__, took)
        root = twiml(response)
        if call is voice:
            assert gather_action(root) == "/voice/account"
        else:
            assert hangs_up(root) and spoken(root) == texts.TRY_LATER, call.__name__


def assert_not_ready(*urls: str) -> None:
    for url in urls:
        response, took = timed(lambda: httpx.get(f"{url}/readyz", timeout=10))  # noqa: B023
        assert response.status_code == 503, url
        assert took < CALM_WITHIN_S, url


def assert_recovers(lab: Lab) -> float:
    """Poll with whole calls until one completes; return how long it took."""
    started = time.monotonic()
    while True:
        heard: list[str] = []
        Caller(lab.stack.webhook.url, lab.stack.twilio_token, lab.client, say=heard.append).play(
            ["1234", "4321"]
        )
        if heard and heard[-1] == FOUND:
            break
        assert time.monotonic() - started < RECOVER_WITHIN_S, heard
        time.sleep(0.2)
    for url in (lab.stack.webhook.url, lab.stack.backend.url):
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
    return time.monotonic() - started


def test_healthy_to_begin_with(lab: Lab) -> None:
    assert assert_recovers(lab) < 3


def test_vault_stopped(lab: Lab) -> None:
    url = pin_url(lab, call_sid := new_call_sid())
    lab.vault.stop()
    assert_calm(lab, pin_step=(url, call_sid))
    assert_not_ready(lab.stack.webhook.url, lab.stack.backend.url)
    lab.vault.restart()  # same ports, same data: sealed, then unsealed
    assert_recovers(lab)


def test_vault_sealed(lab: Lab) -> None:
    url = pin_url(lab, call_sid := new_call_sid())
    lab.vault.seal()
    assert_calm(lab, pin_step=(url, call_sid))
    assert_not_ready(lab.stack.webhook.url, lab.stack.backend.url)
    lab.vault.unseal()
    assert_recovers(lab)


def test_vault_hung(lab: Lab) -> None:
    """SIGSTOP: the port still accepts connections, nothing ever answers."""
    url = pin_url(lab, call_sid := new_call_sid())
    lab.vault.pause()
    try:
        assert_calm(lab, pin_step=(url, call_sid))
        assert_not_ready(lab.stack.webhook.url, lab.stack.backend.url)
        # Still calm after the first wave: nothing queued up behind the hung calls.
        assert_calm(lab)
    finally:
        lab.vault.resume()
    assert_recovers(lab)


def test_backend_down(lab: Lab) -> None:
    url = pin_url(lab, call_sid := new_call_sid())
    lab.stack.backend.stop()
    try:
        # The card step needs only Vault: it still works. The PIN step ends calmly.
        assert_calm(lab, pin_step=(url, call_sid), card_step=False, resent=True)
        assert twiml(
            signed_post(
                lab.client,
                lab.stack.twilio_token,
                lab.stack.webhook.url + "/voice/card?registered=1",
                [*base_params(), ("Digits", "1234")],
            )
        )
        assert_not_ready(lab.stack.webhook.url)
    finally:
        lab.stack.backend.start()
    assert_recovers(lab)


def test_backend_hung(lab: Lab) -> None:
    url = pin_url(lab, call_sid := new_call_sid())
    process = lab.stack.backend.process
    assert process is not None
    process.send_signal(signal.SIGSTOP)
    try:
        assert_calm(lab, pin_step=(url, call_sid), card_step=False, resent=True)
        assert_not_ready(lab.stack.webhook.url)
    finally:
        process.send_signal(signal.SIGCONT)
    assert_recovers(lab)
