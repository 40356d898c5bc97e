"""Choosing a locale per call, the voices, the spoken balance, and the start-up refusals."""

from __future__ import annotations

import pytest

from service.errors import ConfigError
from service.settings import Settings
from service.webhook.locales.choice import Localization


def localization(**env: str) -> Localization:
    return Localization.from_settings(Settings.from_environ(env))


def test_the_default_is_en_us_in_polly_joanna() -> None:
    default = localization().default
    assert default.say == {"language": "en-US", "voice": "Polly.Joanna"}
    assert default.query == {}
    assert localization().menu == ()


def test_the_called_number_chooses_and_other_numbers_hear_locale() -> None:
    locales = localization(LOCALE_BY_NUMBER="+81312345678=ja-JP, +15005550001=en-US")
    assert locales.for_call("+81312345678", None).say == {
        "language": "ja-JP",
        "voice": "Polly.Mizuki",
    }
    assert locales.for_call("+15005550001", None).tag == "en-US"
    assert locales.for_call("+447700900123", None).tag == "en-US"
    assert localization(LOCALE="ja-JP").for_call("+15005550001", None).tag == "ja-JP"


def test_a_voice_is_configurable_per_locale() -> None:
    locales = localization(LOCALE="ja-JP", LOCALE_VOICES="ja-JP=Google.ja-JP-Wavenet-B")
    assert locales.default.say == {"language": "ja-JP", "voice": "Google.ja-JP-Wavenet-B"}


@pytest.mark.parametrize(
    ("env", "line"),
    [
        ({"LOCALE": "fr-FR"}, "LOCALE: 'fr-FR' is not a locale this service speaks (en-US, ja-JP)"),
        (
            {"LOCALE_BY_NUMBER": "+81312345678=ja"},
            "LOCALE_BY_NUMBER: 'ja' is not a locale this service speaks (en-US, ja-JP)",
        ),
        (
            {"LOCALE_BY_NUMBER": "81312345678=ja-JP"},
            "LOCALE_BY_NUMBER: expected +E.164 numbers (+81312345678=ja-JP)",
        ),
        (
            {"LANGUAGE_MENU": "ja-JP,de-DE"},
            "LANGUAGE_MENU: 'de-DE' is not a locale this service speaks (en-US, ja-JP)",
        ),
        ({"LANGUAGE_MENU": "ja-JP"}, "LANGUAGE_MENU: list at least two locales, or none"),
        (
            {"LOCALE_VOICES": "ko-KR=Polly.Seoyeon"},
            "LOCALE_VOICES: 'ko-KR' is not a locale this service speaks (en-US, ja-JP)",
        ),
        (
            {"LOCALE": "ja-JP", "LOCALE_VOICES": "ja-JP=Polly.Joanna"},
            "LOCALE_VOICES: Polly.Joanna speaks en-US, not ja-JP; Twilio would fail every <Say> "
            "in that pair",
        ),
        (
            {"LOCALE_VOICES": "en-US=Google.ja-JP-Standard-B"},
            "LOCALE_VOICES: Google.ja-JP-Standard-B speaks ja-JP, not en-US; Twilio would fail "
            "every <Say> in that pair",
        ),
        (
            {"LOCALE_VOICES": "en-US=man"},
            "LOCALE_VOICES: man is not a voice this service lists for en-US (one of Polly.Joanna, "
            "Polly.Matthew, Polly.Salli, Polly.Joey, Polly.Ivy, Polly.Justin, Polly.Kendra, "
            "Polly.Kimberly, Polly.Joanna-Neural, Polly.Matthew-Neural, Google.en-US-Standard-C, "
            "Google.en-US-Standard-D, Google.en-US-Wavenet-C, Google.en-US-Wavenet-D)",
        ),
    ],
)
def test_a_bad_locale_setting_is_refused_in_one_line_naming_it(
    env: dict[str, str], line: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        localization(**env)
    assert str(refused.value) == line
    assert "\n" not in line


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("ja-JP", "LOCALE_BY_NUMBER: expected KEY=VALUE pairs, comma-separated"),
        ("+81312345678=ja-JP,+81312345678=en-US", "LOCALE_BY_NUMBER: a key is listed twice"),
    ],
)
def test_the_number_map_is_read_strictly(text: str, line: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_environ({"LOCALE_BY_NUMBER": text})
    assert str(refused.value) == line


def test_the_menu_maps_keys_in_order_and_ignores_anything_else() -> None:
    locales = localization(LANGUAGE_MENU="ja-JP,en-US")
    assert [offered.tag for offered in locales.menu] == ["ja-JP", "en-US"]
    chosen = locales.menu_choice("1")
    assert chosen is not None and chosen.tag == "ja-JP"
    assert chosen.query == {"lang": "ja-JP"}  # carried in the signed action URL
    assert [locales.menu_choice(key) for key in ("", "0", "3", "12", "*", "\u0661", None)] == [
        None
    ] * 7
    # The carried choice wins over the number; a locale outside the menu does not.
    assert locales.for_call("+15005550001", "ja-JP").tag == "ja-JP"
    assert locales.for_call("+15005550001", "xx-XX").query == {}


@pytest.mark.parametrize(
    ("currency", "balance", "en", "ja"),
    [
        ("", "12.55", "12.55", "12.55"),
        ("USD", "12.55", "$12.55", "12ドル55セント"),
        ("USD", "1234.05", "$1,234.05", "1,234ドル5セント"),
        ("USD", "7.00", "$7", "7ドル"),
        ("USD", "7", "$7", "7ドル"),
        ("JPY", "1255", "1,255 yen", "1,255円"),
        # Enrolled before BALANCE_CURRENCY said JPY: read as stored rather than not at all.
        ("JPY", "12.55", "12.55", "12.55"),
    ],
)
def test_the_balance_is_said_as_each_locale_says_it(
    currency: str, balance: str, en: str, ja: str
) -> None:
    locales = localization(BALANCE_CURRENCY=currency, LANGUAGE_MENU="en-US,ja-JP")
    assert [offered.amount(balance) for offered in locales.menu] == [en, ja]


def test_the_result_sentence_in_each_locale() -> None:
    locales = localization(BALANCE_CURRENCY="JPY", LANGUAGE_MENU="en-US,ja-JP")
    en, ja = locales.menu
    assert en.text("found", account="AC12345678", balance=en.amount("1255")) == (
        "Thank you. Your account number is AC12345678 and your balance is 1,255 yen"
    )
    assert ja.text("found", account="AC12345678", balance=ja.amount("1255")) == (
        "ありがとうございます。お客様のアカウント番号はAC12345678、残高は1,255円です。"
    )
