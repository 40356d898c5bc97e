"""Which language a Twilio ``<Say>`` voice speaks. A voice whose language differs from the
``<Say>``'s ``language`` makes Twilio fail the verb (Twilio's docs): such a pair is refused at
start-up, never discovered by a caller."""

from __future__ import annotations

import re
from collections.abc import Mapping

from service.errors import ConfigError
from service.webhook.locales.catalog import Catalog

# Google's voice names carry their language: Google.ja-JP-Standard-B.
_GOOGLE = re.compile(r"Google\.([a-z]{2,3}-[A-Z]{2})-[A-Za-z0-9]+-[A-Z]")


def voice_language(voice: str, catalogs: Mapping[str, Catalog]) -> str | None:
    """The language of a voice some catalog lists, or that a Google name spells; None
    for a voice this service does not know."""
    for catalog in catalogs.values():
        if voice in catalog.voices:
            return catalog.tag
    match = _GOOGLE.fullmatch(voice)
    return match[1] if match else None


def check_voice(setting: str, catalog: Catalog, voice: str, catalogs: Mapping[str, Catalog]) -> str:
    """``voice`` if ``catalog`` lists it; else a one-line :class:`ConfigError` naming
    ``setting``: another language's voice, or one not documented for this language."""
    if voice in catalog.voices:
        return voice
    spoken = voice_language(voice, catalogs)
    if spoken is not None and spoken != catalog.tag:
        raise ConfigError(
            f"{setting}: {voice} speaks {spoken}, not {catalog.tag}; Twilio "
            "would fail every <Say> in that pair"
        )
    raise ConfigError(
        f"{setting}: {voice} is not a voice this service lists for "
        f"{catalog.tag} (one of {', '.join(catalog.voices)})"
    )


def check_catalog_voices(catalogs: Mapping[str, Catalog]) -> None:
    """A catalog lists only voices of its own language, as far as a name tells (Google's
    do) and no voice twice across catalogs."""
    seen: dict[str, str] = {}
    for catalog in catalogs.values():
        for voice in catalog.voices:
            match = _GOOGLE.fullmatch(voice)
            if match and match[1] != catalog.tag:
                raise ConfigError(
                    f"message catalog {catalog.tag}: {voice} speaks {match[1]}, not {catalog.tag}"
                )
            if voice in seen:
                raise ConfigError(
                    f"message catalog {catalog.tag}: {voice} is listed by {seen[voice]} too"
                )
            seen[voice] = catalog.tag
