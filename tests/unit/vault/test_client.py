"""VaultClient without a Vault: a refused connection is translated at the boundary.
Everything that needs a server (real OpenBao, a hung or broken one): tests/integration/vault/
test_vault_client.py."""

from __future__ import annotations

import pytest

from service.devtools.devstack import free_port
from service.errors import VaultTimeout, VaultUnavailable
from service.settings import Secret
from service.vault.client import VaultClient


def test_unreachable_vault_is_unavailable() -> None:
    client = VaultClient(f"http://127.0.0.1:{free_port()}", Secret("t"), timeout=2)
    with pytest.raises(VaultUnavailable) as caught:
        client.read("sys/mounts", "list mounts")
    assert not isinstance(caught.value, VaultTimeout)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
