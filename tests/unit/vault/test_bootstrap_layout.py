"""vault/layout.json read as bootstrap reads it: the roles' secret-id rules, and the
production profile (docker-compose.prod.yml's ``bootstrap --profile prod --bound-cidrs``)."""

from __future__ import annotations

import pytest

from service.errors import ConfigError
from service.vault.bootstrap import Layout, vault_timestamp

SERVICES = ("ivr-webhook", "ivr-backend")


def test_every_role_has_a_secret_id_ttl_and_the_services_unlimited_uses() -> None:
    layout = Layout.load()
    assert set(layout.roles) == {"ivr-webhook", "ivr-backend", "ivr-keyadmin", "ivr-backup"}
    for name, role in layout.roles.items():
        assert role["secret_id_ttl"], name
        # A service logs in again with the same secret-id at every max TTL and restart.
        assert role["secret_id_num_uses"] == 0, name
        assert "token_bound_cidrs" not in role, name
    assert set(layout.policies) == set(layout.roles)


def test_the_production_profile() -> None:
    layout = Layout.load(profile="prod", bound_cidrs=["172.30.53.0/24"])
    # Every identity (docs/security.md, "smaller items").
    for name in (*SERVICES, "ivr-keyadmin", "ivr-backup"):
        assert layout.roles[name]["token_bound_cidrs"] == ["172.30.53.0/24"]
        assert layout.roles[name]["secret_id_bound_cidrs"] == ["172.30.53.0/24"]
    keyadmin, backup = layout.roles["ivr-keyadmin"], layout.roles["ivr-backup"]
    assert (keyadmin["secret_id_ttl"], keyadmin["secret_id_num_uses"]) == ("24h", 10)
    assert (backup["secret_id_ttl"], backup["secret_id_num_uses"]) == ("168h", 14)
    assert layout.roles["ivr-backend"]["token_policies"] == ["ivr-backend"]  # merged, kept


def test_bound_cidrs_need_a_profile_and_a_known_one() -> None:
    with pytest.raises(ConfigError, match="--bound-cidrs"):
        Layout.load(bound_cidrs=["10.0.0.0/8"])
    with pytest.raises(ConfigError, match="--profile"):
        Layout.load(profile="staging")


@pytest.mark.parametrize(
    ("text", "epoch"),
    [
        ("2026-12-01T00:00:00Z", 1796083200.0),
        ("2026-12-01T00:00:00.123456789Z", 1796083200.0),
        ("2026-12-01T01:00:00.5+01:00", 1796083200.0),
    ],
)
def test_vault_timestamps(text: str, epoch: float) -> None:
    assert vault_timestamp(text) == epoch
