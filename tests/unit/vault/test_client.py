"""VaultClient without a Vault: a refused connection is translated at the boundary.
Everything that needs a server (real OpenBao, a hung or broken one): tests/integration/vault/
test_vault_client.py."""

from __future__ import annotations

import hvac.exceptions
import pytest

from service.devtools.devstack import free_port
from service.errors import (
    VaultError,
    VaultNotFound,
    VaultPermissionDenied,
    VaultRequestError,
    VaultTimeout,
    VaultUnavailable,
)
from service.settings import Secret
from service.vault.base import error_for_status
from service.vault.client import VaultClient, translate_errors


def test_unreachable_vault_is_unavailable() -> None:
    client = VaultClient(f"http://127.0.0.1:{free_port()}", Secret("t"), timeout=2)
    with pytest.raises(VaultUnavailable) as caught:
        client.read("sys/mounts", "list mounts")  # logs in first: a token lookup
    assert not isinstance(caught.value, VaultTimeout)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    addr = client.addr
    assert str(caught.value) == f"token lookup: cannot reach Vault ({addr})"
    assert (caught.value.addr, caught.value.status) == (addr, None)


@pytest.mark.parametrize(
    ("raised", "ours", "status"),
    [
        (hvac.exceptions.Forbidden, VaultPermissionDenied, 403),
        (hvac.exceptions.InvalidRequest, VaultRequestError, 400),
        (hvac.exceptions.InvalidPath, VaultNotFound, 404),
        (hvac.exceptions.RateLimitExceeded, VaultUnavailable, 429),
        (hvac.exceptions.InternalServerError, VaultUnavailable, 500),
        (hvac.exceptions.BadGateway, VaultUnavailable, 502),
        (hvac.exceptions.VaultDown, VaultUnavailable, 503),
    ],
)
def test_an_answer_is_named_by_its_status_and_the_node_that_gave_it(
    raised: type[Exception], ours: type[VaultError], status: int
) -> None:
    with pytest.raises(ours) as caught, translate_errors("read key", "http://10.0.0.7:8200"):
        raise raised("a body that may echo the request: 4321")
    assert (caught.value.addr, caught.value.status) == ("http://10.0.0.7:8200", status)
    assert str(caught.value).endswith(f" (HTTP {status} from http://10.0.0.7:8200)")
    assert str(caught.value).startswith("read key: ") and "4321" not in str(caught.value)


@pytest.mark.parametrize(
    ("status", "ours"),
    [
        (403, VaultPermissionDenied),
        (400, VaultRequestError),
        (404, VaultNotFound),
        (503, VaultUnavailable),
        (418, VaultError),
    ],
)
def test_the_event_loop_client_names_the_same_facts(status: int, ours: type[VaultError]) -> None:
    error = error_for_status(status, "transit encrypt", b"4321", "https://vault.internal:8200")
    assert type(error) is ours
    assert str(error).endswith(f" (HTTP {status} from https://vault.internal:8200)")
    assert "4321" not in str(error)
