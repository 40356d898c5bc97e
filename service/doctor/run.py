"""The checks of ``ivr-vault doctor``, in the order a person would look: settings, Vault,
the identities and what each may do, the keys, the store, the services, the public URL,
and a reminder of what no API shows."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from service.doctor.endpoints import (
    local_url,
    pci_reminder,
    public_url_check,
    readyz_check,
    step_age_check,
)
from service.doctor.identities import (
    IDENTITIES,
    OPTIONAL_IDENTITIES,
    Source,
    environment_source,
    find_sources,
    identity_check,
    logged_in,
    missing_check,
)
from service.doctor.keys import expected_periods, key_checks
from service.doctor.report import Check, Report, report
from service.doctor.store import canary_check, cut_off_check, schema_status
from service.doctor.vault_state import vault_addresses, vault_checks
from service.errors import ConfigError, VaultError
from service.keys import lifecycle
from service.keys.lifecycle import KeyStatus
from service.settings import SERVICES, Settings
from service.vault.bootstrap import Layout
from service.vault.client import AppRoleCredentials, VaultClient


@dataclass(frozen=True)
class Options:
    """What doctor was told beyond the settings."""

    settings_error: ConfigError | None = None
    credentials: Mapping[str, Path] = field(default_factory=dict)  # --credentials ROLE=DIR
    dev_dirs: Mapping[str, Path] = field(default_factory=dict)  # make run's .dev/ROLE/
    webhook_url: str | None = None
    backend_url: str | None = None
    # Why the services to probe are unknown (a make run directory with no cluster.json):
    # then said in one row instead of probing the default ports, maybe another stack's.
    stack_unknown: str | None = None


def settings_check(settings: Settings, error: ConfigError | None) -> Check:
    fix = "correct it (docs/configuration.md lists every setting)"
    if error is not None:
        return Check.failed("settings", f"invalid: {error}", fix)
    try:
        for role in SERVICES:
            settings.check_consistent(role)
    except ConfigError as exc:
        return Check.failed("settings", f"inconsistent: {exc}", fix)
    # The setting that chose the store: STORE_URL (shown without its password) wins.
    store = (
        f"STORE_URL {settings.store_url.display}"
        if settings.store_url is not None
        else f"STORE_PATH {settings.store_path}"
    )
    return Check.passed("settings", f"valid (VAULT_ADDR {','.join(settings.vault_addr)}, {store})")


def _key_rows(keys: Mapping[str, KeyStatus] | None, settings: Settings) -> list[Check]:
    if keys is None:
        fix = "see the identity ivr-keyadmin row: reading keys needs that identity"
        return [
            Check.failed("key rotation", "not checked", fix),
            Check.failed("key retirement", "not checked", fix),
        ]
    return key_checks(keys, settings, expected_periods(Layout.load().keys))


def run_doctor(settings: Settings, options: Options) -> Report:
    checks = [settings_check(settings, options.settings_error)]
    if options.settings_error is not None:
        return report(checks)  # everything else is read from the settings
    nodes = vault_checks(settings)
    checks += nodes
    addresses = vault_addresses(settings)
    usable = [a for a, row in zip(addresses, nodes, strict=False) if row.ok]
    addr = (usable or addresses)[0]
    verify: str | bool = settings.vault_cacert or True

    def connect(creds: AppRoleCredentials) -> VaultClient:
        return VaultClient(
            addr, creds, timeout=max(settings.vault_timeout, 5.0), verify=verify, pool_size=2
        )

    sources = find_sources(options.credentials, options.dev_dirs)
    from_env = environment_source(settings, connect) if usable else None
    if from_env is not None:
        sources.setdefault(from_env.role, from_env)

    # Before anything opens the store: Store() creates the tables it finds missing.
    schema = schema_status(settings)
    ciphertext: str | None = None
    keys: dict[str, KeyStatus] | None = None
    for role in (*IDENTITIES, *OPTIONAL_IDENTITIES):
        source = sources.get(role)
        if source is None:
            if role in IDENTITIES:
                checks.append(missing_check(role))
            continue
        with logged_in(connect, source) as client:
            row, made = identity_check(client, source, settings, ciphertext)
            checks.append(row)
            ciphertext = ciphertext or made
            if role == "ivr-keyadmin" and row.ok:
                keys = _read_keys(client, settings, stored=schema.ok)
    checks += _key_rows(keys, settings)
    checks += _store_rows(settings, schema, sources.get("ivr-backend"), connect)
    # Each replica BACKEND_URL names (make run-ha, the HA compose: two), or the one asked.
    if options.stack_unknown:
        checks.append(
            Check.failed(
                "services",
                options.stack_unknown,
                "start make run here, or name the services: "
                "--webhook-url and --backend-url (or BACKEND_URL)",
            )
        )
    else:
        backend_urls = [options.backend_url] if options.backend_url else settings.backend_url
        checks += [readyz_check("backend", url) for url in backend_urls]
        webhook_url = options.webhook_url or local_url(settings.webhook_host, settings.webhook_port)
        checks.append(readyz_check("webhook", webhook_url))
        checks.append(step_age_check(webhook_url, backend_urls))
    checks.append(public_url_check(settings))
    checks.append(pci_reminder())
    return report(checks)


def _read_keys(
    client: VaultClient, settings: Settings, *, stored: bool
) -> dict[str, KeyStatus] | None:
    try:
        return lifecycle.status(client, settings, stored=stored)
    except VaultError:
        return None


def _store_rows(
    settings: Settings,
    schema: Check,
    backend: Source | None,
    connect: Callable[[AppRoleCredentials], VaultClient],
) -> list[Check]:
    name = f"store canary ({settings.lookup_key})"
    if not schema.ok:
        return [schema, Check.failed(name, "not checked", "see the store schema row")]
    if backend is None:
        return [
            schema,
            Check.failed(
                name, "not checked: needs the backend identity", "see the identity ivr-backend row"
            ),
            cut_off_check(settings),
        ]
    return [
        schema,
        canary_check(settings, lambda: connect(backend.credentials)),
        cut_off_check(settings),
    ]
