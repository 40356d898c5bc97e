"""The whole call flow end to end: real OpenBao, real backend and webhook processes.

Calls are played by :class:`service.caller.Caller` and by the real CLI
(``python -m service call``), exactly as a developer would with ``make run`` up.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from service.devtools.caller import REGISTERED, Caller, new_call_sid
from service.devtools.devstack import DevVault
from service.vault.bootstrap import RoleCredentials
from service.webhook import twiml
from service.webhook.signature import compute_signature
from tests.support.demo import ANSWER, FOUND
from tests.support.stack import Stack, Stacks, cli_call, role_client

ASK_ACCOUNT = twiml.ASK_ACCOUNT.format(digits=8)


@pytest.fixture(scope="module")
def own_stack(module_stack: Stacks) -> Stack:
    """Wrong PINs count towards a lockout: keep them out of the session stack's store."""
    return module_stack("e2e")


def play(
    stack: Stack, entries: list[str], *, identify: str = REGISTERED, **kwargs: str
) -> tuple[list[str], bool]:
    heard: list[str] = []
    with httpx.Client(timeout=10) as client:
        result = Caller(
            stack.webhook.url, stack.twilio_token, client, say=heard.append, identify=identify
        ).play(entries, **kwargs)
    assert set(result.statuses) == {200}
    return heard, result.completed


def test_happy_path_through_caller(stack: Stack) -> None:
    heard, completed = play(stack, ["1234", "4321"])
    assert completed
    assert heard == [ASK_ACCOUNT, twiml.ASK_CARD, twiml.ASK_PIN, FOUND]


def test_wrong_pin_through_caller(own_stack: Stack) -> None:
    heard, completed = play(own_stack, ["1234", "0000"])
    assert completed
    assert heard == [ASK_ACCOUNT, twiml.ASK_CARD, twiml.ASK_PIN, twiml.NOT_FOUND]


def test_unknown_card_hears_the_same_goodbye(own_stack: Stack) -> None:
    heard, _ = play(own_stack, ["9999", "4321"])
    assert heard[-1] == twiml.NOT_FOUND


def test_cli_call_happy_path_and_wrong_pin(own_stack: Stack, tmp_path: Path) -> None:
    ok = cli_call(own_stack, tmp_path, "--card", "1234", "--pin", "4321")
    assert ok.returncode == 0, ok.stderr
    # The voice is printed once, before the first sentence: every <Say> uses it.
    assert ok.stdout.splitlines() == [
        "[language=en-US voice=Polly.Joanna]",
        ASK_ACCOUNT,
        twiml.ASK_CARD,
        twiml.ASK_PIN,
        FOUND,
    ]

    wrong = cli_call(own_stack, tmp_path, "--card", "1234", "--pin", "0000")
    assert wrong.returncode == 0, wrong.stderr
    assert wrong.stdout.splitlines()[-1] == "We were not able to locate you in our system. Goodbye."
    # The digits typed never show up in what the CLI prints.
    assert "0000" not in wrong.stdout + wrong.stderr


def test_cli_call_with_a_wrong_auth_token_is_refused(own_stack: Stack, tmp_path: Path) -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "TWILIO_AUTH_TOKEN": "not-the-token",
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "service",
            "call",
            "--card",
            "1234",
            "--pin",
            "4321",
            "--url",
            own_stack.webhook.url,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "[webhook answered HTTP 403]" in done.stdout
    assert "AC12345678" not in done.stdout


# -- ciphertexts are bound to their call and their field ------------------------------


def card_ciphertext(stack: Stack, client: httpx.Client, call_sid: str) -> str:
    """What the webhook puts in the PIN step's action URL for this call's card entry."""
    caller = Caller(stack.webhook.url, stack.twilio_token, client)
    response = caller.post(
        stack.webhook.url + "/voice/card?registered=1", {"CallSid": call_sid, "Digits": "1234"}
    )
    assert response.status_code == 200
    gather = ET.fromstring(response.text).find("Gather")
    assert gather is not None
    ciphertext = parse_qs(urlsplit(gather.attrib["action"]).query)["card"][0]
    assert ciphertext.startswith("vault:v")
    return ciphertext


def pin_step(
    stack: Stack,
    client: httpx.Client,
    call_sid: str,
    card_ct: str,
) -> list[str]:
    caller = Caller(stack.webhook.url, stack.twilio_token, client)
    url = (
        stack.webhook.url
        + "/voice/pin?"
        + str(httpx.QueryParams({"card": card_ct, "issued": int(time.time()), "registered": 1}))
    )
    # From: the number registered on the demo account (the registered-phone path).
    response = caller.post(url, {"CallSid": call_sid, "Digits": "4321", "From": caller.caller})
    assert response.status_code == 200
    return ["".join(say.itertext()) for say in ET.fromstring(response.text).iter("Say")]


def lookup(
    stack: Stack,
    client: httpx.Client,
    body: dict[str, str],
    credentials: dict[str, RoleCredentials],
) -> httpx.Response:
    """POST a lookup straight to the backend; the caller's number is encrypted for the
    body's call, as the webhook would."""
    caller = webhook_encrypt(stack.vault, credentials, body["call_sid"], "caller", "+15005550006")
    return client.post(
        stack.backend.url + "/v1/lookup",
        json={"caller": caller, "registered": True, "issued": str(int(time.time())), **body},
        headers={"Authorization": f"Bearer {stack.backend_token}"},
    )


def webhook_encrypt(
    dev_vault: DevVault,
    credentials: dict[str, RoleCredentials],
    call_sid: str,
    field: str,
    digits: str,
) -> str:
    """Encrypt as the webhook does, with the webhook's own AppRole."""
    vault = role_client(dev_vault, credentials["ivr-webhook"])
    try:
        context = base64.b64encode(f"{call_sid}:{field}".encode()).decode()
        plaintext = base64.b64encode(digits.encode()).decode()
        answer = vault.write(
            "transit/encrypt/ivr-dtmf", "encrypt", {"plaintext": plaintext, "context": context}
        )
    finally:
        vault.close()
    ciphertext: str = answer["data"]["ciphertext"]
    return ciphertext


def test_card_ciphertext_of_one_call_is_rejected_in_another(
    stack: Stack, credentials: dict[str, RoleCredentials]
) -> None:
    call_a, call_b = new_call_sid(), new_call_sid()
    with httpx.Client(timeout=10) as client:
        card_ct = card_ciphertext(stack, client, call_a)
        # Control: in its own call the same ciphertext finds the account.
        assert pin_step(stack, client, call_a, card_ct) == [FOUND]
        # Replayed into another call: a calm goodbye, no account, no 5xx.
        assert pin_step(stack, client, call_b, card_ct) == [twiml.CALL_AGAIN]

        pin_b = webhook_encrypt(stack.vault, credentials, call_b, "pin", "4321")
        assert (
            lookup(
                stack,
                client,
                {"call_sid": call_b, "card_last4": card_ct, "pin": pin_b},
                credentials,
            ).status_code
            == 422
        )


def test_card_and_pin_ciphertexts_cannot_be_swapped(
    stack: Stack, credentials: dict[str, RoleCredentials]
) -> None:
    call = new_call_sid()
    card_ct = webhook_encrypt(stack.vault, credentials, call, "card_last4", "1234")
    pin_ct = webhook_encrypt(stack.vault, credentials, call, "pin", "4321")
    with httpx.Client(timeout=10) as client:
        good = lookup(
            stack, client, {"call_sid": call, "card_last4": card_ct, "pin": pin_ct}, credentials
        )
        assert good.status_code == 200
        assert good.json() == ANSWER
        swapped = lookup(
            stack, client, {"call_sid": call, "card_last4": pin_ct, "pin": card_ct}, credentials
        )
        assert swapped.status_code == 422
        assert "4321" not in swapped.text and "1234" not in swapped.text
        # The card slot demands the card context, whatever the PIN slot holds.
        both_pins = lookup(
            stack, client, {"call_sid": call, "card_last4": pin_ct, "pin": pin_ct}, credentials
        )
        assert both_pins.status_code == 422


def test_accounts_add_reads_digits_from_stdin_and_the_call_finds_them(
    own_stack: Stack, tmp_path: Path
) -> None:
    """``accounts add`` with the backend's identity: digits on stdin, never argv; the store
    gets verifiers only, and a call with those digits finds the new account."""
    env = {**own_stack.backend.env, "HOME": str(tmp_path)}
    added = subprocess.run(
        [
            sys.executable,
            "-m",
            "service",
            "accounts",
            "add",
            "--account",
            "AC87654321",
            "--balance",
            "99.10",
        ],
        input="24681357\n8642\n5813\n",
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert added.returncode == 0, added.stderr
    assert "8642" not in added.stdout + added.stderr
    assert b"8642" not in own_stack.store_path.read_bytes()
    assert b"24681357" not in own_stack.store_path.read_bytes()
    heard, _ = play(own_stack, ["8642", "5813"], identify="24681357")
    assert heard[-1] == ("Thank you. Your account number is AC87654321 and your balance is 99.10")
    heard, _ = play(own_stack, ["8642", "4321"], identify="24681357")
    assert heard[-1] == twiml.NOT_FOUND


@pytest.mark.parametrize(
    ("pin", "rule"),
    [
        ("1357", "one of the 100 most common PINs"),
        ("7777", "one digit repeated"),
        ("8901", "a straight sequence of digits"),
    ],
)
def test_accounts_add_refuses_a_weak_pin_in_one_line_exit_2(
    own_stack: Stack, tmp_path: Path, pin: str, rule: str
) -> None:
    env = {**own_stack.backend.env, "HOME": str(tmp_path)}
    before = own_stack.store_path.read_bytes()
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "service",
            "accounts",
            "add",
            "--account",
            "AC55555555",
            "--balance",
            "1.00",
        ],
        input=f"97531864\n2468\n{pin}\n",
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2
    assert refused.stderr == f"ivr-vault: PIN refused: {rule}; choose another\n"
    assert refused.stdout == "" and pin not in refused.stderr
    assert b"AC55555555" not in own_stack.store_path.read_bytes()
    assert own_stack.store_path.read_bytes() == before


def test_the_action_url_is_covered_by_the_signature(stack: Stack) -> None:
    call = new_call_sid()
    with httpx.Client(timeout=10) as client:
        card_ct = card_ciphertext(stack, client, call)
        params = {"CallSid": call, "Digits": "4321", "From": "+15005550006"}
        signed_url = (
            stack.webhook.url
            + "/voice/pin?"
            + str(httpx.QueryParams({"card": card_ct, "issued": int(time.time()), "registered": 1}))
        )
        signature = compute_signature(stack.twilio_token, signed_url, list(params.items()))
        # The signature of the real URL on a URL whose ciphertext was changed: refused.
        forged = signed_url.replace("vault%3Av", "vault%3Av9")
        refused = client.post(forged, data=params, headers={"X-Twilio-Signature": signature})
        assert (refused.status_code, refused.content) == (403, b"")
        # Control: the same signature on the URL it was made for is accepted.
        accepted = client.post(signed_url, data=params, headers={"X-Twilio-Signature": signature})
        assert accepted.status_code == 200
        assert "".join(ET.fromstring(accepted.text).itertext()) == FOUND

        # Tampered and re-signed (someone holding the auth token): only a goodbye.
        other = new_call_sid()
        card_ct = card_ciphertext(stack, client, other)
        tampered = card_ct[:-4] + ("AAAA" if not card_ct.endswith("AAAA") else "BBBB")
        assert pin_step(stack, client, other, tampered) == [twiml.CALL_AGAIN]


def backend_sample(stack: Stack, client: httpx.Client, name: str) -> float:
    text = client.get(stack.backend.url + "/metrics").text
    match = re.search(rf'^{name}{{operation="decrypt"}} (\S+)$', text, re.M)
    return float(match[1]) if match else 0.0


def test_the_backend_decrypts_card_pin_and_caller_in_one_transit_call(
    own_stack: Stack,
) -> None:
    with httpx.Client(timeout=10) as client:
        calls = backend_sample(own_stack, client, "ivr_transit_http_calls_total")
        items = backend_sample(own_stack, client, "ivr_transit_items_total")
        heard, _ = play(own_stack, ["1234", "4321"])
        assert heard[-1] == FOUND
        assert backend_sample(own_stack, client, "ivr_transit_http_calls_total") == calls + 1
        assert backend_sample(own_stack, client, "ivr_transit_items_total") == items + 3
