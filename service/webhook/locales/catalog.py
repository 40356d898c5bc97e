"""A message catalog: one locale's sentences, keyed, with ``{named}`` fields.

Chosen format: a Python mapping per locale, one module each (``en_us.py``, ``ja_jp.py``).
gettext would need compiled ``.mo`` files and a build step for a dozen sentences, and keys
that are the English text itself, which would change every key when en-US is reworded;
TOML would be a second syntax to load and validate for data that mypy, ruff and the
completeness check already see as Python. A mapping is imported, type-checked and
compared key by key at start-up.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass

from service.errors import ConfigError

# The sentences that say a balance (``amount``, ``amount.USD``, ``amount.USD.whole`` when
# there are no cents): each locale writes its amounts with the fields it needs (12ドル55セント
# needs major and minor, $12.55 only the amount), so these are checked against this set
# rather than against the reference's fields.
AMOUNT_KEY = "amount"
AMOUNT_FIELDS = frozenset({"amount", "major", "minor"})


@dataclass(frozen=True)
class Catalog:
    """One locale. ``voices``: the Twilio ``<Say>`` voices documented for this language
    (Amazon Polly or Google, each supporting SSML ``<say-as>``), the first the default."""

    tag: str  # a BCP 47 tag as Twilio's ``language`` attribute spells it: ``ja-JP``
    name: str  # the language's own name, for documentation
    voices: tuple[str, ...]
    messages: Mapping[str, str]

    @property
    def default_voice(self) -> str:
        return self.voices[0]

    def text(self, key: str, **fields: str) -> str:
        return self.messages[key].format(**fields)


def fields_of(template: str) -> frozenset[str]:
    """The ``{names}`` a sentence takes."""
    return frozenset(name for _, name, _, _ in string.Formatter().parse(template) if name)


def _braced(fields: frozenset[str]) -> str:
    return ", ".join(sorted(f"{{{field}}}" for field in fields))


def completeness_errors(reference: Catalog, other: Catalog) -> list[str]:
    """What ``other`` lacks against ``reference``: a missing key, an extra key, or a
    sentence that takes other fields than the reference's (a translation that dropped the
    account would never name it). Empty when complete."""
    errors = [
        f"{other.tag}: missing {key}" for key in reference.messages if key not in other.messages
    ]
    errors += [
        f"{other.tag}: {key} is not a key of {reference.tag}"
        for key in other.messages
        if key not in reference.messages
    ]
    for key, template in reference.messages.items():
        if key not in other.messages:
            continue
        fields = fields_of(other.messages[key])
        if key.startswith(AMOUNT_KEY):
            if not fields or not fields <= AMOUNT_FIELDS:
                errors.append(
                    f"{other.tag}: {key} must take some of the fields {_braced(AMOUNT_FIELDS)}"
                )
        elif fields != fields_of(template):
            errors.append(
                f"{other.tag}: {key} must take the fields {_braced(fields_of(template)) or 'none'}"
            )
    if not other.voices:
        errors.append(f"{other.tag}: no voice listed")
    return errors


def check_complete(catalogs: Mapping[str, Catalog], reference: str) -> None:
    """Refuse start-up, in one line, unless every catalog has every key of ``reference``
    with the same fields."""
    base = catalogs[reference]
    errors = [
        error for catalog in catalogs.values() for error in completeness_errors(base, catalog)
    ]
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(f"message catalog {errors[0]}{more}")
