"""Bootstrap a Vault for ivr-vault, idempotently: transit mount, keys, policies, AppRoles.

One piece of code for ``make run``, docker compose's ``vault-init`` and the tests. It runs
with an administrative token (the dev root token; in production a root token that is
revoked right after) and hands each service only its own AppRole credentials, written to
that service's own directory. Issuing a secret-id destroys the role's other secret-ids: a
credential that was replaced cannot be used by whoever kept a copy.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from service.errors import ConfigError, VaultNotFound, VaultRequestError
from service.files import private_dir, write_private
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
    def load(
        cls,
        root: Path | None = None,
        *,
        profile: str | None = None,
        bound_cidrs: Sequence[str] = (),
    ) -> Layout:
        """The layout; with ``profile``, its role settings over the defaults, and its
        ``bound_cidr_roles`` bound to ``bound_cidrs`` (token and secret-id use)."""
        root = root or layout_dir()
        try:
            data = json.loads((root / "vault" / "layout.json").read_text(encoding="utf-8"))
            policies = {
                p.stem: p.read_text(encoding="utf-8")
                for p in sorted((root / "policies").glob("*.hcl"))
            }
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"IVR_LAYOUT_DIR: cannot read vault/layout.json or policies/ ({type(exc).__name__})"
            ) from None
        layout = cls(
            data["transit_mount"], data["keys"], data["approle_mount"], data["roles"], policies
        )
        if profile is None:
            if bound_cidrs:
                raise ConfigError("--bound-cidrs: needs a --profile that names the roles")
            return layout
        if profile not in data.get("profiles", {}):
            raise ConfigError(f"--profile: no profile {profile!r} in vault/layout.json")
        chosen = data["profiles"][profile]
        roles = {
            name: {**spec, **chosen.get("roles", {}).get(name, {})}
            for name, spec in layout.roles.items()
        }
        if bound_cidrs:
            for name in chosen.get("bound_cidr_roles", []):
                roles[name] = {
                    **roles[name],
                    "token_bound_cidrs": list(bound_cidrs),
                    "secret_id_bound_cidrs": list(bound_cidrs),
                }
        return replace(layout, roles=roles)


@dataclass(frozen=True)
class RoleCredentials:
    role: str
    role_id: str
    secret_id: str

    def __repr__(self) -> str:
        return f"RoleCredentials(role={self.role!r}, role_id=..., secret_id=...)"

    def write(self, directory: Path) -> None:
        """``role_id`` and ``secret_id`` files, readable by their owner only."""
        private_dir(directory)
        for name, value in (("role_id", self.role_id), ("secret_id", self.secret_id)):
            write_private(directory / name, value + "\n")


def ensure_mount(admin: VaultClient, path: str, kind: str, *, auth: bool) -> None:
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
    payload = {
        "token_no_default_policy": True,
        "bind_secret_id": True,
        "token_type": "service",
        "secret_id_num_uses": 0,
        **spec,
    }
    admin.write(f"auth/{mount}/role/{name}", "write approle role", payload)


def bootstrap(admin: VaultClient, layout: Layout | None = None) -> Layout:
    """Make Vault match the layout. Safe to run any number of times."""
    layout = layout or Layout.load()
    ensure_mount(admin, layout.mount, "transit", auth=False)
    for name, spec in layout.keys.items():
        _ensure_key(admin, layout.mount, name, spec)
    for name, text in layout.policies.items():
        admin.write(f"sys/policies/acl/{name}", "write policy", {"policy": text})
    ensure_mount(admin, layout.approle_mount, "approle", auth=True)
    for name, spec in layout.roles.items():
        _ensure_role(admin, layout.approle_mount, name, spec)
    log.info("bootstrap complete", keys=len(layout.keys), roles=len(layout.roles))
    return layout


def issue_credentials(
    admin: VaultClient, roles: Iterable[str], *, approle_mount: str = "approle"
) -> dict[str, RoleCredentials]:
    """A role-id and a fresh secret-id for each named role; every other secret-id of the
    role is destroyed (by accessor: the secret-ids themselves are never listed)."""
    result = {}
    for role in roles:
        base = f"auth/{approle_mount}/role/{role}"
        role_id = admin.read(f"{base}/role-id", "read role-id")["data"]["role_id"]
        secret = admin.write(f"{base}/secret-id", "issue secret-id")["data"]
        destroyed = 0
        for accessor in _secret_id_accessors(admin, base):
            if accessor != secret["secret_id_accessor"]:
                admin.write(
                    f"{base}/secret-id-accessor/destroy",
                    "destroy secret-id",
                    {"secret_id_accessor": accessor},
                )
                destroyed += 1
        log.info("secret-id issued", role=role, destroyed=destroyed)
        result[role] = RoleCredentials(role, role_id, secret["secret_id"])
    return result


def _secret_id_accessors(admin: VaultClient, base: str) -> list[str]:
    try:
        listing = admin.request("LIST", f"{base}/secret-id", "list secret-id accessors")
    except VaultNotFound:  # none issued yet
        return []
    return list(listing.get("data", {}).get("keys", []))


def current_credentials(
    admin: VaultClient, role: str, directory: Path, *, approle_mount: str = "approle"
) -> RoleCredentials | None:
    """The credentials already in ``directory``, if Vault still accepts them and their
    secret-id has more than a third of its life left; else None (issue new ones).
    Re-running the init step must not replace a secret-id that running services still
    use: destroying it would lock them out at their next login."""
    try:
        role_id = (directory / "role_id").read_text(encoding="utf-8").strip()
        secret_id = (directory / "secret_id").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    base = f"auth/{approle_mount}/role/{role}"
    if not role_id or role_id != admin.read(f"{base}/role-id", "read role-id")["data"]["role_id"]:
        return None
    try:
        found = admin.write(
            f"{base}/secret-id/lookup", "look up secret-id", {"secret_id": secret_id}
        ).get("data")
    except (VaultNotFound, VaultRequestError):
        return None
    if not found:
        return None
    ttl = float(found.get("secret_id_ttl") or 0)
    if ttl:
        left = vault_timestamp(found["expiration_time"]) - time.time()
        if left < ttl / 3:
            return None
    return RoleCredentials(role, role_id, secret_id)


def vault_timestamp(rfc3339: str) -> float:
    """Vault's timestamps carry nanoseconds and a zone; Python parses microseconds."""
    head, _, rest = rfc3339.partition(".")
    zone = rest.lstrip("0123456789") if rest else rfc3339[19:]
    return datetime.fromisoformat(head[:19] + (zone.replace("Z", "+00:00") or "+00:00")).timestamp()


def revoke_token(admin: VaultClient) -> None:
    """Revoke the administrative token bootstrap ran with (production: the root token,
    which ``bao operator generate-root`` can make again from the unseal shares)."""
    admin.write("auth/token/revoke-self", "revoke token")
    log.info("bootstrap token revoked")
