"""X-Twilio-Signature: our computation against twilio-python's RequestValidator (Twilio's
own reference): its test vectors, and a differential test on random requests. Then the URL
spellings we accept, the request key, and which forwarded headers are trusted."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlencode, urlparse

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator, add_port, remove_port

from service.webhook.signature import (
    LOOKUP_KEY,
    canonical_url,
    compute_signature,
    is_trusted_proxy,
    is_valid_signature,
    lookup_key,
    public_url,
    request_key,
    signed_request_key,
    url_variants,
)
from tests.support.attack import MultiDict

TOKEN = "12345678901234567890123456789012"
CARD_CT = "vault:v1:AbCd+/ef=="
PARAMS = [
    ("CallSid", "CA" + "0" * 32),
    ("Digits", "1234"),
    ("From", "+15005550006"),
    ("To", "+15005550001"),
    ("AccountSid", "AC" + "f" * 32),
    ("Empty", ""),
    ("Caller", "Zoë & Åsa = 100%"),
    ("SpeechResult", "ﾃｽﾄ ①"),
]
URLS = [
    "https://ivr.example.com/voice/card",
    "https://ivr.example.com:443/voice/pin?card=" + CARD_CT.replace("+", "%2B"),
    "http://127.0.0.1:8080/voice",
    "https://ivr.example.com:8443/voice?attempt=2&x=a%20b",
    "http://[::1]:8080/voice",
]


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


@pytest.mark.parametrize(
    ("url", "variants"),
    [
        ("https://h.example/voice", ["https://h.example/voice", "https://h.example:443/voice"]),
        ("https://h.example:443/voice", ["https://h.example:443/voice", "https://h.example/voice"]),
        (
            "http://h.example/voice?a=1",
            ["http://h.example/voice?a=1", "http://h.example:80/voice?a=1"],
        ),
        ("http://h.example:80/voice", ["http://h.example:80/voice", "http://h.example/voice"]),
        ("http://[::1]/voice", ["http://[::1]/voice", "http://[::1]:80/voice"]),
        # Any port is dropped, as RequestValidator drops it: Twilio's signing "is inconsistent".
        (
            "https://h.example:8443/voice",
            ["https://h.example:8443/voice", "https://h.example/voice"],
        ),
        ("http://127.0.0.1:8080/voice", ["http://127.0.0.1:8080/voice", "http://127.0.0.1/voice"]),
        # Only the port goes from an IPv6 literal (RequestValidator would leave "http://[").
        ("http://[::1]:8080/voice", ["http://[::1]:8080/voice", "http://[::1]/voice"]),
        # Spelled as urlparse().geturl() spells it: scheme lower case, an empty query dropped.
        ("HTTPS://H.example/voice?", ["https://H.example/voice", "https://H.example:443/voice"]),
    ],
)
def test_url_variants_are_the_url_then_the_default_port_added_or_any_dropped(
    url: str, variants: list[str]
) -> None:
    assert url_variants(url) == variants


@pytest.mark.parametrize(
    ("signed", "checked"),
    [
        ("https://h.example:443/voice", "https://h.example/voice"),
        ("https://h.example/voice", "https://h.example:443/voice"),
        ("http://h.example:80/voice", "http://h.example/voice"),
        ("https://h.example/voice", "https://h.example:8443/voice"),
        ("http://127.0.0.1/voice/pin?card=x", "http://127.0.0.1:8080/voice/pin?card=x"),
    ],
)
def test_port_spellings_verify_as_twilio_python_verifies_them(signed: str, checked: str) -> None:
    signature = RequestValidator(TOKEN).compute_signature(signed, dict(PARAMS))
    assert is_valid_signature(TOKEN, checked, PARAMS, signature)
    assert RequestValidator(TOKEN).validate(checked, dict(PARAMS), signature)


def test_another_port_is_not_the_one_signed() -> None:
    signature = compute_signature(TOKEN, "https://h.example:9443/voice", PARAMS)
    assert not is_valid_signature(TOKEN, "https://h.example:8443/voice", PARAMS, signature)


@pytest.mark.parametrize(
    "url",
    ["http://h.example:abc/voice", "http://h.example:99999/voice", "http://h.example:-1/voice"],
)
def test_a_url_whose_port_is_not_a_port_matches_nothing(url: str) -> None:
    assert not is_valid_signature(TOKEN, url, PARAMS, compute_signature(TOKEN, url, PARAMS))


def test_repeated_parameters_are_signed_sorted_and_once_each() -> None:
    url = URLS[0]
    repeated = [*PARAMS, ("Foo", "b"), ("Foo", "a"), ("Foo", "b")]
    signature = RequestValidator(TOKEN).compute_signature(url, MultiDict(repeated))
    assert compute_signature(TOKEN, url, repeated) == signature
    assert is_valid_signature(TOKEN, url, repeated, signature)
    # Once each: the same pairs without the repeat carry the same signature.
    assert is_valid_signature(TOKEN, url, [*PARAMS, ("Foo", "a"), ("Foo", "b")], signature)
    assert not is_valid_signature(TOKEN, url, [*PARAMS, ("Foo", "a")], signature)


# -- twilio-python's own test vectors -------------------------------------------------------
# From twilio-python, tests/unit/test_request_validator.py (ValidationTest): its token,
# URL, parameters and expected signatures, reproduced here. Its two body-hash vectors
# (bodySHA256, a JSON body) are not form posts, which is all this service accepts.

VECTOR_TOKEN = "12345"
VECTOR_URI = "https://mycompany.com/myapp.php?foo=1&bar=2"
VECTOR_PARAMS = [
    ("CallSid", "CA1234567890ABCDE"),
    ("Digits", "1234"),
    ("From", "+14158675309"),
    ("To", "+18005551212"),
    ("Caller", "+14158675309"),
]
VECTOR_DUPLICATES = [
    ("Sid", "CA123"),
    ("SidAccount", "AC123"),
    ("Digits", "5678"),
    ("Digits", "1234"),
]


def test_vector_compute_signature() -> None:
    assert (
        compute_signature(VECTOR_TOKEN, VECTOR_URI, VECTOR_PARAMS) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    )


def test_vector_compute_signature_duplicate_multi_dict() -> None:
    assert (
        compute_signature(VECTOR_TOKEN, VECTOR_URI, VECTOR_DUPLICATES)
        == "IK+Dwps556ElfBT0I3Rgjkr1wJU="
    )


@pytest.mark.parametrize(
    ("name", "uri", "signature"),
    [
        ("validation", VECTOR_URI, "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
        (
            "removes_port_on_https",
            VECTOR_URI.replace(".com", ".com:1234"),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
        ),
        (
            "removes_port_on_http",
            VECTOR_URI.replace(".com", ".com:1234").replace("https", "http"),
            "Zmvh+3yNM1Phv2jhDCwEM3q5ebU=",
        ),  # the hash of the http URI with port 1234
        ("adds_port_on_https", VECTOR_URI, "kvajT1Ptam85bY51eRf/AJRuM3w="),
        ("adds_port_on_http", VECTOR_URI.replace("https", "http"), "0ZXoZLH/DfblKGATFgpif+LLRf4="),
    ],
)
def test_vector_validation(name: str, uri: str, signature: str) -> None:
    assert is_valid_signature(VECTOR_TOKEN, uri, VECTOR_PARAMS, signature), name


# -- the differential test: our verdict is RequestValidator.validate's ----------------------


# Text as a form decoder can hand it over: any code point but surrogates (strict UTF-8).
_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=6)
_NAMES = st.one_of(
    st.sampled_from(["CallSid", "Digits", "From", "To", "Foo", "foo", "card", "AccountSid", ""]),
    _TEXT,
)
_PARAMS = st.lists(st.tuples(_NAMES, _TEXT), max_size=6).flatmap(
    lambda pairs: (
        st.lists(st.sampled_from(pairs), max_size=3).map(lambda again: pairs + again)
        if pairs
        else st.just(pairs)
    )
)  # then some pairs again: repeats, exact or not
# Hosts as a Host header or PUBLIC_BASE_URL can carry them. An IPv6 literal with a port is
# where we differ on purpose (module docstring of service/webhook/signature.py).
_HOSTS = st.sampled_from(
    ["ivr.example.com", "IVR.Example.COM", "127.0.0.1", "h", "a-b.c_d", "xn--bcher-kva.example"]
)
_PORTS = st.one_of(st.none(), st.sampled_from([0, 80, 443, 8080, 8443]), st.integers(1, 65535))
_PATHS = st.lists(
    st.text(st.sampled_from("abcAB09-._~%;=,:@!$&'()*+"), max_size=6), max_size=3
).map(lambda parts: "".join("/" + p for p in parts))
_QUERIES = st.one_of(
    st.just(""),
    st.just("?"),
    st.lists(st.tuples(_TEXT, _TEXT), max_size=3).map(lambda q: "?" + urlencode(q)),
    st.text(st.sampled_from("ab=&%20+;card:vault/"), max_size=12).map(lambda q: "?" + q),
)


@st.composite
def urls(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(["http", "https", "HTTPS"]))
    host, port = draw(_HOSTS), draw(_PORTS)
    netloc = host if port is None else f"{host}:{port}"
    fragment = draw(st.sampled_from(["", "", "#", "#frag"]))
    return f"{scheme}://{netloc}{draw(_PATHS)}{draw(_QUERIES)}{fragment}"


def _respell(url: str, how: str) -> str:
    """The URL as Twilio might have signed it: as given, with the port RequestValidator
    adds, without the port it removes, with another port, or in other letter cases."""
    if how == "add":
        return str(add_port(urlparse(url)))
    if how == "remove":
        return str(remove_port(urlparse(url)))
    if how == "other_port":
        parts = urlparse(str(remove_port(urlparse(url))))
        return parts._replace(netloc=f"{parts.netloc}:1234").geturl()
    if how == "case":
        return url.swapcase()
    return url


@st.composite
def signatures(draw: st.DrawFn, url: str, params: list[tuple[str, str]]) -> str:
    """Mostly signatures of nearly this request, so that both verdicts are exercised."""
    kind = draw(
        st.sampled_from(
            ["same", "same", "add", "remove", "other_port", "case", "params", "token", "garbage"]
        )
    )
    if kind == "garbage":
        return draw(st.text(max_size=40))
    token = "another-token" if kind == "token" else TOKEN
    signed_params = params
    if kind == "params":
        signed_params = draw(
            st.one_of(_PARAMS, st.permutations(params).map(list), st.just([*params, ("Extra", "")]))
        )
    signed_url = _respell(url, kind)
    signature: str = RequestValidator(token).compute_signature(signed_url, MultiDict(signed_params))
    return signature


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), url=urls(), params=_PARAMS)
@example(
    data=None,
    url="https://ivr.example.com:8443/voice/pin?card=vault%3Av1%3Aabc",
    params=[("Digits", "1234"), ("Foo", "b"), ("Foo", "a"), ("Foo", "b")],
)
def test_our_verdict_is_request_validators(
    data: st.DataObject | None, url: str, params: list[tuple[str, str]]
) -> None:
    validator = RequestValidator(TOKEN)
    if data is None:  # the explicit example: signed without its port, params repeated
        signature = validator.compute_signature(_respell(url, "remove"), MultiDict(params))
    else:
        signature = data.draw(signatures(url, params), label="signature")
    theirs = validator.validate(url, MultiDict(params), signature)
    assert is_valid_signature(TOKEN, url, params, signature) is theirs


def test_the_differential_test_sees_both_verdicts() -> None:
    """It would prove nothing if every generated request were refused (or accepted)."""
    seen: set[bool] = set()

    @settings(max_examples=300, deadline=None)
    @given(data=st.data(), url=urls(), params=_PARAMS)
    def record(data: st.DataObject, url: str, params: list[tuple[str, str]]) -> None:
        signature = data.draw(signatures(url, params))
        seen.add(RequestValidator(TOKEN).validate(url, MultiDict(params), signature))

    record()
    assert seen == {True, False}


def test_where_we_differ_on_purpose_an_ipv6_literal_with_a_port() -> None:
    url = "http://[::1]:8080/voice"
    proper = compute_signature(TOKEN, "http://[::1]/voice", PARAMS)
    garbled = compute_signature(TOKEN, "http://[/voice", PARAMS)  # RequestValidator's
    assert is_valid_signature(TOKEN, url, PARAMS, proper)
    assert not RequestValidator(TOKEN).validate(url, dict(PARAMS), proper)
    assert not is_valid_signature(TOKEN, url, PARAMS, garbled)
    assert RequestValidator(TOKEN).validate(url, dict(PARAMS), garbled)


# -- the request key: what Twilio signed, hashed -------------------------------------------


def test_the_request_key_is_what_twilio_signed() -> None:
    url = URLS[1]
    key = request_key(url, PARAMS)
    assert len(key) == 64 and int(key, 16) >= 0
    # A retry sends the same URL and parameters, in any order, repeats or not.
    assert request_key(url, list(reversed(PARAMS))) == key
    assert request_key(url, [*PARAMS, PARAMS[0]]) == key
    # Anything signed that differs is another request.
    others = {
        request_key(url + "&attempt=2", PARAMS),
        request_key(url, [(k, "0000" if k == "Digits" else v) for k, v in PARAMS]),
        request_key(url.replace("/voice/", "/voice/x"), PARAMS),
        request_key(url, [*PARAMS, ("Extra", "")]),
    }
    assert key not in others and len(others) == 4


@pytest.mark.parametrize(
    "spelling",
    [
        "https://ivr.example.com/voice/pin?attempt=1",
        "https://ivr.example.com:443/voice/pin?attempt=1",
        "https://ivr.example.com:1/voice/pin?attempt=1",
        "https://IVR.Example.COM:8443/voice/pin?attempt=1",
        "HTTPS://ivr.example.com:65535/voice/pin?attempt=1",
    ],
)
def test_the_request_key_does_not_depend_on_the_port(spelling: str) -> None:
    """Every port spelling of one URL (each one the signature may hold for) is one key."""
    assert request_key(spelling, PARAMS) == request_key(
        "https://ivr.example.com/voice/pin?attempt=1", PARAMS
    )


@pytest.mark.parametrize(
    ("signed", "received"),
    [
        ("https://ivr.example.com/voice/pin?a=1", "https://ivr.example.com/voice/pin?a=1"),
        ("https://ivr.example.com:443/voice/pin?a=1", "https://ivr.example.com/voice/pin?a=1"),
        ("https://ivr.example.com/voice/pin?a=1", "https://ivr.example.com:8443/voice/pin?a=1"),
        (
            "https://ivr.example.com:8443/voice/pin?a=1",
            "https://ivr.example.com:8443/voice/pin?a=1",
        ),
    ],
)
def test_the_checked_request_key_does_not_depend_on_which_spelling_matched(
    signed: str, received: str
) -> None:
    """The check tries the URL as received first and the other spelling only when that
    fails; whichever matched, the request's key is the one request_key gives."""
    signature = RequestValidator(TOKEN).compute_signature(signed, dict(PARAMS))
    key = signed_request_key(TOKEN, received, PARAMS, signature)
    assert key == request_key("https://ivr.example.com/voice/pin?a=1", PARAMS)
    assert signed_request_key(TOKEN, received, PARAMS, signature[:-2] + "x=") is None
    assert signed_request_key("another-token", received, PARAMS, signature) is None


def test_the_canonical_url_keeps_an_ipv6_literal_whole() -> None:
    assert canonical_url("http://[::1]:8080/voice?a=1") == "http://[::1]/voice?a=1"
    assert canonical_url("http://[::1]/voice") == "http://[::1]/voice"


def test_the_request_key_has_no_separator_to_confuse() -> None:
    """Values are JSON-encoded, so moving text between fields changes the key."""
    assert request_key("u", [("a", "bc")]) != request_key("u", [("ab", "c")])
    assert request_key("u|a", []) != request_key("u", [("|a", "")])


# -- the public URL, and whose forwarded headers count ---------------------------------

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))


def url_for(
    client: str | None,
    *,
    base: str = "",
    proto: str | None = "https",
    host: str | None = "ivr.example.com",
    header_host: str = "10.1.2.3:8080",
    query: str = "",
) -> str | None:
    return public_url(
        public_base_url=base,
        trusted_proxies=PROXIES,
        client_host=client,
        scheme="http",
        host_header=header_host,
        forwarded_proto=proto,
        forwarded_host=host,
        path="/voice/pin",
        query_string=query,
    )


def test_public_base_url_wins_over_any_header() -> None:
    assert (
        url_for("10.0.0.5", base="https://fixed.example", query="card=x")
        == "https://fixed.example/voice/pin?card=x"
    )


def test_forwarded_headers_are_honoured_from_a_trusted_proxy() -> None:
    assert url_for("10.0.0.5") == "https://ivr.example.com/voice/pin"
    assert url_for("::1") == "https://ivr.example.com/voice/pin"
    # Comma-joined chains: the client-most (first) value is what the caller's side used.
    assert (
        url_for("10.0.0.5", proto="https, http", host="IVR.example.com, inner:8080")
        == "https://ivr.example.com/voice/pin"
    )


@pytest.mark.parametrize("client", ["203.0.113.9", "11.0.0.1", None, "not-an-ip", "::2"])
def test_forwarded_headers_are_ignored_from_anyone_else(client: str | None) -> None:
    # The connection's own scheme and Host header are used instead.
    assert url_for(client) == "http://10.1.2.3:8080/voice/pin"


@pytest.mark.parametrize(
    "host",
    [
        "evil.example/voice?",
        "a@b",
        "h ost",
        "h#x",
        "h\\x",
        "x:abc",
        "x:99999",
        "x:",
        "[::1",
        "x:80:80",
    ],
)
def test_a_forwarded_host_that_could_reshape_the_url_is_refused(host: str) -> None:
    assert url_for("10.0.0.5", host=host) is None


@pytest.mark.parametrize("host", ["x:abc", "x:65536", "a b", "x/y", "[zz]:80", "x:+80"])
def test_a_host_header_that_is_not_a_host_is_refused(host: str) -> None:
    """With PUBLIC_BASE_URL empty the Host header is the last resort; a port that is not a
    port made url_variants raise (a 500) before."""
    assert url_for("203.0.113.9", header_host=host) is None


@pytest.mark.parametrize(
    "host", ["ivr.example.com", "10.1.2.3:8080", "[::1]:8080", "h:65535", "a_b-c.d"]
)
def test_a_host_header_that_is_a_host_is_used(host: str) -> None:
    assert url_for("203.0.113.9", header_host=host) == f"http://{host}/voice/pin"


def test_an_odd_forwarded_proto_is_refused() -> None:
    assert url_for("10.0.0.5", proto="gopher") is None


def test_is_trusted_proxy() -> None:
    assert is_trusted_proxy("10.255.0.1", PROXIES)
    assert not is_trusted_proxy("192.168.0.1", PROXIES)
    assert not is_trusted_proxy("", PROXIES)
    assert not is_trusted_proxy("10.0.0.1", ())


def test_the_lookup_key_is_the_request_key_under_the_auth_token() -> None:
    """The PIN is among what the request key hashes; unkeyed, the key in a URL (a step sent
    round again) would leave the PIN 10,000 guesses away. Keyed, another token gives
    another key, and the same request the same one on every webhook."""
    url = "https://ivr.test/voice/pin?card=vault%3Av1%3Aabc&issued=1"
    keys = {
        pin: request_key(url, [("CallSid", "CA" + "1" * 32), ("Digits", pin)])
        for pin in ("0000", "4321")
    }
    looked_up = lookup_key("token", keys["4321"])
    assert LOOKUP_KEY.fullmatch(looked_up)
    assert looked_up == lookup_key("token", keys["4321"])
    assert looked_up not in (keys["4321"], lookup_key("other-token", keys["4321"]))
    assert lookup_key("token", keys["0000"]) != looked_up
