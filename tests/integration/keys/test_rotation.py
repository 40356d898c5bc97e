"""Rotation and retirement under real calls: a private OpenBao, real backend and webhook
processes, calls played as Twilio plays them, keys rotated by ``ivr-vault keys rotate`` and by
the bao CLI while calls are in flight."""

from __future__ import annotations

import json
import random
import re
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest

from service.backend.enrolment import DEMO_ACCOUNT_NUMBER
from service.devtools.caller import Caller, new_call_sid
from service.devtools.devstack import ServiceProcess
from service.formats import ciphertext_version
from service.logs.scrubbing import ALLOWED_FIELDS
from service.store.accounts import Store
from service.webhook import twiml
from tests.support.demo import FOUND
from tests.support.digits import assert_no_digits
from tests.support.keys import PrivateVault, private_vault
from tests.support.leak_search import template_findings
from tests.support.stack import Stack, make_stack


@pytest.fixture(scope="module")
def pv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateVault]:
    with private_vault(tmp_path_factory.mktemp("rotation")) as vault:
        yield vault


@pytest.fixture(scope="module")
def rstack(pv: PrivateVault, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = make_stack(
        pv.vault,
        pv.credentials,
        tmp_path_factory.mktemp("rstack"),
        backend_env={"STORE_PATH": str(pv.store_path)},
    )
    yield running
    running.stop()


@dataclass
class Call:
    """One call played step by step, so a test can act between the card and the PIN."""

    caller: Caller
    call_sid: str
    pin_url: str = ""

    def params(self, digits: str | None = None) -> dict[str, str]:
        base = {
            "CallSid": self.call_sid,
            "AccountSid": self.caller.account_sid,
            "From": "+15005550006",
            "To": "+15005550001",
            "CallStatus": "in-progress",
            "Direction": "inbound",
            "ApiVersion": "2010-04-01",
        }
        return base if digits is None else {**base, "Digits": digits}

    def enter_card(self, card: str) -> int:
        """Card entered; returns the key version of the card ciphertext the call holds."""
        url = self.caller.base_url + "/voice"
        first = self.caller.post(url, self.params())
        assert first.status_code == 200
        account_url = urljoin(url, _gather_action(first.text))
        star = self.caller.post(account_url, {**self.params(""), "FinishedOnKey": "*"})
        assert star.status_code == 200  # the registered-phone path
        card_url = urljoin(account_url, _gather_action(star.text))
        second = self.caller.post(card_url, self.params(card))
        assert second.status_code == 200
        self.pin_url = urljoin(card_url, _gather_action(second.text))
        version = ciphertext_version(parse_qs(urlsplit(self.pin_url).query)["card"][0])
        assert version is not None
        return version

    def enter_pin(self, pin: str) -> tuple[int, str]:
        response = self.caller.post(self.pin_url, self.params(pin))
        said = " ".join("".join(e.itertext()) for e in ET.fromstring(response.text).iter("Say"))
        return response.status_code, said


def _gather_action(document: str) -> str:
    gather = ET.fromstring(document).find("Gather")
    assert gather is not None, document
    return gather.attrib["action"]


def log_lines(service: ServiceProcess) -> list[dict[str, object]]:
    """Every JSON line the service wrote (the log pipeline writes to stderr)."""
    lines = []
    for path in (service.stdout_path, service.stderr_path):
        for raw in path.read_text().splitlines():
            if raw.startswith("{"):
                lines.append(json.loads(raw))
    return lines


def pin_versions(stack: Stack) -> dict[str, int]:
    """CallSid -> key version of the PIN ciphertext, from the webhook's access lines."""
    return {
        str(line["call_sid"]): int(str(line["key_version"]))
        for line in log_lines(stack.webhook)
        if line.get("path") == "/voice/pin" and "key_version" in line
    }


def test_rotation_under_live_traffic_drops_no_call(pv: PrivateVault, rstack: Stack) -> None:
    results: list[tuple[str, int, int, str]] = []  # sid, card version, status, heard
    errors: list[BaseException] = []
    stop = threading.Event()
    lock = threading.Lock()

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            with httpx.Client(timeout=10) as client:
                caller = Caller(rstack.webhook.url, rstack.twilio_token, client, say=lambda _: None)
                while not stop.is_set():
                    call = Call(caller, new_call_sid())
                    card_version = call.enter_card("1234")
                    time.sleep(rng.uniform(0, 0.5))  # the caller types the PIN meanwhile
                    status, heard = call.enter_pin("4321")
                    with lock:
                        results.append((call.call_sid, card_version, status, heard))
        except BaseException as exc:
            errors.append(exc)

    with httpx.Client(timeout=10) as client:
        held = Call(
            Caller(rstack.webhook.url, rstack.twilio_token, client, say=lambda _: None),
            new_call_sid(),
        )
        assert held.enter_card("1234") == 1  # a call that starts before any rotation
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        token = pv.keyadmin_token()
        rotations = []
        for i in range(4):
            time.sleep(0.6)
            if i % 2 == 0:
                done = pv.cli("keys", "rotate")
            else:
                done = pv.bao("write", "-f", "transit/keys/ivr-dtmf/rotate", token=token)
            assert done.returncode == 0, done.stderr
            rotations.append(done)
        time.sleep(0.6)
        status, heard = held.enter_pin("4321")  # card v1, PIN at v5
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert not errors, errors
    assert (status, heard) == (200, FOUND)
    assert pv.key("ivr-dtmf")["latest_version"] == 5

    failed = [r for r in results if r[2] != 200 or r[3] != FOUND]
    assert not failed, failed
    assert len(results) >= 12, len(results)
    versions = pin_versions(rstack)
    assert versions[held.call_sid] == 5  # the held call: card v1, PIN v5
    mixed = [sid for sid, card_v, _, _ in results if versions[sid] > card_v]
    assert mixed, "no concurrent call straddled a rotation"
    assert len({card_v for _, card_v, _, _ in results}) >= 3  # traffic spanned rotations


def test_lookup_verifier_is_remade_at_next_lookup_after_rotation(
    pv: PrivateVault, rstack: Stack
) -> None:
    store = Store(pv.store_path)
    # The demo account's verifiers: card and PIN, account number, one registered number.
    assert store.version_counts() == {1: 3}
    assert pv.cli("keys", "rotate", "--key", "ivr-lookup").returncode == 0
    assert store.version_counts() == {1: 3}  # nothing changes until someone calls
    with httpx.Client(timeout=10) as client:
        caller = Caller(rstack.webhook.url, rstack.twilio_token, client, say=lambda _: None)
        assert caller.play(["1234", "4321"]).heard[-1] == FOUND  # the registered phone
        # Re-made: what this call's entries give (card and PIN, the registration used);
        # the account number waits for a call that types it.
        assert store.version_counts() == {2: 2, 1: 1}
        assert caller.play(["1234", "4321"]).heard[-1] == FOUND  # found at v2 directly
        caller.identify = DEMO_ACCOUNT_NUMBER
        assert caller.play(["1234", "4321"]).heard[-1] == FOUND
        assert store.version_counts() == {2: 3}
    upgraded = [line for line in log_lines(rstack.backend) if line.get("verifier_upgraded") is True]
    assert len(upgraded) == 2
    status = json.loads(pv.cli("keys", "status", "--json").stdout)
    assert status["ivr-lookup"]["stored_records"] == {"2": 3}


def test_retired_ciphertext_hears_call_again_and_is_logged_without_digits(
    pv: PrivateVault, rstack: Stack
) -> None:
    call_sid = "CA" + "ab" * 16
    card, pin = "8642", "9753"  # digits that appear nowhere else in these logs
    with httpx.Client(timeout=10) as client:
        caller = Caller(rstack.webhook.url, rstack.twilio_token, client, say=lambda _: None)
        call = Call(caller, call_sid)
        held_version = call.enter_card(card)
        assert pv.cli("keys", "rotate").returncode == 0
        time.sleep(2.1)  # the new version outlives CALL_MAX_AGE=1s (+1 s timestamp resolution)
        retired = pv.cli("keys", "retire", "--older-than", "1s", env=pv.cli_env(CALL_MAX_AGE="1s"))
        assert retired.returncode == 0, retired.stderr
        assert pv.key("ivr-dtmf")["min_decryption_version"] == held_version + 1

        status, heard = call.enter_pin(pin)
        assert status == 200
        assert heard == twiml.CALL_AGAIN
        # a new call is not affected
        assert caller.play(["1234", "4321"]).heard[-1] == FOUND

    webhook = [
        line
        for line in log_lines(rstack.webhook)
        if line.get("call_sid") == call_sid and line.get("path") == "/voice/pin"
    ]
    assert [line["outcome"] for line in webhook] == ["ciphertext_rejected"]
    backend = [line for line in log_lines(rstack.backend) if line.get("call_sid") == call_sid]
    # 422 with a key_version below the key's min_decryption_version: a retired ciphertext.
    assert [(line["outcome"], line["status_code"], line["key_version"]) for line in backend] == [
        ("undecryptable", 422, held_version)
    ]
    for path in (
        rstack.webhook.stdout_path,
        rstack.webhook.stderr_path,
        rstack.backend.stdout_path,
        rstack.backend.stderr_path,
    ):
        text = path.read_text()
        # Bounded by non-digits: the same four digits inside a timestamp are not a leak.
        for entered in (card, pin):
            assert not re.search(rf"(?<![0-9]){entered}(?![0-9])", text), path
        assert "Traceback" not in text
    # uvicorn's start lines may show these processes' own ports and PIDs, nothing else.
    known = {"127.0.0.1"} | {
        str(n)
        for p in (rstack.webhook, rstack.backend)
        for n in (p.port, p.process.pid if p.process else 0)
    }
    for line in log_lines(rstack.webhook) + log_lines(rstack.backend):
        line, problems = template_findings(line, "log", known)
        assert problems == []
        assert_no_digits(line, ALLOWED_FIELDS)
    pv.admin.write("transit/keys/ivr-dtmf/config", "configure key", {"min_decryption_version": 1})
