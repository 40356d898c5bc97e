"""The shared shapes (service/formats.py) and the batch-result parser
(service/vault/batch.py): pure functions, no Vault."""

from __future__ import annotations

import re

import pytest

from service.backend.schema import OPENAPI
from service.errors import VaultRequestError
from service.formats import (
    ANONYMOUS_CALLER,
    CALL_SID,
    CIPHERTEXT_PATTERN,
    MAX_CALLER_ID,
    caller_bucket,
    ciphertext_version,
    is_digits,
    transit_version,
)
from service.logs.scrubbing import ALLOWED_FIELDS, ciphertext_fields
from service.vault.batch import batch_results


def test_call_sid() -> None:
    sid = "CA" + "0123456789abcdef" * 2
    assert CALL_SID.fullmatch(sid)
    for bad in ("", sid.upper(), sid + "\n", sid[:-1], "CA" + "g" * 32, "PN" + sid[2:]):
        assert not CALL_SID.fullmatch(bad), bad
    assert ALLOWED_FIELDS["call_sid"](sid) and not ALLOWED_FIELDS["call_sid"](sid + "0")


def test_ciphertext_version_is_strict() -> None:
    assert ciphertext_version("vault:v7:QUJD") == 7
    assert ciphertext_version("vault:v123456789:QUJD==") == 123456789
    for bad in (
        "",
        "vault:v0:QUJD",
        "vault:v1:",
        "vault:v1:QU JD",
        "vault:v1:QUJD\n",
        "VAULT:v1:QUJD",
        "vault:v1:QUJD?x",
        "vault:v1234567890:QUJD",
        "vault:v01:QUJD",
    ):
        assert ciphertext_version(bad) is None, bad


def test_transit_version_reads_only_the_prefix() -> None:
    assert transit_version("vault:v3:") == 3
    assert transit_version("vault:v12:not base64 at all") == 12
    for bad in ("", "vault", "vault:vX:abc", "1234", "vault:1", " vault:v1:QUJD"):
        assert transit_version(bad) is None, bad


def test_the_backend_schema_publishes_the_same_shapes() -> None:
    properties = OPENAPI["components"]["schemas"]["LookupRequest"]["properties"]
    assert properties["card_last4"]["pattern"] == properties["pin"]["pattern"] == CIPHERTEXT_PATTERN
    assert properties["call_sid"]["pattern"] == CALL_SID.pattern
    assert re.fullmatch(CIPHERTEXT_PATTERN, "vault:v2:QUJD")


def test_ciphertext_fields_keep_the_scrubbers_version_bound() -> None:
    assert ciphertext_fields("vault:v999:QUJD")["key_version"] == 999
    # A four-digit "version" is shaped like a PIN: the scrubber would redact it, so it is
    # not offered at all.
    assert "key_version" not in ciphertext_fields("vault:v1234:QUJD")


@pytest.mark.parametrize(
    ("entry", "ok"),
    [
        ("1234", True),
        ("0000", True),
        ("123", False),
        ("12345", False),
        ("12a4", False),
        ("١٢٣٤", False),
        ("①②③④", False),
        ("12 4", False),
        ("", False),
    ],
)
def test_four_ascii_digits(entry: str, ok: bool) -> None:
    assert is_digits(entry, 4) is ok


def test_batch_results_from_an_answer_and_from_a_400() -> None:
    items = [{"ciphertext": "vault:v1:QUJD"}, {"error": "refused"}]
    assert batch_results({"data": {"batch_results": items}}, 2, "transit x") == items
    refused = VaultRequestError("x", response_json={"data": {"batch_results": items}})
    assert batch_results(refused, 2, "transit x") == items


def test_a_400_without_item_results_is_raised_again() -> None:
    refused = VaultRequestError(
        "transit x: Vault refused the request", response_json={"errors": ["bad"]}
    )
    with pytest.raises(VaultRequestError) as caught:
        batch_results(refused, 1, "transit x")
    assert caught.value is refused
    with pytest.raises(VaultRequestError):
        batch_results(VaultRequestError("no body"), 1, "transit x")


@pytest.mark.parametrize(
    "body",
    [{}, {"data": None}, {"data": {"batch_results": "x"}}, {"data": {"batch_results": [{}]}}],
)
def test_results_of_the_wrong_shape_are_an_error(body: dict[str, object]) -> None:
    with pytest.raises(VaultRequestError, match=r"^transit x: unexpected batch result shape$"):
        batch_results(body, 2, "transit x")


# -- the caller's number --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "bucket"),
    [
        ("+15005550006", "+15005550006"),
        (" +442071838750 ", "+442071838750"),
        ("+123456789012345", "+123456789012345"),  # 15 digits: the most E.164 allows
        ("client:alice", "client:alice"),
        ("Client:Alice_01", "client:Alice_01"),
        ("sip:alice@example.com", "sip:alice@example.com"),
        ("SIP:bob@10.0.0.1:5060;transport=tls", "sip:bob@10.0.0.1:5060;transport=tls"),
    ],
)
def test_a_caller_id_is_its_own_bucket(given: str, bucket: str) -> None:
    assert caller_bucket(given) == bucket
    assert caller_bucket(bucket) == bucket  # idempotent: the backend applies it again


@pytest.mark.parametrize(
    "withheld",
    [
        "",
        "  ",
        "anonymous",
        "Anonymous",
        "RESTRICTED",
        "unknown",
        "Private",
        "unavailable",
        "blocked",
        "+266696687",
        "+86282452253",
        "+7378742833",
        "+2562533",
    ],
)
def test_withheld_numbers_share_one_bucket(withheld: str) -> None:
    assert caller_bucket(withheld) == ANONYMOUS_CALLER


@pytest.mark.parametrize(
    "odd",
    [
        "+1234567890123456",  # 16 digits
        "+0123456",
        "+",
        "15005550006",
        "+1 500 555 0006",
        "+1500555000६",
        "tel:+15005550006",
        "client:",
        "client:al ice",
        "sip:",
        "sip:é@example.com",
        "+15005550006\n+1",
        "client:" + "a" * MAX_CALLER_ID,
        "\x00",
        "'; DROP TABLE accounts; --",
    ],
)
def test_anything_else_counts_as_withheld_never_an_error(odd: str) -> None:
    assert caller_bucket(odd) == ANONYMOUS_CALLER


def test_a_long_caller_id_is_bounded() -> None:
    longest = "sip:" + "a" * (MAX_CALLER_ID - 4)
    assert caller_bucket(longest) == longest
    assert caller_bucket(longest + "a") == ANONYMOUS_CALLER
