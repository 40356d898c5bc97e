"""Is Vault there, initialised, unsealed, and who leads? Unauthenticated: ``sys/health``
and ``sys/leader`` answer without a token, so this row needs no identity."""

from __future__ import annotations

import ssl
from typing import Any

import httpx

from service.doctor.report import Check
from service.settings import Settings

TIMEOUT_S = 5.0

# sys/health's status codes with standbyok/perfstandbyok (OpenBao, as Vault).
_HEALTH = {
    200: "active",
    429: "standby",
    472: "DR standby",
    473: "performance standby",
    501: "not initialised",
    503: "sealed",
}

UNSEAL_FIX = (
    "unseal it: `bao operator unseal` by the share holders (make run: stop and "
    "start make run; dev compose: vault-unseal does it)"
)


def vault_addresses(settings: Settings) -> list[str]:
    """Every Vault address doctor checks: each node VAULT_ADDR names."""
    return list(settings.vault_addr)


def _verify(settings: Settings) -> ssl.SSLContext | bool:
    cacert = settings.vault_cacert
    return ssl.create_default_context(cafile=cacert) if cacert else True


def _get(client: httpx.Client, url: str) -> tuple[int, dict[str, Any]]:
    response = client.get(url)
    try:
        body = response.json()
    except ValueError:
        body = {}
    return response.status_code, body if isinstance(body, dict) else {}


def node_check(client: httpx.Client, addr: str) -> Check:
    name = f"vault {addr}"
    try:
        status, health = _get(client, f"{addr}/v1/sys/health?standbyok=true&perfstandbyok=true")
    except httpx.HTTPError as exc:
        return Check.failed(
            name,
            f"unreachable ({type(exc).__name__})",
            "start Vault, or set VAULT_ADDR to where it listens",
        )
    state = _HEALTH.get(status)
    if state is None:
        return Check.failed(
            name,
            f"sys/health answered {status}, not Vault's health",
            "VAULT_ADDR must be Vault's API address (…:8200)",
        )
    version = f"version {health.get('version') or 'unknown'}"
    if state == "not initialised":
        return Check.failed(
            name,
            f"not initialised ({version})",
            "initialise it: `bao operator init` (docs/deployment.md#production)",
        )
    if state == "sealed":
        return Check.failed(name, f"sealed ({version})", UNSEAL_FIX)
    return Check.passed(name, f"initialised, unsealed, {state} ({version}); {_ha(client, addr)}")


def _ha(client: httpx.Client, addr: str) -> str:
    try:
        status, leader = _get(client, f"{addr}/v1/sys/leader")
    except httpx.HTTPError:
        return "HA state unknown"
    if status != 200:
        return f"HA state unknown (sys/leader answered {status})"
    if not leader.get("ha_enabled"):
        return "no HA (a single node)"
    if leader.get("is_self"):
        return "HA: this node leads"
    return f"HA: standby, the leader is {leader.get('leader_address') or 'unknown'}"


def vault_checks(settings: Settings) -> list[Check]:
    """One row per address; with several, one more when none of them is active."""
    addresses = vault_addresses(settings)
    with httpx.Client(timeout=TIMEOUT_S, verify=_verify(settings)) as client:
        rows = [node_check(client, addr) for addr in addresses]
    if len(rows) > 1 and not any("active" in r.detail and r.ok for r in rows):
        rows.append(
            Check.failed(
                "vault cluster",
                "no node is active",
                "see each node's row; a cluster needs an unsealed leader",
            )
        )
    return rows
