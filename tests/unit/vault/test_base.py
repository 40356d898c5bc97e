"""The rules both Vault clients share (service/vault/base.py), without a server: the
fail-over predicate, the status table, body parsing, and when the token keeper logs in,
renews or gives up. Both clients against real servers: tests/integration/vault/
test_client_policy.py."""

from __future__ import annotations

import pytest

from service.errors import (
    VaultError,
    VaultNotFound,
    VaultPermissionDenied,
    VaultRequestError,
    VaultUnavailable,
)
from service.settings import Secret
from service.vault.base import (
    TokenKeeper,
    TokenState,
    error_for_status,
    fails_over,
    parse_body,
)


def test_only_no_answer_or_a_5xx_fails_over() -> None:
    assert fails_over(None)
    assert all(fails_over(s) for s in (500, 501, 502, 503, 504))
    assert not any(fails_over(s) for s in (200, 204, 400, 403, 404, 412, 429, 473))


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, VaultRequestError),
        (403, VaultPermissionDenied),
        (404, VaultNotFound),
        (429, VaultUnavailable),
        (500, VaultUnavailable),
        (502, VaultUnavailable),
        (503, VaultUnavailable),
        (401, VaultError),
        (418, VaultError),
        (501, VaultError),
        (504, VaultError),
    ],
)
def test_the_status_table(status: int, expected: type[VaultError]) -> None:
    error = error_for_status(status, "probe", b'{"errors": ["1234 is the plaintext"]}')
    assert type(error) is expected
    assert "1234" not in str(error) and str(error).startswith("probe: ")


def test_a_400_keeps_its_json_body_for_batch_results() -> None:
    error = error_for_status(400, "decrypt", b'{"batch_results": [{"error": "x"}]}')
    assert isinstance(error, VaultRequestError)
    assert error.response_json == {"batch_results": [{"error": "x"}]}
    assert error_for_status(400, "decrypt", b"[1]").response_json is None  # type: ignore[attr-defined]


def test_bodies() -> None:
    assert parse_body(200, b'{"data": {}}', "read") == {"data": {}}
    assert parse_body(204, b"", "write") == {}
    for odd in (b"<html>", b"[]", b"null"):
        with pytest.raises(VaultError, match="unexpected answer") as caught:
            parse_body(200, odd, "read")
        assert type(caught.value) is VaultError
    with pytest.raises(VaultNotFound):
        parse_body(404, b"{}", "read")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Identity:
    """login and renew as a Vault would answer them, counted."""

    def __init__(
        self, clock: Clock, *, ttl: float = 30, renew_ttl: float = 30, renew_fails: bool = False
    ) -> None:
        self.clock, self.ttl, self.renew_ttl, self.renew_fails = clock, ttl, renew_ttl, renew_fails
        self.calls: list[str] = []

    def login(self) -> TokenState:
        self.calls.append("login")
        return TokenState(Secret(f"token-{len(self.calls)}"), self.clock(), self.ttl, True)

    def renew(self, state: TokenState) -> TokenState:
        self.calls.append("renew")
        if self.renew_fails:
            raise VaultPermissionDenied("token renew: permission denied")
        return TokenState(state.token, self.clock(), self.renew_ttl, True)


def test_login_once_then_renew_when_a_third_is_left() -> None:
    clock = Clock()
    vault = Identity(clock)
    keeper = TokenKeeper(vault.login, vault.renew, clock=clock)
    first = keeper.valid()
    clock.now += 15
    assert keeper.valid() is first and keeper.peek() == (first, False)
    clock.now += 6  # 9 s of 30 left: under a third
    assert keeper.peek() == (first, True)
    assert keeper.valid().token == first.token
    assert vault.calls == ["login", "renew"]


def test_a_refused_or_short_renewal_logs_in_again() -> None:
    for vault_kwargs in ({"renew_fails": True}, {"renew_ttl": 5}):
        clock = Clock()
        vault = Identity(clock, **vault_kwargs)
        keeper = TokenKeeper(vault.login, vault.renew, clock=clock)
        first = keeper.valid()
        clock.now += 25
        assert keeper.valid().token != first.token
        assert vault.calls == ["login", "renew", "login"], vault_kwargs


def test_a_fixed_token_is_never_renewed_nor_replaced() -> None:
    clock = Clock()
    vault = Identity(clock)
    keeper = TokenKeeper(vault.login, None, clock=clock)
    state = keeper.valid()
    clock.now += 25
    assert keeper.peek() == (state, False) and keeper.valid() is state
    assert not keeper.retry_after_denial(state, 1)
    assert vault.calls == ["login"]


def test_one_retry_after_a_denial_and_only_for_the_token_refused() -> None:
    clock = Clock()
    vault = Identity(clock)
    keeper = TokenKeeper(vault.login, vault.renew, clock=clock)
    refused = keeper.valid()
    assert keeper.retry_after_denial(refused, 1)
    fresh = keeper.valid()
    assert fresh.token != refused.token
    assert keeper.retry_after_denial(refused, 1)  # a late caller with the old token
    assert keeper.valid() is fresh  # ... does not throw the fresh one away
    assert not keeper.retry_after_denial(fresh, 2)  # a second 403 is a real denial
    assert vault.calls == ["login", "login"]
    assert keeper.forget() is fresh and keeper.peek() == (None, True)
