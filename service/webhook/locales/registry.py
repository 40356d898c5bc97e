"""The locales this service speaks: one catalog module each, listed here."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from service.webhook.locales import en_us, ja_jp
from service.webhook.locales.catalog import Catalog

# Every catalog must have every key of this one, with the same fields.
REFERENCE: Final = "en-US"

CATALOGS: Final[Mapping[str, Catalog]] = MappingProxyType(
    {catalog.tag: catalog for catalog in (en_us.CATALOG, ja_jp.CATALOG)}
)
