"""The scrubber processor on its own: masking, allow-list, redaction, fail-closed, fingerprints."""

from __future__ import annotations

import base64
import errno
import re
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, example, find, given, settings
from hypothesis import strategies as st

from service.logs.scrubbing import (
    ALLOWED_FIELDS,
    FAILURE_EVENT,
    PID_MAX,
    REDACTED,
    TRANSIT_KEY_TYPES,
    TRUNCATED,
    TYPED_FIELDS,
    Scrubber,
    ciphertext_fields,
    fingerprint,
    is_digit_like,
    is_sensitive_key,
    mask_digits,
    normalise_key,
)
from service.logs.templates import KNOWN_TEMPLATES, SPEC, Arg, TemplateEvent
from tests.support.digits import (
    DIGIT_ALPHABETS,
    GOOD_SID,
    assert_no_digits,
    digit_text,
    has_digit,
    nested,
)


def scrub(event: dict[Any, Any]) -> dict[str, Any]:
    return dict(Scrubber()(None, "info", event))


# --- masking -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DIGIT_ALPHABETS))
def test_every_alphabet_is_masked(name: str) -> None:
    digits = DIGIT_ALPHABETS[name]
    assert mask_digits(digits) == "*" * len(digits)
    assert all(is_digit_like(c) for c in digits)


def test_numeric_but_not_decimal_characters_are_masked() -> None:
    # ½ is numeric, not a digit, but its NFKC form has 1 and 2 in it; Roman numerals fail closed.
    assert mask_digits("½ ⅓ ⑴ ⒈ ㉑ Ⅳ 一") == "* * * * * * *"


def test_letters_and_separators_survive() -> None:
    text = "Card: abc-DEF é ß ☎ \u00a0\u200b*#"
    assert mask_digits(text) == text


def test_control_characters_and_lone_surrogates_are_neutralised() -> None:
    assert mask_digits("a\x1b[31mb\x00c\td\n") == "a?[**mb?c\td\n"
    assert mask_digits("x\udc80y\x85é") == "x?y?é"


@given(st.text())
@settings(max_examples=500)
def test_mask_digits_leaves_no_digit_and_keeps_length(text: str) -> None:
    masked = mask_digits(text)
    assert len(masked) == len(text)
    assert not has_digit(masked)


def test_a_backslash_d_scrubber_leaks() -> None:
    """The naive ``re.sub(r"\\d", ...)`` scrubber fails the same property: Hypothesis shows it."""

    def naive(text: str) -> str:
        return re.sub(r"\d", "*", text)

    leak = find(digit_text, lambda s: has_digit(naive(s)), settings=settings(max_examples=2000))
    assert has_digit(naive(leak))
    assert not has_digit(mask_digits(leak))


# --- keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "Digits", "digits", "pin", "PIN", "card", "cardLast4", "card_last4", "last4",
        "SpeechResult", "UnstableSpeechResult", "plaintext", "body", "form", "query",
        "query_string", "token", "secret", "secret_id", "auth", "Authorization",
        "password", "X-Twilio-Signature", "\uff50\uff49\uff4e", "P.I.N", "Card Last 4",
    ],
)  # fmt: skip
def test_sensitive_keys_are_redacted_whatever_the_value(key: str) -> None:
    assert is_sensitive_key(key)
    for value in ("1234", 1234, b"1234", {"x": "y"}, None, "no digits"):
        assert scrub({key: value})[mask_digits(key)] == REDACTED


def test_normalise_key() -> None:
    assert normalise_key("Card-Last_\uff14") == "cardlast4"
    assert normalise_key("\uff33peech\uff32esult") == "speechresult"


def test_sensitive_keys_nested_and_ciphertext_is_not_redacted() -> None:
    out = scrub(
        {"request": {"form": {"Digits": "1"}, "meta": [{"pin": "4321"}]}, "ciphertext": "v"}
    )
    assert out["request"] == {"form": REDACTED, "meta": [{"pin": REDACTED}]}
    assert out["ciphertext"] == "v"  # ciphertexts are fingerprinted by their callers instead


def test_digits_in_keys_are_masked_without_losing_entries() -> None:
    out = scrub({"a1": "x", "a2": "y", 3: "z"})
    assert out == {"a*": "x", "a*_": "y", "*": "z"}


# --- allow-list ------------------------------------------------------------------------------


def test_allow_listed_fields_keep_valid_values() -> None:
    event = {
        "call_sid": GOOD_SID, "status_code": 404, "status": 200, "key_version": 3,
        "duration_ms": 12.5, "ct_fp": "abcdefghij", "level": "info", "logger": "urllib3.pool",
        "timestamp": "2024-05-06T07:08:09.123456Z",
    }  # fmt: skip
    assert scrub(event) == event


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("call_sid", "CA" + "1234" * 7),  # wrong length
        ("call_sid", "CA" + "0123456789ABCDEF" * 2),  # upper-case hex
        ("call_sid", GOOD_SID + "\n"),
        ("call_sid", "CA" + "\u0660" * 32),
        ("status_code", "4321"),
        ("status_code", 4321),
        ("status_code", True),
        ("status", 99),
        ("key_version", 4321),
        ("key_version", 0),
        ("key_version", "2"),
        ("key_version", True),
        ("duration_ms", float("nan")),
        ("duration_ms", -1),
        ("duration_ms", "12"),
        ("duration_ms", Decimal("1234")),
        ("ct_fp", "abcdefghi1"),
        ("ct_fp", "abcdefghijk"),
        ("timestamp", "1234"),
        ("timestamp", "2024-05-06T07:08:09+01:00"),
        ("level", "4321"),
        ("logger", "pin.1234"),
    ],
)
def test_allow_listed_fields_with_bad_values_are_redacted(key: str, value: object) -> None:
    assert scrub({key: value})[key] == REDACTED


# --- every other kind of value ---------------------------------------------------------------


class Custom:
    def __repr__(self) -> str:
        return "Custom(pin=4321, card=①②③④)"


def test_values_of_every_type_are_rendered_digit_free() -> None:
    out = scrub(
        {
            "int": 1234, "float": 12.34, "dec": Decimal("12.34"), "frac": Fraction(1, 3),
            "cplx": 1 + 2j, "bytes": b"\xff\xfe1234", "bytearray": bytearray(b"12"),
            "mem": memoryview(b"34"), "exc": ValueError("pin 4321"), "obj": Custom(),
            "set": {1, 22}, "bool": True, "none": None, "huge": 10**5000,
        }
    )  # fmt: skip
    assert out["int"] == "****"
    assert out["float"] == "**.**"
    assert out["frac"] == "*/*"
    assert out["bytes"] == "\ufffd\ufffd****"
    assert out["exc"] == "ValueError: pin ****"
    assert out["obj"] == "Custom(pin=****, card=****)"
    assert out["set"] == ["*", "**"]
    assert out["bool"] is True and out["none"] is None
    assert out["huge"] == TRUNCATED
    assert_no_digits(out, ALLOWED_FIELDS)


def test_depth_cycles_length_and_width_are_bounded() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    scrubber = Scrubber(max_depth=3, max_items=3, max_chars=5)
    out = scrubber(None, "info", {"c": cycle, "s": "12345678", "l": [1, 2, 3, 4], "x": 1})
    assert out["c"] == [[[TRUNCATED]]]
    assert out["s"] == "*****" + TRUNCATED
    assert out["l"] == ["*", "*", "*", TRUNCATED]
    assert out[TRUNCATED] == TRUNCATED and "x" not in out


@given(
    st.dictionaries(
        st.one_of(digit_text, st.sampled_from(sorted(ALLOWED_FIELDS))), nested, max_size=6
    )
)
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@example({"call_sid": "CA" + "1" * 31, "status_code": "4321", "key_version": 4321})
def test_no_digit_survives_the_scrubber(event: dict[str, Any]) -> None:
    out = scrub(event)
    assert_no_digits(out, ALLOWED_FIELDS)


# --- fail closed -----------------------------------------------------------------------------


class ExplodingRepr:
    def __repr__(self) -> str:
        raise RuntimeError("pin 4321")


def test_unrenderable_value_gives_the_fixed_failure_event() -> None:
    out = scrub({"event": "card 1234", "thing": ExplodingRepr()})
    assert out == dict(FAILURE_EVENT)


def test_misplaced_scrubber_gives_the_fixed_failure_event() -> None:
    # e.g. a renderer placed before the scrubber hands it a str
    out = Scrubber()(None, "info", '{"Digits": "1234"}')  # type: ignore[arg-type]
    assert out == dict(FAILURE_EVENT)
    out["level"] = "changed"  # each failure gets a fresh dict; the constant stays intact
    assert FAILURE_EVENT["level"] == "error"


# --- ciphertext fingerprints -----------------------------------------------------------------


@given(st.text())
def test_fingerprint_is_digit_free_and_survives_the_scrubber(ciphertext: str) -> None:
    fp = fingerprint(ciphertext)
    assert re.fullmatch(r"[a-p]{10}", fp)
    assert scrub({"ct_fp": fp})["ct_fp"] == fp


def test_ciphertext_fields() -> None:
    ct = "vault:v2:c2VjcmV0IDEyMzQ="
    fields = ciphertext_fields(ct)
    assert fields == {"ct_fp": fingerprint(ct), "key_version": 2}
    assert scrub(dict(fields)) == fields
    assert fingerprint(ct) != fingerprint("vault:v2:c2VjcmV0IDEyMzU=")
    assert ciphertext_fields("not a ciphertext 1234").keys() == {"ct_fp"}


def test_base64_of_long_input_survives_masking_so_transit_bodies_are_redacted() -> None:
    """Masking catches short digit runs in base64 (below), not every base64 text: the keys
    that carry Transit's input are redacted whole."""
    encoded = base64.b64encode(b"card and pin").decode()  # Y2FyZCBhbmQgcGlu
    assert mask_digits(encoded) == "Y*FyZCBhbmQgcGlu"  # its one digit only: not a digit run
    short = base64.b64encode(b"1234").decode()  # MTIzNA==
    payload = {"batch_input": [{"input": encoded}], "payload": short, "plaintext": encoded}
    out = Scrubber()(None, "info", {"event": "transit", **payload})
    assert all(out[key] == REDACTED for key in payload)


def spellings(digits: bytes) -> list[str]:
    """The base64 and hex spellings of ``digits`` a library could put in a message."""
    b64 = base64.b64encode(digits).decode()
    url = base64.urlsafe_b64encode(digits).decode()
    return [b64, b64.rstrip("="), url, url.rstrip("="), digits.hex(), digits.hex().upper()]


@given(
    st.text(alphabet="0123456789", min_size=2, max_size=19),
    st.sampled_from(["{}", "pin={}", "got {} back", "[{}]", '"{}"', "{}\n"]),
)
def test_base64_and_hex_spellings_of_short_digit_runs_are_masked(digits: str, around: str) -> None:
    """docs/security.md, "smaller items": defence in depth, no path emits them today."""
    for spelled in spellings(digits.encode()):
        out = mask_digits(around.format(spelled))
        assert spelled not in out and len(out) == len(around.format(spelled))
        assert digits not in out


@example("MTIzNA==")
@example("MTIzNDU2Nzg5MDEyMzQ1Njc4OQ==")
@given(
    st.text(alphabet="0123456789", min_size=2, max_size=19).map(
        lambda digits: base64.b64encode(digits.encode()).decode()
    )
)
def test_no_short_digit_run_decodes_from_the_output(encoded: str) -> None:
    out = mask_digits(encoded)
    assert set(out) == {"*"}


def test_words_and_ciphertexts_are_not_taken_for_base64_digits() -> None:
    for text in (
        "NA",
        "Mock",
        "token refused",
        "vault:v:MTIzNA-not-digits",
        "ivr-lookup",
        "abc_def",
    ):
        assert mask_digits(text) == text


def test_route_fields_are_verbatim_only_for_known_templates() -> None:
    out = Scrubber()(
        None,
        "info",
        {"route": "/v1/lookup", "path": "/v1/lookup/1234", "backend_status": 404, "attempt": 4321},
    )
    assert out["route"] == "/v1/lookup"  # a known template keeps its digit
    assert out["path"] == "/v*/lookup/****"  # anything else is masked, not dropped
    assert out["backend_status"] == 404 and out["attempt"] == REDACTED  # PIN-shaped: no


# --- typed fields (our own numbers and names) ----------------------------------------------


def test_typed_fields_keep_numbers_of_their_exact_type_and_range() -> None:
    event = {
        "ttl_s": 3600.0, "seconds": 2.05, "keys": 2, "roles": 4, "destroyed": 0,
        "snapshot_bytes": 17_408, "store_bytes": 4096, "port": 8080, "pid": 4321,
        "card_version": 2, "latest_version": 7, "min_decryption_version": 1,
        "type": "aes256-gcm96",
    }  # fmt: skip
    assert scrub(event) == event


@pytest.mark.parametrize(
    ("key", "value", "shown"),
    [
        ("port", "8080", "****"),  # the same digits as a str: masked, as for any key
        ("pid", "4321", "****"),
        ("ttl_s", "3600", "****"),
        ("keys", 4321, "****"),  # a count past 999 would be PIN-shaped
        ("port", 0, "*"),
        ("port", 65_536, "*****"),
        ("pid", 4_194_305, "*******"),
        ("ttl_s", -1.0, "-*.*"),
        ("ttl_s", float("inf"), "inf"),
        ("seconds", Decimal("2.5"), "*.*"),
        ("keys", True, True),  # a bool is no count (and has no digit)
        ("type", "rsa-4321", "rsa-****"),
        ("type", "AES256-GCM96", "AES***-GCM**"),
        ("card_version", 1234, "****"),
    ],
)
def test_typed_fields_mask_anything_else(key: str, value: object, shown: object) -> None:
    assert scrub({key: value})[key] == shown


caller_values = st.one_of(digit_text, digit_text.map(lambda s: s.encode("utf-8")))


@given(key=st.sampled_from(sorted(TYPED_FIELDS)), value=caller_values)
@settings(max_examples=300)
def test_caller_digits_under_a_typed_field_are_masked(key: str, value: str | bytes) -> None:
    """What a caller types reaches a log as text (or bytes), never as a number: under a
    typed field it is masked like under any other key."""
    out = scrub({key: value})[key]
    if TYPED_FIELDS[key](value):  # only an exact enumerated name, e.g. "aes256-gcm96"
        assert value in TRANSIT_KEY_TYPES
        return
    assert isinstance(out, str) and not has_digit(out)


# --- known foreign templates -----------------------------------------------------------------

RUNNING = "Uvicorn running on %s://%s:%d (Press CTRL+C to quit)"
RUNNING6 = "Uvicorn running on %s://[%s]:%d (Press CTRL+C to quit)"
STARTED = "Started server process [%d]"


def render(
    msg: str,
    *args: object,
    logger: str = "uvicorn.error",
    hosts: frozenset[str] = frozenset({"127.0.0.1", "::1", "localhost"}),
) -> object:
    scrubber = Scrubber(listen_hosts=hosts)
    return scrubber(None, "info", {"event": TemplateEvent(logger, msg, args)})["event"]


def test_every_template_has_one_kind_per_argument() -> None:
    for (_, msg), kinds in KNOWN_TEMPLATES.items():
        specs = [m.group() for m in SPEC.finditer(msg) if m.group() != "%%"]
        assert len(specs) == len(kinds), msg


def test_known_templates_show_ports_pids_and_listen_addresses() -> None:
    assert render(STARTED, 4321) == "Started server process [4321]"
    assert render("Finished server process [%d]", 77) == "Finished server process [77]"
    assert render(RUNNING, "http", "127.0.0.1", 8080) == (
        "Uvicorn running on http://127.0.0.1:8080 (Press CTRL+C to quit)"
    )
    assert render(RUNNING6, "https", "::1", 443) == (
        "Uvicorn running on https://[::1]:443 (Press CTRL+C to quit)"
    )


@pytest.mark.parametrize(
    ("msg", "args", "shown"),
    [
        (STARTED, (True,), "Started server process [*]"),  # a bool is no PID
        (STARTED, (0,), "Started server process [*]"),
        (STARTED, (4_194_305,), "Started server process [*******]"),
        (
            RUNNING,
            ("http", "10.0.0.7", 8080),
            "Uvicorn running on http://**.*.*.*:8080 (Press CTRL+C to quit)",
        ),  # not configured
        (
            RUNNING,
            ("http", "\u0661\u0662\u0667.\u0660.\u0660.\u0661", 70_000),
            "Uvicorn running on http://***.*.*.*:***** (Press CTRL+C to quit)",
        ),
        (
            RUNNING,
            ("ftp4", "127.0.0.1", 80),
            "Uvicorn running on ftp*://127.0.0.1:80 (Press CTRL+C to quit)",
        ),
    ],
)
def test_arguments_that_fail_their_check_are_masked(
    msg: str, args: tuple[object, ...], shown: str
) -> None:
    assert render(msg, *args) == shown


def test_a_listen_host_must_be_an_ip_literal_that_was_configured() -> None:
    assert (
        Scrubber(listen_hosts=frozenset({"127.0.0.1"}))
        .render_template(TemplateEvent("uvicorn.error", RUNNING, ("http", "127.0.0.1", 1)))
        .endswith("127.0.0.1:1 (Press CTRL+C to quit)")
    )
    # not configured, or configured but a name (a name shows no digit it could hide)
    for hosts in (frozenset(), frozenset({"4321"}), frozenset({"1234.example"})):
        text = Scrubber(listen_hosts=hosts).render_template(
            TemplateEvent("uvicorn.error", RUNNING, ("http", "4321", 1))
        )
        assert "4321" not in text


def test_the_template_is_matched_on_logger_and_unformatted_message() -> None:
    assert render(STARTED, 4321, logger="hvac") == "Started server process [****]"
    assert render("Started server process [%d] ", 4321) == "Started server process [****] "
    assert render(STARTED, 12, 34) == "log scrubber failure"  # wrong arity: fails closed


def test_a_template_whose_argument_cannot_be_formatted_fails_closed() -> None:
    out = Scrubber()(None, "info", {"event": TemplateEvent("uvicorn.error", STARTED, ("4321",))})
    assert out == dict(FAILURE_EVENT)


template_keys = st.sampled_from(sorted(KNOWN_TEMPLATES))


@given(key=template_keys, data=st.data())
@settings(max_examples=300)
def test_caller_digits_in_template_arguments_are_masked(
    key: tuple[str, str], data: st.DataObject
) -> None:
    """Text arguments are what a caller's digits would be: none survives, whatever the
    template. Only a checked int (a port, a PID, an errno the kernel names, an HTTP
    status) or the configured address shows."""
    kinds = KNOWN_TEMPLATES[key]
    specs = [m.group() for m in SPEC.finditer(key[1])]
    args = tuple(data.draw(st.integers() if spec == "%d" else digit_text) for spec in specs)
    text = render(key[1], *args, logger=key[0], hosts=frozenset({"127.0.0.1"}))
    assert isinstance(text, str)
    shown = [
        str(a)
        for a, kind in zip(args, kinds, strict=True)
        if type(a) is int
        and (
            (kind in (Arg.PORT, Arg.PID) and 1 <= a <= (65_535 if kind is Arg.PORT else PID_MAX))
            or (kind is Arg.ERRNO and a in errno.errorcode)
            or (kind is Arg.STATUS and 100 <= a <= 599)
        )
    ]
    shown += [a for a in args if a == "127.0.0.1"]  # DTMF has no dot: never a caller's
    for value in shown:
        text = text.replace(value, "", 1)
    assert not has_digit(text)
