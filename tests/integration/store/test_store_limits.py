"""The backend's PostgreSQL connections against silence (docs/past-one-machine.md, silent faults),
on a real server.

A backend that stops mid-transaction (paused, frozen, cut off) must not hold the locks of
a call, a caller or an account for long: the server ends its transaction once it has been
idle IDLE_IN_TRANSACTION_S. And a lookup's own transaction gives up past the request's
budget, waits for a lock included, so that a backend never decides after the webhook has
stopped waiting. On make run-ha without the first, one backend SIGSTOPped for 10 s made
39 of 268 calls to one account fail (the paused backend held the account's row lock and
the caller's advisory lock); test_ha_drills.py drills the whole.
"""

from __future__ import annotations

import time

import psycopg
import pytest

from service.devtools.postgres import LocalPostgres
from service.errors import StoreUnavailable
from service.store.accounts import Store
from service.store.postgres import (
    IDLE_IN_TRANSACTION_S,
    TCP_USER_TIMEOUT_S,
    PostgresDatabase,
)
from tests.support.postgres import pg_store_url

LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('call:CAsilent', 0))"


def test_a_transaction_stops_waiting_for_a_lock_at_its_timeout(
    postgres: LocalPostgres,
    request: pytest.FixtureRequest,
) -> None:
    url = pg_store_url(postgres, request.node.name)
    assert url.conninfo is not None
    store = Store(url, serving=True)
    try:
        with psycopg.connect(url.conninfo.reveal()) as holder:
            holder.execute(LOCK)  # held until this transaction ends
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                store.transaction(lambda ledger: ledger.answers("CAsilent"), timeout=0.3)
            waited = time.monotonic() - started
        # Given up at its timeout, not at the holder's pleasure; and the next one, with
        # the lock free, decides.
        assert 0.25 <= waited < 1.5, waited
        assert store.transaction(lambda ledger: ledger.answers("CAsilent"), timeout=0.3) == {}
    finally:
        store.close()


def test_the_server_ends_a_serving_transaction_left_idle(
    postgres: LocalPostgres,
    request: pytest.FixtureRequest,
) -> None:
    url = pg_store_url(postgres, request.node.name)
    assert url.conninfo is not None
    serving = PostgresDatabase(url, pool_size=1, serving=True)
    tools = PostgresDatabase(url, pool_size=1)
    try:

        def settings(db: PostgresDatabase) -> list[str]:
            names = ("idle_in_transaction_session_timeout", "tcp_user_timeout")
            return db.run(
                lambda conn: [
                    str(conn.raw.execute(f"SHOW {name}").fetchall()[0][0]) for name in names
                ]
            )

        assert settings(serving) == [
            f"{IDLE_IN_TRANSACTION_S:g}s",
            str(round(TCP_USER_TIMEOUT_S * 1000)),
        ]
        assert settings(tools)[0] == "0"  # an operator's long transaction is left alone

        def stop_holding_the_lock(conn: object) -> None:
            conn.execute(LOCK)  # type: ignore[attr-defined]
            time.sleep(IDLE_IN_TRANSACTION_S + 1.5)  # a backend frozen mid-transaction
            conn.execute("SELECT 1")  # type: ignore[attr-defined]

        started = time.monotonic()
        with pytest.raises(StoreUnavailable):  # its session was ended under it
            serving.run(stop_holding_the_lock, write=True)
        assert time.monotonic() - started < IDLE_IN_TRANSACTION_S + 3
        # The lock went with the session, long before TCP would have noticed a lost peer.
        with psycopg.connect(url.conninfo.reveal(), autocommit=True) as other:
            free = other.execute(
                "SELECT pg_try_advisory_lock(hashtextextended('call:CAsilent', 0))"
            ).fetchall()
        assert free == [(True,)]
    finally:
        serving.close()
        tools.close()
