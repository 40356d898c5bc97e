"""The locale of one call: the caller's menu choice, else the called number's, else LOCALE.

Built once from the settings when the webhook starts (:meth:`Localization.from_settings`),
which is where every locale setting is checked: a missing catalog key, an unknown locale or
a voice of another language stops the start with one line naming the setting.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

from service.errors import ConfigError
from service.money import parse_balance
from service.settings import Settings
from service.webhook.locales.catalog import Catalog, check_complete
from service.webhook.locales.registry import CATALOGS, REFERENCE
from service.webhook.locales.voices import check_catalog_voices, check_voice

# The action URL's parameter that carries a menu choice (signed with the rest of the URL).
LANG_PARAM = "lang"
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")


@dataclass(frozen=True)
class Locale:
    """A catalog with the voice that reads it and the currency it names."""

    catalog: Catalog
    voice: str
    currency: str
    chosen: bool = False  # by the caller, in the menu: carried in the next action URLs

    @property
    def tag(self) -> str:
        return self.catalog.tag

    @property
    def say(self) -> dict[str, str]:
        """The attributes of every ``<Say>`` in this locale."""
        return {"language": self.catalog.tag, "voice": self.voice}

    @property
    def query(self) -> dict[str, str]:
        """What the next action URL must carry to stay in this locale."""
        return {LANG_PARAM: self.tag} if self.chosen else {}

    def text(self, key: str, **fields: str) -> str:
        return self.catalog.text(key, **fields)

    def amount(self, balance: str) -> str:
        """A balance as this locale says it in BALANCE_CURRENCY. A stored balance that is
        not an amount of that currency (enrolled before the setting) is read as stored."""
        try:
            amount = parse_balance(balance, self.currency)
        except ValueError:
            return self.text("amount", amount=balance)
        key = f"amount.{self.currency}" if self.currency else "amount"
        if amount.whole and f"{key}.whole" in self.catalog.messages:
            key += ".whole"
        return self.text(key, **amount.fields)


@dataclass(frozen=True)
class Localization:
    default: Locale
    by_number: Mapping[str, Locale]
    menu: tuple[Locale, ...]  # key 1 chooses menu[0]

    @classmethod
    def from_settings(
        cls, settings: Settings, catalogs: Mapping[str, Catalog] = CATALOGS
    ) -> Localization:
        check_complete(catalogs, REFERENCE)
        check_catalog_voices(catalogs)
        voices = dict(settings.locale_voices)
        for tag in voices:
            _catalog("LOCALE_VOICES", tag, catalogs)
        built: dict[str, Locale] = {}

        def locale(setting: str, tag: str) -> Locale:
            if tag not in built:
                catalog = _catalog(setting, tag, catalogs)
                voice = check_voice(
                    "LOCALE_VOICES", catalog, voices.get(tag, catalog.default_voice), catalogs
                )
                built[tag] = Locale(catalog, voice, settings.balance_currency)
            return built[tag]

        default = locale("LOCALE", settings.locale)
        by_number = {}
        for number, tag in settings.locale_by_number:
            if not _E164.fullmatch(number):
                raise ConfigError("LOCALE_BY_NUMBER: expected +E.164 numbers (+81312345678=ja-JP)")
            by_number[number] = locale("LOCALE_BY_NUMBER", tag)
        if len(settings.language_menu) == 1:
            raise ConfigError("LANGUAGE_MENU: list at least two locales, or none")
        if len(settings.language_menu) > 9:
            raise ConfigError("LANGUAGE_MENU: at most 9 locales, one keypad digit each")
        menu = tuple(
            replace(locale("LANGUAGE_MENU", tag), chosen=True) for tag in settings.language_menu
        )
        return cls(default, MappingProxyType(by_number), menu)

    def for_call(self, to: str | None, lang: str | None) -> Locale:
        """``lang``: the action URL's choice, honoured only for a locale of the menu."""
        for offered in self.menu:
            if offered.tag == lang:
                return offered
        return self.by_number.get(to or "", self.default)

    def menu_choice(self, digits: str | None) -> Locale | None:
        """The locale of the key pressed in the menu, or None (no key, another key)."""
        if digits and len(digits) == 1 and digits.isascii() and digits.isdigit():
            index = int(digits) - 1
            if 0 <= index < len(self.menu):
                return self.menu[index]
        return None


def _catalog(setting: str, tag: str, catalogs: Mapping[str, Catalog]) -> Catalog:
    try:
        return catalogs[tag]
    except KeyError:
        raise ConfigError(
            f"{setting}: {tag!r} is not a locale this service speaks ({', '.join(catalogs)})"
        ) from None
