"""Hostile input against the running webhook (the session stack, real Vault and backend).

Anything Twilio would not send is refused with an empty 4xx; anything a caller could
send (odd keys, silence) gets valid TwiML: a re-prompt, up to 3 tries, then goodbye.
Nothing answers 5xx, and the process keeps serving throughout.
"""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import httpx
import pytest

from service.devtools.caller import Caller, new_call_sid
from service.vault.client import VaultClient
from service.vault.transit import call_context
from service.webhook import twiml as texts
from service.webhook.signature import compute_signature
from tests.support.attack import base_params, gather_action, hangs_up, signed_post, spoken, twiml
from tests.support.demo import FOUND
from tests.support.stack import Stack, Stacks


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


@pytest.fixture(scope="module", autouse=True)
def still_serving(stack: Stack) -> Iterator[None]:
    """After every attack in this module: the same process is alive, has printed no
    traceback, and still completes a genuine call."""
    process = stack.webhook.process
    assert process is not None
    yield
    assert process.poll() is None
    assert stack.webhook.process is process
    assert "Traceback" not in stack.webhook.stderr_path.read_text(errors="replace")
    heard: list[str] = []
    with httpx.Client(timeout=10) as c:
        Caller(stack.webhook.url, stack.twilio_token, c, say=heard.append).play(["1234", "4321"])
    assert heard[-1] == FOUND


def _url(stack: Stack, path: str) -> str:
    return stack.webhook.url + path


# -- not a Twilio request: empty 4xx --------------------------------------------------


@pytest.mark.parametrize(
    "signature", [None, "", "garbled!!", "A" * 28, "x" * 4096, "ünïcödé", "c2ln bmF0dXJl"]
)
def test_missing_empty_or_garbled_signature(
    stack: Stack, client: httpx.Client, signature: str | None
) -> None:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if signature is not None:
        headers["X-Twilio-Signature"] = signature
    for path in ("/voice", "/voice/account", "/voice/card", "/voice/pin?card=vault:v1:AAAA"):
        response = client.post(
            _url(stack, path),
            content=b"CallSid=CA" + b"0" * 32,
            headers={k.encode(): v.encode("utf-8") for k, v in headers.items()},
        )
        assert response.status_code == 403, path
        assert response.content == b""


def test_signature_for_another_token_is_refused(stack: Stack, client: httpx.Client) -> None:
    response = signed_post(client, "not-the-token", _url(stack, "/voice"), base_params())
    assert response.status_code == 403


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "application/json",
        "text/plain",
        "multipart/form-data; boundary=x",
        "application/x-www-form-urlencoded-evil",
    ],
)
def test_wrong_content_type(stack: Stack, client: httpx.Client, content_type: str | None) -> None:
    url = _url(stack, "/voice")
    good = signed_post(client, stack.twilio_token, url, base_params())
    assert good.status_code == 200
    headers = {"X-Twilio-Signature": good.request.headers["x-twilio-signature"]}
    if content_type:
        headers["Content-Type"] = content_type
    response = client.post(url, content=good.request.content, headers=headers)
    assert response.status_code == 415
    assert response.content == b""


def test_get_is_not_allowed(stack: Stack, client: httpx.Client) -> None:
    for path in ("/voice", "/voice/account", "/voice/card", "/voice/pin"):
        response = client.get(_url(stack, path))
        assert response.status_code == 405, path


@pytest.mark.parametrize(
    "body", [b"\xff\xfe=\x00", b"Digits=%ff%fe", b"&".join(b"p%d=1" % i for i in range(200))]
)
def test_malformed_form_body(stack: Stack, client: httpx.Client, body: bytes) -> None:
    response = client.post(
        _url(stack, "/voice"),
        content=body,
        headers={"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": "x"},
    )
    assert response.status_code == 400
    assert response.content == b""


# -- bodies over the limit: 413 before the body is read whole ----------------------------


def _raw_exchange(port: int, head: bytes, body_parts: list[bytes]) -> tuple[bytes, float]:
    """Send a request head and the first parts of a body that never finishes; return
    what the server answered and how long it took."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(head)
        for part in body_parts:
            try:
                sock.sendall(part)
            except (BrokenPipeError, ConnectionResetError):
                break
        answer = sock.recv(4096)
        return answer, time.monotonic() - started


def test_declared_megabytes_refused_without_reading(stack: Stack) -> None:
    head = (
        b"POST /voice/card HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"X-Twilio-Signature: x\r\nContent-Length: 8000000\r\n\r\nDigits="
    )
    # 8 MB declared, 1 KiB sent: a server that read the body whole would wait forever.
    answer, took = _raw_exchange(stack.webhook.port, head, [b"1" * 1024])
    assert answer.startswith(b"HTTP/1.1 413"), answer[:60]
    assert took < 2


def test_chunked_body_cut_off_at_the_limit(stack: Stack) -> None:
    head = (
        b"POST /voice/card HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"X-Twilio-Signature: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"400\r\n" + b"1" * 1024 + b"\r\n"
    # 20 KiB of chunks and no final chunk: the answer comes once the limit is crossed.
    answer, took = _raw_exchange(stack.webhook.port, head, [chunk] * 20)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:60]
    assert took < 2


def test_digits_of_megabytes(stack: Stack, client: httpx.Client) -> None:
    pairs = [*base_params(), ("Digits", "1" * 2_000_000)]
    assert (
        signed_post(
            client, stack.twilio_token, _url(stack, "/voice/card?registered=1"), pairs
        ).status_code
        == 413
    )


# -- what a caller can send: TwiML, re-prompt, goodbye ----------------------------------

BAD_DIGITS = [
    "",
    "123",
    "12345",
    "abcd",
    "12a4",
    "*123",
    "123#",
    "****",
    "####",
    "١٢٣٤",
    "\uff11\uff12\uff13\uff14",
    "12\x0034",
    "\x00\x00\x00\x00",
    " 1234",
    "1234\n",
    "+123",
    "-123",
    "1.23",
    "०१२३",
    "²³¹⁴",
]


@pytest.mark.parametrize("digits", BAD_DIGITS, ids=[repr(d) for d in BAD_DIGITS])
def test_bad_digits_reprompt_the_card(stack: Stack, client: httpx.Client, digits: str) -> None:
    root = twiml(
        signed_post(
            client,
            stack.twilio_token,
            _url(stack, "/voice/card?registered=1"),
            [*base_params(), ("Digits", digits)],
        )
    )
    assert spoken(root) == f"{texts.RETRY} {texts.ASK_CARD}"
    assert gather_action(root) == "/voice/card?registered=1&attempt=2"


def test_missing_digits_reprompt(stack: Stack, client: httpx.Client) -> None:
    root = twiml(
        signed_post(
            client, stack.twilio_token, _url(stack, "/voice/card?registered=1"), base_params()
        )
    )
    assert gather_action(root) == "/voice/card?registered=1&attempt=2"


def test_three_tries_then_goodbye(stack: Stack, client: httpx.Client) -> None:
    params = base_params()
    path = "/voice/card?registered=1"
    for attempt in (2, 3):
        root = twiml(
            signed_post(
                client, stack.twilio_token, _url(stack, path), [*params, ("Digits", "١٢٣٤")]
            )
        )
        path = gather_action(root) or ""
        assert path == f"/voice/card?registered=1&attempt={attempt}"
    root = twiml(
        signed_post(client, stack.twilio_token, _url(stack, path), [*params, ("Digits", "12")])
    )
    assert hangs_up(root) and spoken(root) == texts.TOO_MANY_TRIES


@pytest.mark.parametrize("attempt", ["99", "-1", "x", "1" * 50, "٣"])
def test_forged_attempt_counter_never_breaks_the_flow(
    stack: Stack, client: httpx.Client, attempt: str
) -> None:
    root = twiml(
        signed_post(
            client,
            stack.twilio_token,
            _url(stack, f"/voice/card?registered=1&attempt={quote(attempt)}"),
            [*base_params(), ("Digits", "")],
        )
    )
    assert gather_action(root) is not None or hangs_up(root)


def test_repeated_digits_parameter_is_not_an_entry(stack: Stack, client: httpx.Client) -> None:
    root = twiml(
        signed_post(
            client,
            stack.twilio_token,
            _url(stack, "/voice/card?registered=1"),
            [*base_params(), ("Digits", "1234"), ("Digits", "1234")],
        )
    )
    assert gather_action(root) == "/voice/card?registered=1&attempt=2"


@pytest.mark.parametrize(
    "call_sid",
    [
        None,
        "",
        "CA123",
        "ca" + "0" * 32,
        "CA" + "G" * 32,
        "CA" + "0" * 32 + "\x00",
        "CA" + "٣" * 32,
        "PN" + "0" * 32,
        "CA" + "0" * 33,
    ],
)
def test_missing_or_malformed_call_sid(
    stack: Stack, client: httpx.Client, call_sid: str | None
) -> None:
    params = [p for p in base_params() if p[0] != "CallSid"]
    if call_sid is not None:
        params.append(("CallSid", call_sid))
    for path in ("/voice/card", "/voice/pin?card=vault:v1:AAAA"):
        root = twiml(
            signed_post(
                client, stack.twilio_token, _url(stack, path), [*params, ("Digits", "1234")]
            )
        )
        assert hangs_up(root) and spoken(root) == texts.TRY_LATER


def test_repeated_call_sid(stack: Stack, client: httpx.Client) -> None:
    params = [*base_params(), ("CallSid", new_call_sid()), ("Digits", "1234")]
    root = twiml(
        signed_post(client, stack.twilio_token, _url(stack, "/voice/card?registered=1"), params)
    )
    assert hangs_up(root) and spoken(root) == texts.TRY_LATER


# -- the card ciphertext in the action URL ---------------------------------------------


def _card_ciphertext(stack: Stack, client: httpx.Client, call_sid: str) -> str:
    root = twiml(
        signed_post(
            client,
            stack.twilio_token,
            _url(stack, "/voice/card?registered=1"),
            [*base_params(call_sid), ("Digits", "1234")],
        )
    )
    action = gather_action(root)
    assert action is not None
    return parse_qs(urlsplit(action).query)["card"][0]


def _flip(ciphertext: str) -> str:
    prefix, _, body = ciphertext.rpartition(":")
    raw = bytearray(base64.b64decode(body))
    raw[len(raw) // 2] ^= 0x01
    return f"{prefix}:{base64.b64encode(bytes(raw)).decode()}"


def _pin_url(stack: Stack, card: str, extra_query: str = "") -> str:
    """The PIN step's URL as the card step issues it: the card and the issue time."""
    return _url(
        stack,
        f"/voice/pin?card={quote(card, safe='')}&issued={int(time.time())}"
        f"&registered=1{extra_query}",
    )


def _pin_step(
    stack: Stack, client: httpx.Client, call_sid: str, card: str, extra_query: str = ""
) -> str:
    url = _pin_url(stack, card, extra_query)
    root = twiml(
        signed_post(client, stack.twilio_token, url, [*base_params(call_sid), ("Digits", "4321")])
    )
    assert hangs_up(root)
    return spoken(root)


def test_genuine_card_ciphertext_works(stack: Stack, client: httpx.Client) -> None:
    call_sid = new_call_sid()
    assert _pin_step(stack, client, call_sid, _card_ciphertext(stack, client, call_sid)) == FOUND


def test_tampered_card_ciphertexts_end_the_call_calmly(
    stack: Stack, client: httpx.Client, admin: VaultClient
) -> None:
    call_sid = new_call_sid()
    genuine = _card_ciphertext(stack, client, call_sid)
    other_call = _card_ciphertext(stack, client, new_call_sid())
    # What a PIN ciphertext of this very call looks like (context CallSid:pin).
    pins = admin.write(
        "transit/encrypt/ivr-dtmf",
        "test encrypt",
        {
            "plaintext": base64.b64encode(b"1234").decode(),
            "context": base64.b64encode(call_context(call_sid, "pin")).decode(),
        },
    )
    pin_ct = pins["data"]["ciphertext"]
    cases = {
        "not a ciphertext": "1234",
        "empty": "",
        "no version": "vault:" + genuine.rpartition(":")[2],
        "truncated": genuine[:-8],
        "flipped byte": _flip(genuine),
        "another call's": other_call,
        "the PIN's": pin_ct,
        "future version": genuine.replace("vault:v1:", "vault:v999:", 1),
        "huge": "vault:v1:" + "A" * 8000,
    }
    for name, card in cases.items():
        # Refused before any lookup (malformed) or by Transit (wrong context, tampered):
        # either way the session is over, and no PIN failure is counted for the card.
        assert _pin_step(stack, client, call_sid, card) == texts.CALL_AGAIN, name


def test_repeated_card_in_query(stack: Stack, client: httpx.Client) -> None:
    call_sid = new_call_sid()
    genuine = _card_ciphertext(stack, client, call_sid)
    heard = _pin_step(stack, client, call_sid, genuine, f"&card={quote(genuine, safe='')}")
    assert heard == texts.CALL_AGAIN


def test_missing_card(stack: Stack, client: httpx.Client) -> None:
    root = twiml(
        signed_post(
            client,
            stack.twilio_token,
            _url(stack, "/voice/pin"),
            [*base_params(), ("Digits", "4321")],
        )
    )
    assert hangs_up(root) and spoken(root) == texts.CALL_AGAIN


def test_bad_pin_digits_reprompt_and_keep_the_card(stack: Stack, client: httpx.Client) -> None:
    call_sid = new_call_sid()
    card = _card_ciphertext(stack, client, call_sid)
    url = _pin_url(stack, card)
    root = twiml(
        signed_post(client, stack.twilio_token, url, [*base_params(call_sid), ("Digits", "٤٣٢١")])
    )
    action = gather_action(root)
    assert action is not None and spoken(root) == f"{texts.RETRY} {texts.ASK_PIN}"
    query = parse_qs(urlsplit(action).query)
    assert (query["card"], query["attempt"]) == ([card], ["2"])
    assert abs(int(query["issued"][0]) - time.time()) < 10


@pytest.fixture(scope="module")
def host_derived(module_stack: Stacks) -> Stack:
    """A webhook with PUBLIC_BASE_URL empty: the URL comes from a trusted proxy's headers,
    and from the Host header for anyone else (here: the test, on 127.0.0.1)."""
    return module_stack(
        "host-derived", webhook_env={"PUBLIC_BASE_URL": "", "TRUSTED_PROXIES": "10.9.8.0/24"}
    )


@pytest.mark.parametrize("host", ["x:abc", "x:99999", "x:", "x y", "x/evil", "[::1"])
def test_a_host_header_that_is_not_a_host_is_refused_not_a_500(
    host_derived: Stack, host: str
) -> None:
    """With PUBLIC_BASE_URL empty, ``Host: x:abc`` made the signature check raise (a 500).
    Now: 403, empty body, and the webhook keeps serving."""
    url = host_derived.webhook.url + "/voice/card?registered=1"
    pairs = [*base_params(), ("Digits", "1234")]
    with socket.create_connection(("127.0.0.1", host_derived.webhook.port), timeout=5) as sock:
        body = urlencode(pairs).encode()
        signature = compute_signature(
            host_derived.twilio_token, f"http://{host}/voice/card?registered=1", pairs
        )
        sock.sendall(
            b"POST /voice/card HTTP/1.1\r\nHost: "
            + host.encode()
            + b"\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"X-Twilio-Signature: "
            + signature.encode()
            + b"\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\nConnection: close\r\n\r\n"
            + body
        )
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    head, _, content = answer.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    assert status in (400, 403), head
    assert content == b""
    # The Host the webhook really has is accepted, signed as Twilio would sign it.
    with httpx.Client(timeout=10) as client:
        root = twiml(signed_post(client, host_derived.twilio_token, url, pairs))
    assert spoken(root) == texts.ASK_PIN
