"""Key lifecycle as the operator sees it: who the operator is, what each key looks like, and
which versions may be retired.

Operator commands run as the key-admin identity (policies/ivr-keyadmin.hcl): rotate,
configure, rewrap and read key metadata, never decrypt or export. Nothing here ever handles
a plaintext.
"""

from __future__ import annotations

import time
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from service.errors import (
    BadInput,
    ConfigError,
    RetireRefused,
    VaultNotFound,
    VaultPermissionDenied,
)
from service.settings import Settings
from service.store.accounts import Store
from service.store.sealed import SealedStore
from service.vault.client import VaultClient, choose_credentials

LEGACY_KEY = "ivr-legacy"


def operator_vault(settings: Settings) -> VaultClient:
    """The key-admin identity: VAULT_ROLE_ID/VAULT_SECRET_ID (or ``*_FILE``), else
    VAULT_TOKEN. In a ``make run`` directory with no VAULT_ADDR, the command line has put
    ``.dev/ivr-keyadmin``'s credentials there (service/cli/devenv.py)."""
    creds = choose_credentials(settings)
    if creds is None:
        raise ConfigError(
            "VAULT_ROLE_ID/VAULT_SECRET_ID: not set (nor *_FILE, nor "
            "VAULT_TOKEN): no key-admin identity (in a make run directory, "
            "leave VAULT_ADDR unset to use .dev/ivr-keyadmin/)"
        )
    return VaultClient.from_settings(
        settings, credentials=creds, pool_size=2, timeout=max(settings.vault_timeout, 10)
    )


# The Vault policies that make a token an operator's (a service's identity is not one).
OPERATOR_POLICIES = frozenset({"ivr-keyadmin", "root"})


def operator_identity(vault: VaultClient) -> str:
    """Who is acting, as Vault knows the token: its display name (``approle``,
    ``userpass-alice``, ``root``) and, for an AppRole, the role. Refuses a token without an
    operator policy, so that a service's credentials cannot stand in for an operator."""
    data = vault.read("auth/token/lookup-self", "token lookup").get("data") or {}
    if not OPERATOR_POLICIES & set(data.get("policies") or ()):
        raise VaultPermissionDenied(
            "token lookup: not an operator identity (needs the ivr-keyadmin policy)"
        )
    name = str(data.get("display_name") or "unknown")
    role = (data.get("meta") or {}).get("role_name")
    return f"{name}/{role}" if role else name


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _created(value: Any) -> float:
    """Version creation time: an int of seconds for symmetric/HMAC keys; an RFC 3339 string
    inside a dict for asymmetric ones."""
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, dict) and isinstance(value.get("creation_time"), str):
        text = value["creation_time"]
        return datetime.fromisoformat(text[:26].rstrip("Z") + "+00:00").timestamp()
    raise ValueError("unknown key version format")


@dataclass(frozen=True)
class KeyStatus:
    name: str
    latest_version: int
    min_decryption_version: int
    min_encryption_version: int
    auto_rotate_period: int  # seconds, 0 = off
    # version -> unix time; None where Vault does not say (OpenBao omits ``keys`` for HMAC
    # keys)
    created: dict[int, float | None]
    stored_records: dict[int, int] = field(default_factory=dict)

    @classmethod
    def from_vault(cls, name: str, data: dict[str, Any], stored: dict[int, int]) -> KeyStatus:
        latest = int(data["latest_version"])
        known = {int(v): _created(t) for v, t in (data.get("keys") or {}).items()}
        created = {v: known.get(v) for v in range(1, latest + 1)}
        return cls(
            name,
            latest,
            int(data["min_decryption_version"]),
            int(data.get("min_encryption_version") or 0),
            int(data.get("auto_rotate_period") or 0),
            created,
            stored,
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "latest_version": self.latest_version,
            "min_decryption_version": self.min_decryption_version,
            "min_encryption_version": self.min_encryption_version,
            "auto_rotate_period": self.auto_rotate_period,
            "versions": {
                str(v): {
                    "created": None if t is None else iso(t),
                    "retired": v < self.min_decryption_version,
                }
                for v, t in sorted(self.created.items())
            },
            "stored_records": {str(v): n for v, n in sorted(self.stored_records.items())},
        }


def transit_keys(vault: VaultClient, settings: Settings) -> list[str]:
    """The names of the Transit keys (a LIST the key-admin may make). Vault answers 403,
    not 404, for a key outside the policy, so "no such key" is decided from this list."""
    try:
        answer = vault.request("LIST", f"{settings.transit_mount}/keys", "list keys")
    except VaultNotFound:  # Vault's answer to a LIST with nothing in it
        return []
    return sorted(str(name) for name in answer.get("data", {}).get("keys", []))


def require_key(vault: VaultClient, settings: Settings, name: str) -> None:
    """Raise :class:`BadInput` naming the keys there are when ``name`` is not one."""
    names = transit_keys(vault, settings)
    if name not in names:
        raise BadInput(
            f"--key {name}: no such Transit key (keys under "
            f"{settings.transit_mount}/: {', '.join(names) or 'none'})"
        )


def is_hmac_key(settings: Settings, name: str) -> bool:
    """The key that makes HMAC verifiers (``ivr-lookup``): it encrypts nothing, so it has
    no ciphertexts to rewrap; its verifiers move to the latest version at each account's
    next successful lookup."""
    return name == settings.lookup_key


def read_key(vault: VaultClient, settings: Settings, name: str) -> dict[str, Any]:
    data: dict[str, Any] = vault.read(f"{settings.transit_mount}/keys/{name}", "read key")["data"]
    return data


def _store_exists(settings: Settings) -> bool:
    """A missing SQLite file holds nothing (and is not created just to be counted); a
    PostgreSQL store is always there to ask."""
    store = settings.store
    return store.engine == "postgresql" or Path(store.path).exists()


def stored_counts(settings: Settings, name: str) -> dict[int, int]:
    """How many stored records use each version of ``name``: account verifiers for the
    lookup key, sealed records for any other key."""
    if not _store_exists(settings):
        return {}
    if name == settings.lookup_key:
        with closing(Store(settings.store)) as accounts:
            return accounts.version_counts()
    with closing(SealedStore(settings.store)) as sealed:
        return sealed.version_counts(name)


def key_names(settings: Settings) -> list[str]:
    names = [settings.dtmf_key, settings.lookup_key, LEGACY_KEY]
    if _store_exists(settings):
        with closing(SealedStore(settings.store)) as sealed:
            names += sealed.key_names()
    return list(dict.fromkeys(names))


def status(vault: VaultClient, settings: Settings, *, stored: bool = True) -> dict[str, KeyStatus]:
    """Every key the service uses; optional ones (the legacy key) only when they exist.
    ``stored=False``: Vault's view only, the store not opened (``ivr-vault doctor``, when
    opening it would create the tables it found missing)."""
    result = {}
    for name in key_names(settings) if stored else [settings.dtmf_key, settings.lookup_key]:
        try:
            data = read_key(vault, settings, name)
        except VaultNotFound:
            if name in (settings.dtmf_key, settings.lookup_key):
                raise
            continue
        counts = stored_counts(settings, name) if stored else {}
        result[name] = KeyStatus.from_vault(name, data, counts)
    return result


def rotate(vault: VaultClient, settings: Settings, name: str) -> int:
    """Rotate ``name``; the new latest version. Encryption moves to it at once; older
    versions keep decrypting until retired, so no call in flight notices."""
    vault.write(f"{settings.transit_mount}/keys/{name}/rotate", "rotate key")
    return int(read_key(vault, settings, name)["latest_version"])


def retirable_floor(key: KeyStatus, older_than: float, now: float) -> int:
    """The highest ``min_decryption_version`` allowed: version v may go once v+1 has
    existed for ``older_than``, because from then on nothing new was encrypted with v
    and every call that could hold a v ciphertext has ended. Never past the latest.

    A version without a creation time (an HMAC key's) passes the age test: no call
    carries an HMAC, so only the stored-data check can hold it back."""
    floor = key.min_decryption_version
    while floor < key.latest_version:
        created = key.created.get(floor + 1)
        # Vault's creation times have whole-second resolution: round up, never retire early.
        if created is not None and created + 1 > now - older_than:
            break
        floor += 1
    return floor


@dataclass(frozen=True)
class RetirePlan:
    key: str
    current: int
    target: int

    @property
    def changes(self) -> bool:
        return self.target > self.current


def check_window(older_than: float, call_max_age: float) -> None:
    if older_than < call_max_age:
        raise RetireRefused(
            f"--older-than {older_than:g}s is shorter than CALL_MAX_AGE ({call_max_age:g}s): "
            "a call in progress could still hold a ciphertext of that version"
        )


def plan_retirement(
    key: KeyStatus,
    older_than: float,
    call_max_age: float,
    *,
    verifiers: bool = False,
    now: float | None = None,
) -> RetirePlan:
    """``verifiers``: the key makes HMAC verifiers, which cannot be rewrapped."""
    check_window(older_than, call_max_age)
    target = retirable_floor(key, older_than, time.time() if now is None else now)
    in_use = {v: n for v, n in key.stored_records.items() if v < target and n}
    if in_use:
        versions = ", ".join(f"v{v} ({n} records)" for v, n in sorted(in_use.items()))
        remedy = (
            "verifiers move to the latest version at each account's next successful lookup"
            if verifiers
            else "run `ivr-vault keys rewrap` first"
        )
        raise RetireRefused(
            f"{key.name}: not retiring, stored data still uses {versions}; {remedy}"
        )
    return RetirePlan(key.name, key.min_decryption_version, target)


def apply_retirement(vault: VaultClient, settings: Settings, plan: RetirePlan) -> None:
    vault.write(
        f"{settings.transit_mount}/keys/{plan.key}/config",
        "configure key",
        {"min_decryption_version": plan.target},
    )
