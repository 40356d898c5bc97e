"""Every catalog has every key, with the fields the sentence needs: the test that fails
until a new locale is translated (docs/locales.md)."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from service.errors import ConfigError
from service.webhook.locales.catalog import Catalog, check_complete, completeness_errors
from service.webhook.locales.registry import CATALOGS, REFERENCE
from service.webhook.locales.voices import check_catalog_voices

TUTORIAL_JA = {  # reference/000_6d8fbaa8b5ff7101.txt, 「作成する内容」, verbatim
    "ask_card": "支払いカード番号の最後の4桁を入力してください",
    "ask_pin": "お客様の4桁の暗証番号(PIN)を入力してください",
}


@pytest.mark.parametrize("tag", sorted(CATALOGS))
def test_every_catalog_has_every_key_of_the_reference(tag: str) -> None:
    assert completeness_errors(CATALOGS[REFERENCE], CATALOGS[tag]) == []
    check_complete(CATALOGS, REFERENCE)  # what the webhook runs at start-up


def test_japanese_prompts_are_the_tutorials_own_words() -> None:
    ja = CATALOGS["ja-JP"]
    assert {key: ja.messages[key] for key in TUTORIAL_JA} == TUTORIAL_JA


def test_the_identification_prompt_takes_the_digit_count() -> None:
    assert CATALOGS["en-US"].text("ask_account", digits="8") == (
        "Please enter your 8-digit account number. If you are calling from the phone "
        "registered on your account, press star."
    )
    assert CATALOGS["ja-JP"].text("ask_account", digits="10") == (
        "10桁のアカウント番号を入力してください。ご登録の電話番号からおかけの場合は、"
        "米印を押してください。"
    )


def _without(catalog: Catalog, key: str, **changed: str) -> Catalog:
    messages = {k: v for k, v in catalog.messages.items() if k != key}
    return Catalog(
        catalog.tag, catalog.name, catalog.voices, MappingProxyType({**messages, **changed})
    )


def test_a_missing_key_stops_the_start_in_one_line() -> None:
    broken = {**CATALOGS, "ja-JP": _without(CATALOGS["ja-JP"], "try_later")}
    with pytest.raises(ConfigError) as refused:
        check_complete(broken, REFERENCE)
    assert str(refused.value) == "message catalog ja-JP: missing try_later"


def test_a_translation_that_drops_a_field_is_refused() -> None:
    ja = _without(CATALOGS["ja-JP"], "found", found="ありがとうございます。残高は{balance}です。")
    assert completeness_errors(CATALOGS[REFERENCE], ja) == [
        "ja-JP: found must take the fields {account}, {balance}"
    ]


def test_an_amount_sentence_may_use_any_of_the_amount_fields_only() -> None:
    ok = _without(CATALOGS["ja-JP"], "amount.JPY", **{"amount.JPY": "{major}円"})
    assert completeness_errors(CATALOGS[REFERENCE], ok) == []
    bad = _without(CATALOGS["ja-JP"], "amount.JPY", **{"amount.JPY": "{yen}円"})
    assert completeness_errors(CATALOGS[REFERENCE], bad) == [
        "ja-JP: amount.JPY must take some of the fields {amount}, {major}, {minor}"
    ]


def test_an_extra_key_and_several_errors_are_counted() -> None:
    ja = _without(CATALOGS["ja-JP"], "retry", goodbye="失礼いたします。")
    with pytest.raises(ConfigError) as refused:
        check_complete({**CATALOGS, "ja-JP": ja}, REFERENCE)
    assert str(refused.value) == "message catalog ja-JP: missing retry (and 1 more)"


def test_a_catalog_lists_only_its_own_languages_voices() -> None:
    check_catalog_voices(CATALOGS)
    ja = CATALOGS["ja-JP"]
    google = Catalog(ja.tag, ja.name, (*ja.voices, "Google.en-US-Standard-C"), ja.messages)
    with pytest.raises(ConfigError) as refused:
        check_catalog_voices({"ja-JP": google})
    assert str(refused.value) == (
        "message catalog ja-JP: Google.en-US-Standard-C speaks en-US, not ja-JP"
    )
    polly = Catalog(ja.tag, ja.name, (*ja.voices, "Polly.Joanna"), ja.messages)
    with pytest.raises(ConfigError) as refused:
        check_catalog_voices({**CATALOGS, "ja-JP": polly})
    assert str(refused.value) == "message catalog ja-JP: Polly.Joanna is listed by en-US too"
