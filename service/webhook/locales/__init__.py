"""What the caller hears, per locale: message catalogs, voices, spoken amounts, and the
choice of a locale for each call (docs/locales.md says how to add one).

Pure: no I/O, nothing read from the environment. The webhook builds one
:class:`~service.webhook.locales.choice.Localization` from its settings at start-up, and that
is where an incomplete catalog, an unknown locale or a voice of another language is refused.
"""
