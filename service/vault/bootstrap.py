"""Bootstrap a Vault for ivr-vault, idempotently: transit mount, keys, policies, AppRoles.

One piece of code for ``make run``, docker compose's ``vault-init`` and the tests. It runs
with an administrative token (the dev root token) and hands each service only its own
AppRole credentials, written to that service's own directory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from service.errors import ConfigError, VaultNotFound
from service.vault.client import VaultClient

log = structlog.get_logger("ivr.bootstrap")

# A key that exists with these settings different from the layout is a misconfiguration
# we refuse to paper over: a derived key cannot become non-derived, an exportable key
# cannot become non-exportable.
_KEY_INVARIANTS = ("type", "derived", "exportable")


def layout_dir() -> Path:
    """Where ``vault/`` and ``policies/`` live: ``IVR_LAYOUT_DIR``, else the source tree."""
    configured = os.environ.get("IVR_LAYOUT_DIR")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Layout:
    mount: str
    keys: Mapping[str, Mapping[str, Mapping[str, Any]]]
    approle_mount: str
    roles: Mapping[str, Mapping[str, Any]]
    policies: Mapping[str, str]

    @classmethod
    def load(cls, root: Path | None = None) -> Layout:
        root = root or layout_dir()
        try:
            data = json.loads((root / "vault" / "layout.json").read_text(encoding="utf-8"))
            policies = {p.stem: p.read_text(encoding="utf-8")
                        for p in sorted((root / "policies").glob("*.hcl"))}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"IVR_LAYOUT_DIR: cannot read vault/layout.json or policies/ "
                              f"({type(exc).__name__})") from None
        return cls(data["transit_mount"], data["keys"], data["approle_mount"], data["roles"],
                   policies)


@dataclass(frozen=True)
class RoleCredentials:
    role: str
    role_id: str
    secret_id: str

    def __repr__(self) -> str:
        return f"RoleCredentials(role={self.role!r}, role_id=..., secret_id=...)"

    def write(self, directory: Path) -> None:
        """``role_id`` and ``secret_id`` files, readable by their owner only."""
        directory.mkdir(parents=True, exist_ok=True)
        for name, value in (("role_id", self.role_id), ("secret_id", self.secret_id)):
            path = directory / name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(value + "\n")
            os.chmod(path, 0o600)


def _ensure_mount(admin: VaultClient, path: str, kind: str, *, auth: bool) -> None:
    listing = admin.read("sys/auth" if auth else "sys/mounts", "list mounts")
    mounts = listing.get("data", listing)
    if f"{path}/" in mounts:
        if mounts[f"{path}/"].get("type") != kind:
            raise ConfigError(f"{path}/ is mounted with another engine than {kind}")
        return
    admin.write(f"sys/{'auth' if auth else 'mounts'}/{path}", f"enable {kind}", {"type": kind})
    log.info("mounted", path=path, engine=kind)


def _ensure_key(admin: VaultClient, mount: str, name: str, spec: Mapping[str, Any]) -> None:
    create = dict(spec["create"])
    try:
        current = admin.read(f"{mount}/keys/{name}", "read key")["data"]
    except VaultNotFound:
        admin.write(f"{mount}/keys/{name}", "create key", create)
        log.info("key created", key=name, type=create["type"])
        current = admin.read(f"{mount}/keys/{name}", "read key")["data"]
    for field in _KEY_INVARIANTS:
        if field in create and current.get(field) != create[field]:
            raise ConfigError(f"transit key {name}: existing {field} differs from the layout")
    admin.write(f"{mount}/keys/{name}/config", "configure key", dict(spec.get("config", {})))


def _ensure_role(admin: VaultClient, mount: str, name: str, spec: Mapping[str, Any]) -> None:
    payload = {"token_no_default_policy": True, "bind_secret_id": True,
               "token_type": "service", "secret_id_num_uses": 0, **spec}
    admin.write(f"auth/{mount}/role/{name}", "write approle role", payload)


def bootstrap(admin: VaultClient, layout: Layout | None = None) -> Layout:
    """Make Vault match the layout. Safe to run any number of times."""
    layout = layout or Layout.load()
    _ensure_mount(admin, layout.mount, "transit", auth=False)
    for name, spec in layout.keys.items():
        _ensure_key(admin, layout.mount, name, spec)
    for name, text in layout.policies.items():
        admin.write(f"sys/policies/acl/{name}", "write policy", {"policy": text})
    _ensure_mount(admin, layout.approle_mount, "approle", auth=True)
    for name, spec in layout.roles.items():
        _ensure_role(admin, layout.approle_mount, name, spec)
    log.info("bootstrap complete", keys=len(layout.keys), roles=len(layout.roles))
    return layout


def issue_credentials(admin: VaultClient, roles: Iterable[str], *,
                      approle_mount: str = "approle") -> dict[str, RoleCredentials]:
    """A role-id and a fresh secret-id for each named role."""
    result = {}
    for role in roles:
        role_id = admin.read(f"auth/{approle_mount}/role/{role}/role-id", "read role-id")
        secret = admin.write(f"auth/{approle_mount}/role/{role}/secret-id", "issue secret-id")
        result[role] = RoleCredentials(role, role_id["data"]["role_id"],
                                       secret["data"]["secret_id"])
    return result
