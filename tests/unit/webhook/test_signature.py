"""X-Twilio-Signature: our computation against twilio-python's RequestValidator (Twilio's
own reference), the URL spellings we accept, and which forwarded headers are trusted."""

from __future__ import annotations

import ipaddress

import pytest
from twilio.request_validator import RequestValidator

from service.webhook.signature import (
    compute_signature,
    is_trusted_proxy,
    is_valid_signature,
    public_url,
    url_variants,
)

TOKEN = "12345678901234567890123456789012"
CARD_CT = "vault:v1:AbCd+/ef=="
PARAMS = [("CallSid", "CA" + "0" * 32), ("Digits", "1234"), ("From", "+15005550006"),
          ("To", "+15005550001"), ("AccountSid", "AC" + "f" * 32), ("Empty", ""),
          ("Caller", "Zoë & Åsa = 100%"), ("SpeechResult", "ﾃｽﾄ ①")]
URLS = ["https://ivr.example.com/voice/card",
        "https://ivr.example.com:443/voice/pin?card=" + CARD_CT.replace("+", "%2B"),
        "http://127.0.0.1:8080/voice", "https://ivr.example.com:8443/voice?attempt=2&x=a%20b",
        "http://[::1]:8080/voice"]


@pytest.mark.parametrize("url", URLS)
def test_signature_is_the_one_twilio_computes(url: str) -> None:
    validator = RequestValidator(TOKEN)
    ours = compute_signature(TOKEN, url, PARAMS)
    assert ours == validator.compute_signature(url, dict(PARAMS))
    assert validator.validate(url, dict(PARAMS), ours)
    assert is_valid_signature(TOKEN, url, PARAMS, ours)


def test_parameter_order_does_not_matter_but_every_byte_does() -> None:
    url = URLS[1]
    signature = compute_signature(TOKEN, url, PARAMS)
    assert is_valid_signature(TOKEN, url, list(reversed(PARAMS)), signature)
    tampered_digits = [(k, "4321" if k == "Digits" else v) for k, v in PARAMS]
    assert not is_valid_signature(TOKEN, url, tampered_digits, signature)
    assert not is_valid_signature(TOKEN, url.replace("AbCd", "AbCe"), PARAMS, signature)
    assert not is_valid_signature(TOKEN, url, [*PARAMS, ("Extra", "")], signature)
    assert not is_valid_signature("another-token", url, PARAMS, signature)


@pytest.mark.parametrize("signature", ["", " ", "x" * 129, "ßignature", "=" * 28])
def test_missing_or_malformed_signatures_are_refused(signature: str) -> None:
    assert not is_valid_signature(TOKEN, URLS[0], PARAMS, signature)


@pytest.mark.parametrize(("url", "variants"), [
    ("https://h.example/voice", ["https://h.example/voice", "https://h.example:443/voice"]),
    ("https://h.example:443/voice", ["https://h.example:443/voice", "https://h.example/voice"]),
    ("http://h.example/voice?a=1", ["http://h.example/voice?a=1",
                                    "http://h.example:80/voice?a=1"]),
    ("http://h.example:80/voice", ["http://h.example:80/voice", "http://h.example/voice"]),
    ("http://[::1]/voice", ["http://[::1]/voice", "http://[::1]:80/voice"]),
    # A non-default port is part of what Twilio called: no variant without it.
    ("https://h.example:8443/voice", ["https://h.example:8443/voice"]),
    ("http://127.0.0.1:8080/voice", ["http://127.0.0.1:8080/voice"]),
])
def test_url_variants_add_or_drop_only_the_default_port(url: str, variants: list[str]) -> None:
    assert url_variants(url) == variants


@pytest.mark.parametrize(("signed", "checked"), [
    ("https://h.example:443/voice", "https://h.example/voice"),
    ("https://h.example/voice", "https://h.example:443/voice"),
    ("http://h.example:80/voice", "http://h.example/voice"),
])
def test_default_port_spellings_verify_both_ways(signed: str, checked: str) -> None:
    signature = RequestValidator(TOKEN).compute_signature(signed, dict(PARAMS))
    assert is_valid_signature(TOKEN, checked, PARAMS, signature)


def test_a_non_default_port_is_not_dropped() -> None:
    signature = compute_signature(TOKEN, "https://h.example/voice", PARAMS)
    assert not is_valid_signature(TOKEN, "https://h.example:8443/voice", PARAMS, signature)


# -- the public URL, and whose forwarded headers count ---------------------------------

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))


def url_for(client: str | None, *, base: str = "", proto: str | None = "https",
            host: str | None = "ivr.example.com", header_host: str = "10.1.2.3:8080",
            query: str = "") -> str | None:
    return public_url(public_base_url=base, trusted_proxies=PROXIES, client_host=client,
                      scheme="http", host_header=header_host, forwarded_proto=proto,
                      forwarded_host=host, path="/voice/pin", query_string=query)


def test_public_base_url_wins_over_any_header() -> None:
    assert url_for("10.0.0.5", base="https://fixed.example", query="card=x") == \
        "https://fixed.example/voice/pin?card=x"


def test_forwarded_headers_are_honoured_from_a_trusted_proxy() -> None:
    assert url_for("10.0.0.5") == "https://ivr.example.com/voice/pin"
    assert url_for("::1") == "https://ivr.example.com/voice/pin"
    # Comma-joined chains: the client-most (first) value is what the caller's side used.
    assert url_for("10.0.0.5", proto="https, http", host="IVR.example.com, inner:8080") == \
        "https://ivr.example.com/voice/pin"


@pytest.mark.parametrize("client", ["203.0.113.9", "11.0.0.1", None, "not-an-ip", "::2"])
def test_forwarded_headers_are_ignored_from_anyone_else(client: str | None) -> None:
    # The connection's own scheme and Host header are used instead.
    assert url_for(client) == "http://10.1.2.3:8080/voice/pin"


@pytest.mark.parametrize("host", ["evil.example/voice?", "a@b", "h ost", "h#x", "h\\x"])
def test_a_forwarded_host_that_could_reshape_the_url_is_refused(host: str) -> None:
    assert url_for("10.0.0.5", host=host) is None


def test_an_odd_forwarded_proto_is_refused() -> None:
    assert url_for("10.0.0.5", proto="gopher") is None


def test_is_trusted_proxy() -> None:
    assert is_trusted_proxy("10.255.0.1", PROXIES)
    assert not is_trusted_proxy("192.168.0.1", PROXIES)
    assert not is_trusted_proxy("", PROXIES)
    assert not is_trusted_proxy("10.0.0.1", ())
