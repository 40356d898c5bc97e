"""What bootstrap writes for service-account login (service/vault/jwt_auth.py); that OpenBao
accepts it and logs the right pods in is tests/integration/vault/test_jwt_login.py."""

from __future__ import annotations

import pytest

from service.errors import ConfigError
from service.vault.bootstrap import Layout
from service.vault.jwt_auth import JwtAuth, method_config, role_payload

AUTH = JwtAuth("ivr-vault", "ivr", {"ivr-webhook": "webhook-sa"}, pubkeys=("PEM",))


def test_a_role_is_one_service_account_with_its_approles_policies_and_ttls() -> None:
    layout = Layout.load()
    payload = role_payload(layout, AUTH, "ivr-webhook")
    approle = layout.roles["ivr-webhook"]
    assert payload["bound_subject"] == "system:serviceaccount:ivr:webhook-sa"
    assert payload["bound_audiences"] == ["ivr-vault"]
    assert payload["token_policies"] == approle["token_policies"] == ["ivr-webhook"]
    assert (payload["token_ttl"], payload["token_max_ttl"]) == (
        approle["token_ttl"],
        approle["token_max_ttl"],
    )
    assert payload["token_no_default_policy"] is True
    # AppRole-only fields do not leak into the JWT role.
    assert not any(name.startswith("secret_id") for name in payload)


def test_an_unknown_role_is_refused() -> None:
    with pytest.raises(ConfigError, match="no role 'ivr-root'"):
        role_payload(Layout.load(), AUTH, "ivr-root")


@pytest.mark.parametrize(("pubkeys", "url"), [((), ""), (("PEM",), "https://k8s")])
def test_exactly_one_way_to_check_signatures(pubkeys: tuple[str, ...], url: str) -> None:
    with pytest.raises(ConfigError, match="exactly one"):
        method_config(JwtAuth("a", "n", {}, pubkeys=pubkeys, discovery_url=url))


def test_discovery_with_its_ca_and_issuer() -> None:
    config = method_config(
        JwtAuth(
            "a",
            "n",
            {},
            discovery_url="https://kubernetes.default.svc",
            discovery_ca_pem="CA",
            bound_issuer="https://iss",
        )
    )
    assert config == {
        "oidc_discovery_url": "https://kubernetes.default.svc",
        "oidc_discovery_ca_pem": "CA",
        "bound_issuer": "https://iss",
    }
