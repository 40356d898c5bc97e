"""Bootstrap's JWT side: the auth method and one role per identity, for pods that log in
with their Kubernetes service-account token (:mod:`service.vault.jwt_login`).

Each role accepts exactly one service account (``bound_subject``
``system:serviceaccount:NAMESPACE:NAME``) and one audience, and grants the same policies,
TTLs and token type as the identity's AppRole in ``vault/layout.json``: the policy matrix
is the same whichever way a service proves who it is.

How OpenBao checks the signature: the cluster's service-account signing keys as PEM
(``jwt_validation_pubkeys``; ``kubectl get --raw /openid/v1/jwks`` gives them), or the
API server's OIDC discovery URL with its CA. Idempotent, as the rest of bootstrap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from service.errors import ConfigError
from service.vault.bootstrap import Layout, ensure_mount
from service.vault.client import VaultClient

log = structlog.get_logger("ivr.bootstrap")

# What a role copies from the identity's AppRole: who it is and how long its token lives.
_COPIED = ("token_policies", "token_ttl", "token_max_ttl", "token_bound_cidrs")


@dataclass(frozen=True)
class JwtAuth:
    """What bootstrap needs to know about the cluster."""

    audience: str
    namespace: str
    service_accounts: Mapping[str, str]  # layout role (ivr-webhook) -> service account name
    pubkeys: tuple[str, ...] = ()  # PEM public keys that sign service-account tokens
    discovery_url: str = ""  # or: the API server's issuer, for OIDC discovery
    discovery_ca_pem: str = ""
    bound_issuer: str = ""
    mount: str = "jwt"
    extra: Mapping[str, Any] = field(default_factory=dict)  # more role fields (leeways)

    def subject(self, role: str) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_accounts[role]}"


def method_config(auth: JwtAuth) -> dict[str, Any]:
    if bool(auth.pubkeys) == bool(auth.discovery_url):
        raise ConfigError(
            "--jwt-pubkey-file or --jwt-discovery-url: exactly one is needed "
            "to check service-account tokens"
        )
    config: dict[str, Any] = (
        {"jwt_validation_pubkeys": list(auth.pubkeys)}
        if auth.pubkeys
        else {
            "oidc_discovery_url": auth.discovery_url,
            "oidc_discovery_ca_pem": auth.discovery_ca_pem,
        }
    )
    if auth.bound_issuer:
        config["bound_issuer"] = auth.bound_issuer
    return config


def role_payload(layout: Layout, auth: JwtAuth, role: str) -> dict[str, Any]:
    if role not in layout.roles:
        raise ConfigError(f"--jwt-service-account: no role {role!r} in vault/layout.json")
    spec = layout.roles[role]
    return {
        "role_type": "jwt",
        "bound_audiences": [auth.audience],
        "bound_subject": auth.subject(role),
        "user_claim": "sub",
        "token_no_default_policy": True,
        "token_type": "service",
        **{name: spec[name] for name in _COPIED if name in spec},
        **auth.extra,
    }


def configure_jwt(admin: VaultClient, layout: Layout, auth: JwtAuth) -> None:
    """The JWT method at ``auth.mount`` and a role per service account, matching ``auth``."""
    if not auth.audience or not auth.namespace:
        raise ConfigError("--jwt-audience and --jwt-namespace: both are needed")
    config = method_config(auth)
    ensure_mount(admin, auth.mount, "jwt", auth=True)
    admin.write(f"auth/{auth.mount}/config", "configure jwt auth", config)
    for role in auth.service_accounts:
        admin.write(
            f"auth/{auth.mount}/role/{role}", "write jwt role", role_payload(layout, auth, role)
        )
    log.info("jwt auth configured", roles=len(auth.service_accounts))
