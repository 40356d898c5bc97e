"""The ivr-lookup canary in process: the backend app on Starlette's TestClient with a fake
Transit (tests/support/fake_transit.py; its ``hmac_key`` plays a Vault's ``ivr-lookup``)
and a real SQLite store. What a real foreign Vault does to ``make run`` is
tests/integration/store/test_persistence.py's business."""

from __future__ import annotations

import asyncio
import time
import warnings
from pathlib import Path

import pytest
import structlog

from service.backend.app import create_backend_app
from service.backend.enrolment import Enrolment, make_records
from service.backend.keycheck import CANARY_INPUT, check_keys
from service.devtools.caller import new_call_sid
from service.errors import VaultRequestError
from service.settings import Secret, Settings
from service.store.accounts import Store
from tests.support.fake_transit import FakeTransit, fake_session

with warnings.catch_warnings():  # Starlette would have httpx2; the users chose httpx
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

BEARER = "backend-bearer-for-tests"
NUMBER, CARD, PIN = "31415926", "1234", "4321"
OLD_VAULT, NEW_VAULT = b"the key of the Vault that made the store", b"another Vault's key"


def enrol(store_path: Path, transit: FakeTransit, *, canary: bool = True) -> None:
    """What enrolment writes: the verifiers and (since canaries exist) the canary."""
    (made,) = asyncio.run(transit.hmac([CANARY_INPUT]))
    records = asyncio.run(
        make_records(transit, [Enrolment("AC12345678", "12.55", NUMBER, CARD, PIN)])
    )
    store = Store(store_path)
    if canary:
        store.add_canary(made, 0.0)
    assert store.add_accounts(records) == [None]
    store.close()


def settings(tmp_path: Path) -> Settings:
    return Settings(
        vault_role_id=Secret("role"),
        vault_secret_id=Secret("secret"),
        backend_token=Secret(BEARER),
        store_path=str(tmp_path / "s.sqlite3"),
    )


def lookup(client: TestClient, transit: FakeTransit) -> tuple[int, object]:
    sid = new_call_sid()
    response = client.post(
        "/v1/lookup",
        headers={"Authorization": f"Bearer {BEARER}"},
        json={
            "call_sid": sid,
            "card_last4": transit.seal(CARD.encode(), f"{sid}:card_last4".encode()),
            "pin": transit.seal(PIN.encode(), f"{sid}:pin".encode()),
            "caller": transit.seal(b"+15005550006", f"{sid}:caller".encode()),
            "account_number": transit.seal(NUMBER.encode(), f"{sid}:account_number".encode()),
            "issued": str(int(time.time())),
        },
    )
    return response.status_code, response.json()


@pytest.mark.parametrize(
    ("canary", "says"),
    [
        (True, "cannot reproduce the account store's canary"),
        (False, "no canary (a store made before canaries)"),
    ],
)
def test_another_vault_is_never_ready_and_never_answers_not_found(
    tmp_path: Path, canary: bool, says: str
) -> None:
    config = settings(tmp_path)
    enrol(Path(config.store_path), FakeTransit(hmac_key=OLD_VAULT), canary=canary)
    other = FakeTransit(hmac_key=NEW_VAULT)
    with (
        structlog.testing.capture_logs() as logs,
        TestClient(
            create_backend_app(config, transit_session=fake_session(other)),
            raise_server_exceptions=False,
        ) as client,
    ):
        ready = client.get("/readyz")
        status, body = lookup(client, other)
        client.get("/readyz")  # checked again: no second error line
    assert ready.status_code == 503
    assert ready.json()["checks"] == {"vault": True, "ivr-lookup": False}
    # The caller hears "please call again later", not "we were not able to locate you".
    assert (status, body) == (503, {"detail": "vault unavailable"})
    errors = [
        line
        for line in logs  # (access lines of 503 answers are errors too)
        if line["log_level"] == "error" and line["event"] != "request"
    ]
    assert len(errors) == 1, errors
    assert errors[0]["event"].startswith("ivr-lookup: ")
    assert says in errors[0]["event"]
    assert "docs/backup.md#restore" in errors[0]["event"]
    assert errors[0]["key_version"] == 1
    assert not any(ch.isdigit() for ch in errors[0]["event"])  # the scrubber would mask them


def test_the_vault_that_made_the_store_is_ready_and_serves(tmp_path: Path) -> None:
    config = settings(tmp_path)
    same = FakeTransit(hmac_key=OLD_VAULT)
    enrol(Path(config.store_path), same)
    with (
        structlog.testing.capture_logs() as logs,
        TestClient(create_backend_app(config, transit_session=fake_session(same))) as client,
    ):
        ready = client.get("/readyz")
        assert lookup(client, same) == (200, {"account": "AC12345678", "balance": "12.55"})
    assert (ready.status_code, ready.json()["checks"]) == (200, {"vault": True, "ivr-lookup": True})
    assert not [line for line in logs if line["log_level"] == "error"]


def test_an_empty_store_has_nothing_to_check(tmp_path: Path) -> None:
    with TestClient(
        create_backend_app(
            settings(tmp_path), transit_session=fake_session(FakeTransit(hmac_key=NEW_VAULT))
        )
    ) as client:
        assert client.get("/readyz").status_code == 200


def test_a_verifier_upgrade_records_the_new_versions_canary_first(tmp_path: Path) -> None:
    config = settings(tmp_path)
    enrol(Path(config.store_path), FakeTransit(hmac_key=OLD_VAULT))  # at v1
    rotated = FakeTransit(hmac_key=OLD_VAULT, version=2)  # same key, rotated once
    with TestClient(create_backend_app(config, transit_session=fake_session(rotated))) as client:
        assert lookup(client, rotated)[0] == 200
    store = Store(config.store_path)
    try:
        assert set(store.canaries()) == {1, 2}
        assert store.lookup_versions() == [2]  # upgraded at that lookup
    finally:
        store.close()


class _NoSuchVersion(FakeTransit):
    async def hmac(self, inputs: object, *, key_version: int | None = None) -> list[str]:
        if key_version is not None and key_version != self.version:
            raise VaultRequestError("transit hmac: Vault refused the request")
        return await super().hmac(inputs, key_version=key_version)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_check_keys_versions() -> None:
    old = FakeTransit(hmac_key=OLD_VAULT)
    (v1,) = await old.hmac([CANARY_INPUT], key_version=1)
    (v2,) = await old.hmac([CANARY_INPUT], key_version=2)
    rotated = FakeTransit(hmac_key=OLD_VAULT, version=3)
    # Every version in use reproduced, the latest's too: fine.
    assert (await check_keys(rotated, "ivr-lookup", {1: v1, 2: v2}, [1, 2])).ok
    # A recorded canary no stored verifier uses any more (all upgraded, its version
    # perhaps retired) is not checked.
    assert (
        await check_keys(_NoSuchVersion(hmac_key=OLD_VAULT, version=3), "ivr-lookup", {1: v1}, [])
    ).ok
    # A Vault that never had v2 (Transit refuses the version) cannot reproduce it.
    result = await check_keys(
        _NoSuchVersion(hmac_key=OLD_VAULT, version=1), "ivr-lookup", {1: v1, 2: v2}, [1, 2]
    )
    assert (result.mismatched, result.unguarded) == ((2,), ())
    # Verifiers at a version with no canary: unguarded.
    result = await check_keys(rotated, "ivr-lookup", {1: v1}, [1, 2])
    assert (result.mismatched, result.unguarded, result.ok) == ((), (2,), False)
    assert "ivr-vault accounts check-keys --adopt" in str(result.error())
