"""The account store on both engines: SQLite (a file) and PostgreSQL (the session's real
server, a database of its own per test), through the one interface the service uses.

What each test proves holds on both: verifiers and their versions, card lockout state,
callers' failures in a window, each call's remembered answers, unlock, all-or-nothing
transactions, the schema and its migrations, and the concurrency the lockout relies on:
a burst of wrong PINs from threads on two stores (two backends: separate connection
pools) is evaluated exactly up to the threshold, and two backends racing one request
decide it once. (The SQLite-only parts, its connections and the pre-issue-11 upgrade:
tests/unit/store/. The same burst through real backend processes: test_guessing.py.)
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from service.backend.app import http_answer
from service.backend.decision import Attempt, Decision, Hmacs, Identification, decide
from service.backend.policy import LockoutPolicy
from service.backup.archive import Backup, restore_store
from service.backup.transfer import export_to_sqlite, import_from_sqlite
from service.devtools.devstack import DevVault, free_port
from service.devtools.postgres import LocalPostgres
from service.errors import StoreConflict, StoreSchemaMismatch, StoreUnavailable
from service.settings import Settings, StoreUrl
from service.store.accounts import Refusal, SqliteLedger, Store
from service.store.ledger import CardState
from service.store.migrations import (
    LATEST,
    MIGRATIONS,
    TABLES,
    migrate_store,
    schema_version,
)
from service.store.sealed import SealedStore
from service.vault.bootstrap import Layout
from service.vault.client import VaultClient
from tests.support.backups import OperatorKeys, opened
from tests.support.postgres import ENGINES, database_name, pg_store_url, url_with_password
from tests.support.store import (
    CALLER_ID_V1,
    CARD_V1,
    NUMBER_V1,
    PIN_V1,
    account_id,
    by_number,
    count_rows,
    put,
    query,
    refused,
    state_of,
)

NUMBER_V3 = "vault:v3:bnVtYmVyLXYz"
CARD_V3 = "vault:v3:Y2FyZC12Mw=="
PIN_V3 = "vault:v3:cGluLXYz"
CALLER = "vault:v1:Y2FsbGVy"


@pytest.fixture
def store(store_url: StoreUrl) -> Iterator[Store]:
    s = Store(store_url)
    put(s, callers=(CALLER_ID_V1,))
    yield s
    s.close()


# -- what the store keeps ----------------------------------------------------------------


def test_enrol_and_find(store: Store) -> None:
    account = by_number(store)
    assert account is not None
    assert (
        account.account,
        account.balance,
        account.lookup_version,
        account.salted,
        account.legacy_card,
        account.number_version,
    ) == ("AC12345678", "12.55", 1, True, None, 1)
    assert account.card_verifier not in (CARD_V1, PIN_V1) and account.ref.isalpha()
    assert by_number(store, NUMBER_V3) is None
    ((found, version),) = store.transaction(lambda ledger: ledger.accounts_by_caller(CALLER_ID_V1))
    assert (found, version) == (account, 1)
    assert store.has_account("AC12345678") and not store.has_account("AC00000000")
    assert store.reference("AC12345678") == account.ref


def test_many_accounts_share_a_card_and_a_pin_never_a_verifier(store: Store) -> None:
    put(store, "AC00000002", "1.00", number=NUMBER_V3)  # the same card and PIN HMACs
    rows = query(store, "SELECT card_verifier, pin_verifier, salt FROM accounts")
    assert len(rows) == 2 and all(len({row[i] for row in rows}) == 2 for i in range(3))


def test_versions_and_replacement(store: Store) -> None:
    put(store, "AC00000002", "1.00", number=NUMBER_V3, card=CARD_V3, pin=PIN_V3)
    assert store.lookup_versions() == [3, 1]
    assert store.version_counts() == {1: 3, 3: 2}  # verifiers, number, registration
    aid = account_id(store)

    def rekey(ledger: SqliteLedger) -> None:
        ledger.replace_verifiers(aid, "vault:v3:bmV3LWNhcmQ=", "vault:v3:bmV3LXBpbg==", None)
        ledger.replace_number(aid, "vault:v3:bnVtYmVyMw==")
        ledger.replace_registration(aid, CALLER_ID_V1, "vault:v3:Y2FsbGVyMw==")

    store.transaction(rekey)
    assert store.lookup_versions() == [3]
    assert store.version_counts() == {3: 5}


def test_what_enrolment_refuses_and_the_unique_error_quotes_no_value(store: Store) -> None:
    assert refused(store, account="AC12345678", number=NUMBER_V3) is Refusal.LABEL_EXISTS
    assert refused(store, account="AC2", number=NUMBER_V1) is Refusal.NUMBER_ENROLLED
    # The same caller number with the same card on another account: not told apart.
    assert (
        refused(store, account="AC2", number=NUMBER_V3, callers=(CALLER_ID_V1,))
        is Refusal.CALLER_SAME_CARD
    )
    assert not store.has_account("AC2")
    assert (
        refused(store, account="AC2", number=NUMBER_V3, card=CARD_V3, callers=(CALLER_ID_V1,))
        is None
    )  # another card: a household
    assert count_rows(store, "caller_registrations") == 2
    with pytest.raises(StoreConflict) as conflict:  # the constraint, under the checks
        store._db.run(
            lambda db: db.execute(
                "UPDATE accounts SET number_verifier=? WHERE account='AC2'", (NUMBER_V1,)
            ),
            write=True,
        )
    assert "number_verifier" in str(conflict.value)
    assert NUMBER_V1 not in str(conflict.value) and "AC2" not in str(conflict.value)
    assert store.set_account_number("AC2", NUMBER_V1) is Refusal.NUMBER_ENROLLED
    assert store.set_account_number("AC9", NUMBER_V1) is Refusal.NO_ACCOUNT


def test_card_state_round_trips_and_a_clean_state_leaves_no_row(store: Store) -> None:
    aid = account_id(store)
    assert state_of(store) == CardState()
    for state in (CardState(3), CardState(5, 1_000_900.25), CardState(10, 0.0, hard=True)):
        store.transaction(lambda ledger: ledger.set_card_state(aid, state))  # noqa: B023 (run at once)
        assert state_of(store) == state
    assert count_rows(store, "card_lockout") == 1
    store.transaction(lambda ledger: ledger.set_card_state(aid, CardState()))
    assert count_rows(store, "card_lockout") == 0


def test_card_state_survives_a_new_store_object(store: Store) -> None:
    aid = account_id(store)
    store.transaction(lambda ledger: ledger.set_card_state(aid, CardState(4, 1e9 + 0.5)))
    again = Store(store.url)  # a backend restart, or another replica
    try:
        assert state_of(again) == CardState(4, 1e9 + 0.5)  # a timestamp to the microsecond
    finally:
        again.close()


def test_caller_failures_count_in_a_sliding_window(store: Store) -> None:
    now, window = 1_000_000.0, 86_400.0
    for at in (now, now + 10, now + 20):
        store.transaction(lambda ledger: ledger.add_caller_failure(CALLER, at, window))  # noqa: B023
    store.transaction(lambda ledger: ledger.add_caller_failure("vault:v1:b3RoZXI=", now, window))

    def count(at: float) -> int:
        return store.transaction(lambda ledger: ledger.caller_failures(CALLER, at - window))

    assert count(now + 30) == 3
    assert count(now + window + 5) == 2  # the first has slid out of the window
    assert count(now + window + 25) == 0
    # Adding sweeps every caller's rows older than the window.
    store.transaction(lambda ledger: ledger.add_caller_failure(CALLER, now + window + 25, window))
    assert count_rows(store, "caller_failures") == 1


def test_reset_caller_forgets_one_number_and_cut_offs_are_counted(store: Store) -> None:
    """``callers reset``'s store half, and doctor's count: a number is cut off at ``limit``
    failures within the window; resetting it forgets its rows and no other number's."""
    now, window, limit = time.time(), 86_400.0, 3
    other = "vault:v1:b3RoZXI="
    for n in range(limit):
        store.transaction(lambda ledger: ledger.add_caller_failure(CALLER, now - n, window))  # noqa: B023
        store.transaction(lambda ledger: ledger.add_caller_failure(other, now - n, window))  # noqa: B023
    assert store.cut_off_callers(now - window, limit) == 2
    assert store.cut_off_callers(now - window, limit + 1) == 0
    assert store.reset_caller(CALLER) == limit
    assert store.cut_off_callers(now - window, limit) == 1
    assert store.transaction(lambda ledger: ledger.caller_failures(CALLER, 0.0)) == 0
    assert store.transaction(lambda ledger: ledger.caller_failures(other, 0.0)) == limit
    assert store.reset_caller(CALLER) == 0  # nothing left: still not an error


def test_answers_are_per_call_and_expire(store: Store) -> None:
    now, ttl = 1_000_000.0, 900.0
    assert store.answer("CA1", "k", now, ttl) is None
    store.transaction(
        lambda ledger: ledger.remember("CA1", "k", (404, '{"detail": "x"}'), now, ttl)
    )
    store.transaction(lambda ledger: ledger.remember("CA1", "k2", (409, "{}"), now + 1, ttl))
    assert store.answer("CA1", "k", now + 10, ttl) == (404, '{"detail": "x"}')
    assert store.answer("CA2", "k", now + 10, ttl) is None
    assert store.answer("CA1", "k", now + ttl, ttl) is None  # expired
    assert store.transaction(lambda ledger: ledger.answers("CA1")) == {
        "k": (404, '{"detail": "x"}'),
        "k2": (409, "{}"),
    }
    # Remembering sweeps what expired.
    store.transaction(lambda ledger: ledger.remember("CA3", "k", (200, "{}"), now + ttl + 5, ttl))
    assert count_rows(store, "call_answers") == 1


def test_unlock_forgets_failures_and_lifts_the_lock(store: Store) -> None:
    aid = account_id(store)
    store.transaction(lambda ledger: ledger.set_card_state(aid, CardState(10, hard=True)))
    assert store.unlock("AC12345678") == CardState(10, hard=True)
    assert state_of(store) == CardState()
    assert store.unlock("AC12345678") == CardState()  # nothing left to lift
    assert store.unlock("AC00000000") is None


def test_canaries_are_kept_once(store: Store) -> None:
    store.add_canary("vault:v1:Y2FuYXJ5", 1.0)
    store.add_canary("vault:v1:b3RoZXI=", 2.0)  # never replaced
    store.add_canary("vault:v2:Y2FuYXJ5Mg==", 3.0)
    assert store.canaries() == {1: "vault:v1:Y2FuYXJ5", 2: "vault:v2:Y2FuYXJ5Mg=="}


def test_sealed_records(store_url: StoreUrl) -> None:
    sealed = SealedStore(store_url)
    try:
        ids = sealed.add(
            "ivr-legacy", ["vault:v1:YQ==", "vault:v2:Yg==", "vault:v1:Yw=="], context="Y3R4"
        )
        assert len(set(ids)) == 3
        assert sealed.key_names() == ["ivr-legacy"]
        assert sealed.version_counts("ivr-legacy") == {1: 2, 2: 1}
        behind = sealed.behind("ivr-legacy", 2, after_id=0, limit=10)
        assert [(r.id, r.ciphertext, r.context) for r in behind] == [
            (ids[0], "vault:v1:YQ==", "Y3R4"),
            (ids[2], "vault:v1:Yw==", "Y3R4"),
        ]
        # A row changed meanwhile is left alone.
        changed = sealed.replace(
            [
                (ids[0], "vault:v1:YQ==", "vault:v2:bmV3"),
                (ids[2], "vault:v1:stale", "vault:v2:bm8="),
            ]
        )
        assert changed == 1 and sealed.count_below("ivr-legacy", 2) == 1
        record = sealed.get(ids[0])
        assert record is not None and (record.key_version, record.ciphertext) == (
            2,
            "vault:v2:bmV3",
        )
    finally:
        sealed.close()


def test_a_transaction_is_all_or_nothing(store: Store) -> None:
    aid, now = account_id(store), 1_000_000.0

    def broken(ledger: SqliteLedger) -> None:
        ledger.set_card_state(aid, CardState(2))
        ledger.remember("CA1", "k", (200, "{}"), now, 900)
        ledger.replace_verifiers(aid, "not a verifier", PIN_V3, None)

    with pytest.raises(ValueError, match="not a Transit HMAC"):
        store.transaction(broken)
    assert state_of(store) == CardState()  # rolled back with the rest
    assert store.answer("CA1", "k", now + 1, 900) is None
    assert store.version_counts() == {1: 3}


# -- what concurrency cannot break -------------------------------------------------------


def test_no_increment_is_lost(store: Store) -> None:
    """16 threads on two stores (two backends) each read the card, its count, and write
    the count plus one, as a decision does: no read sees a value another is about to
    replace (SQLite: one writer at a time; PostgreSQL: the account row's lock)."""
    other = Store(store.url)

    def increment(n: int) -> None:
        def work(ledger: SqliteLedger) -> None:
            account = ledger.account_by_number(NUMBER_V1)
            assert account is not None
            state = ledger.card_state(account.id)
            time.sleep(0.002)  # widen the window a lost update would need
            ledger.set_card_state(account.id, CardState(state.failures + 1))

        (store if n % 2 else other).transaction(work)

    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(increment, range(48)))
    finally:
        other.close()
    assert state_of(store) == CardState(48)


RIGHT = Hmacs(NUMBER_V1, CARD_V1, PIN_V1)
WRONG = Hmacs(NUMBER_V1, CARD_V1, "vault:v1:d3Jvbmc=")


def attempt(n: int | str, caller: str, hmacs: Hmacs, *, key: str | None = None) -> Attempt:
    sid = f"CA{n:032x}" if isinstance(n, int) else n
    return Attempt(sid, key or f"key-{n}", caller, False, Identification.ACCOUNT_NUMBER, (hmacs,))


POLICY = LockoutPolicy(
    threshold=5, duration=900, hard_limit=10, caller_limit=1000, caller_window=3600
)


def race(
    stores: list[Store],
    attempts: list[Attempt],
    policy: LockoutPolicy = POLICY,
) -> list[Decision]:
    """Every attempt at once (a barrier), alternately on each store."""
    go = threading.Barrier(len(attempts))

    def one(n: int) -> Decision:
        go.wait(timeout=30)
        return stores[n % len(stores)].transaction(
            lambda ledger: decide(
                ledger,
                attempts[n],
                policy=policy,
                now=time.time(),
                answer=http_answer,
                answer_ttl=3600,
            )
        )

    with ThreadPoolExecutor(max_workers=len(attempts)) as pool:
        return list(pool.map(one, range(len(attempts))))


def outcomes(decisions: list[Decision]) -> Counter[str]:
    return Counter(
        "replayed" if d.replayed else d.result.outcome.value  # type: ignore[union-attr]
        for d in decisions
    )


def test_a_burst_of_wrong_pins_on_two_backends_evaluates_exactly_the_threshold(
    store: Store,
) -> None:
    other = Store(store.url)  # a second backend: its own connections
    try:
        attempts = [attempt(n, f"vault:v1:Y2FsbGVy{n}", WRONG) for n in range(24)]
        decisions = race([store, other], attempts)
    finally:
        other.close()
    compared = sum(d.compared for d in decisions)
    print(f"burst on {store.url.engine}: compared {compared} of {len(attempts)}")
    assert compared == POLICY.threshold
    assert outcomes(decisions) == {"not_found": 5, "locked": 19}
    assert [d.lock for d in decisions if d.lock] == ["card"]
    assert state_of(store).failures == POLICY.threshold


def test_two_backends_racing_one_request_decide_it_once(store: Store) -> None:
    """A Twilio retry of one request reaching two backends at once, for 12 calls: each is
    decided once (one wrong PIN counted), the other gets the same answer back."""
    other = Store(store.url)
    try:
        for n in range(12):
            one = attempt(n, CALLER, WRONG)
            decisions = race([store, other], [one, one])
            assert outcomes(decisions) == {"not_found": 1, "replayed": 1}, n
            replayed = next(d.replayed for d in decisions if d.replayed)
            assert replayed == (404, '{"detail": "not found"}')
            store.unlock("AC12345678")  # so that every round compares
        # A second lookup in one call (another request key), raced: one is the lookup,
        # the other its call's second lookup, counted against the card too.
        first = attempt("CA" + "f" * 32, CALLER, RIGHT, key="key-a")
        second = attempt("CA" + "f" * 32, CALLER, RIGHT, key="key-b")
        decided = outcomes(race([store, other], [first, second]))
        assert decided == {"found": 1, "second_lookup": 1}
    finally:
        other.close()
    assert count_rows(store, "caller_failures") == 13  # 12 wrong PINs, 1 second lookup


def test_a_callers_concurrent_failures_are_counted_one_by_one(store: Store) -> None:
    """One number guessing many unknown account numbers at once: exactly
    CALLER_FAILURE_LIMIT lookups happen, the rest are cut off."""
    policy = LockoutPolicy(
        threshold=5, duration=900, hard_limit=10, caller_limit=6, caller_window=3600
    )
    attempts = [
        attempt(n, CALLER, Hmacs(f"vault:v1:dW5rbm93bi0{n}", CARD_V1, PIN_V1)) for n in range(16)
    ]
    other = Store(store.url)
    try:
        decisions = race([store, other], attempts, policy)
    finally:
        other.close()
    assert outcomes(decisions) == {"not_found": 6, "caller_cut_off": 10}
    assert sum(d.caller_cut_off for d in decisions) == 1


# -- the schema ------------------------------------------------------------------------


def columns(store: Store, table: str) -> tuple[str, ...]:
    sql = (
        f"SELECT name FROM pragma_table_info('{table}') ORDER BY cid"
        if store.url.engine == "sqlite"
        else "SELECT column_name FROM information_schema.columns WHERE table_schema ="
        f" current_schema() AND table_name = '{table}' ORDER BY ordinal_position"
    )
    return tuple(row[0] for row in store._db.run(lambda db: db.execute(sql).fetchall()))


def test_the_schema_is_the_one_declared_and_has_no_place_for_digits(store: Store) -> None:
    """Both engines have exactly TABLES (what a backup copies); caller_failures keeps the
    number's HMAC, never the number; no column anywhere for a card or PIN's digits."""
    assert {table: columns(store, table) for table, _ in TABLES} == dict(TABLES)
    assert dict(TABLES)["caller_failures"] == ("caller", "at")
    assert schema_version(store._db) == LATEST


def test_migrating_again_changes_nothing(store_url: StoreUrl) -> None:
    assert migrate_store(store_url).endswith("nothing to migrate")


def test_a_postgresql_store_is_checked_not_migrated_by_opening_it(postgres: LocalPostgres) -> None:
    """(SQLite migrates on opening: tests/unit/store/test_migrations.py.)"""
    bare = pg_store_url(postgres, "bare", migrated=False)
    with pytest.raises(
        StoreSchemaMismatch,
        match=r"version 0, this release needs \d+: "
        r"run `ivr-vault store migrate`",
    ):
        Store(bare)
    assert "migrated to version" in migrate_store(bare)
    Store(bare).close()


def test_a_store_migrated_by_a_newer_release_is_refused(store: Store) -> None:
    store._db.run(
        lambda db: db.execute(
            "INSERT INTO schema_migrations(version, name, applied_at) VALUES (?, ?, ?)",
            (LATEST + 1, "from the future", 0.0),
        ),
        write=True,
    )
    with pytest.raises(StoreSchemaMismatch, match="newer than this release"):
        Store(store.url)
    with pytest.raises(StoreSchemaMismatch, match="newer than this release"):
        migrate_store(store.url)


# -- a backup's copy ---------------------------------------------------------------------


def test_a_store_round_trips_through_a_sqlite_file_into_either_engine(
    store: Store,
    store_url: StoreUrl,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """What ``ivr-vault backup`` writes (one SQLite file) and ``restore`` reads back, for
    each engine; a copy restored into PostgreSQL, then written to."""
    aid = account_id(store)
    store.transaction(lambda ledger: ledger.set_card_state(aid, CardState(3, 1e9 + 0.25)))
    store.transaction(lambda ledger: ledger.remember("CA1", "k", (404, "{}"), 1e9, 1e10))
    store.transaction(lambda ledger: ledger.add_caller_failure(CALLER, 1e9, 1e10))
    store.add_canary("vault:v1:Y2FuYXJ5", 1.0)
    sealed = SealedStore(store_url)
    sealed.add("ivr-legacy", ["vault:v1:YQ=="], context=None)
    sealed.close()
    copy = tmp_path / "copy.sqlite3"
    export_to_sqlite(store_url, copy)

    target = pg_store_url(request.getfixturevalue("postgres"), "restored", owner=True)
    import_from_sqlite(copy, target)
    restored = Store(target)
    try:
        for table, _ in TABLES:
            assert count_rows(restored, table) == count_rows(store, table), table
        assert state_of(restored) == CardState(3, 1e9 + 0.25)
        assert restored.answer("CA1", "k", 1e9 + 1, 1e10) == (404, "{}")
        assert restored.canaries() == {1: "vault:v1:Y2FuYXJ5"}
        # New rows get new ids after the restored ones.
        put(restored, "AC00000002", "1.00", number=NUMBER_V3, card=CARD_V3, pin=PIN_V3)
        assert account_id(restored, NUMBER_V3) > aid
    finally:
        restored.close()
    back = tmp_path / "back.sqlite3"
    export_to_sqlite(target, back)
    import_from_sqlite(back, StoreUrl.sqlite(str(tmp_path / "again.sqlite3")))
    again = Store(tmp_path / "again.sqlite3")
    assert again.version_counts() == {1: 3, 3: 2}
    again.close()


def test_a_pg_error_never_shows_the_password(
    postgres: LocalPostgres,
    tmp_path: Path,
) -> None:
    secret_file = tmp_path / "store-url"
    secret_file.write_text(
        f"postgresql://ivr:not-the-password-hunter2@127.0.0.1:{postgres.port}/ivr\n"
    )
    url = Settings.from_environ({"STORE_URL_FILE": str(secret_file)}).store
    assert "hunter2" not in repr(url) + str(url) + url.display
    with pytest.raises(StoreUnavailable) as refused:
        Store(url)
    assert "password authentication failed" in str(refused.value)
    assert "hunter2" not in str(refused.value)
    with pytest.raises(psycopg.OperationalError):  # libpq itself agrees it is wrong
        psycopg.connect(url.conninfo.reveal()).close()  # type: ignore[union-attr]


# -- on the command line -------------------------------------------------------------------


def ivr_vault(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        cwd=cwd,
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(cwd), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("engine", ENGINES)
def test_store_migrate_once_then_nothing(
    engine: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """``ivr-vault store migrate``: the whole schema the first time, nothing the second.
    On PostgreSQL the URL comes with its password from STORE_URL_FILE, which no output
    shows."""
    if engine == "sqlite":
        env = {"STORE_URL": f"sqlite:///{tmp_path / 'new' / 'accounts.sqlite3'}"}
        shown = f"sqlite:///{tmp_path / 'new' / 'accounts.sqlite3'}"
        password = None
    else:
        server: LocalPostgres = request.getfixturevalue("postgres")
        name = database_name("cli_migrate")
        server.new_database(name)
        (tmp_path / "store-url").write_text(url_with_password(server, name))
        env = {"STORE_URL_FILE": str(tmp_path / "store-url")}
        shown = f"postgresql://ivr_owner@127.0.0.1:{server.port}/{name}"
        password = urlsplit(url_with_password(server, name)).password
    first = ivr_vault("store", "migrate", env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert (
        first.stdout == f"ivr-vault: account store {shown}: migrated to version {LATEST} "
        f"({'; '.join(f'{m.version}: {m.name}' for m in MIGRATIONS)})\n"
    )
    again = ivr_vault("store", "migrate", env=env, cwd=tmp_path)
    assert again.stdout == (
        f"ivr-vault: account store {shown}: schema at version {LATEST}, nothing to migrate\n"
    )
    if password:
        assert password not in first.stdout + first.stderr + again.stdout + again.stderr


def test_store_migrate_says_in_one_line_when_postgresql_is_away(tmp_path: Path) -> None:
    """Nothing listens there: exit 1, one line naming the store, never its password."""
    (tmp_path / "store-url").write_text(
        f"postgresql://ivr:hunter2-not-shown@127.0.0.1:{free_port()}/ivr"
    )
    done = ivr_vault(
        "store", "migrate", env={"STORE_URL_FILE": str(tmp_path / "store-url")}, cwd=tmp_path
    )
    assert done.returncode == 1
    assert done.stderr.startswith("ivr-vault: StoreUnavailable: postgresql://ivr@127.0.0.1:")
    assert "cannot connect" in done.stderr and "Connection refused" in done.stderr
    assert "hunter2" not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


def test_bootstrap_migrates_the_store_it_is_given_and_no_other(
    dev_vault: DevVault, postgres: LocalPostgres, tmp_path: Path
) -> None:
    url = pg_store_url(postgres, "bootstrap", migrated=False)
    assert url.conninfo is not None
    env = {**dev_vault.env(), "STORE_URL": url.conninfo.reveal()}
    done = ivr_vault("bootstrap", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"ivr-vault: account store {url.display}: migrated to version {LATEST}" in done.stdout
    Store(url).close()  # now it opens
    plain = ivr_vault("bootstrap", env=dev_vault.env(), cwd=tmp_path)
    assert plain.returncode == 0 and "account store" not in plain.stdout
    assert not (tmp_path / ".dev").exists()  # no default store made where it ran


def test_backup_and_restore_of_a_postgresql_store(
    dev_vault: DevVault,
    admin: VaultClient,
    layout: Layout,  # bootstrapped: the backup signs with ivr-backup-sign
    postgres: LocalPostgres,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``ivr-vault backup`` on a PostgreSQL store (Vault's snapshot beside the store as a
    SQLite file); ``restore``'s store step puts it into a PostgreSQL store with other rows
    (those copied aside first) and into a SQLite one."""
    source = pg_store_url(postgres, "backup_source")
    store = Store(source)
    put(store)
    aid = account_id(store)
    store.transaction(lambda ledger: ledger.set_card_state(aid, CardState(2)))
    store.close()
    assert source.conninfo is not None
    out = tmp_path / "backup.tar.gz.age"
    keys = OperatorKeys.make(tmp_path / "operator", admin)
    made = ivr_vault(
        "backup",
        "--out",
        str(out),
        "--recipient",
        keys.recipient,
        cwd=tmp_path,
        env={**dev_vault.env(), "STORE_URL": source.conninfo.reveal()},
    )
    assert made.returncode == 0, made.stderr
    assert f"the account store {source.display}, encrypted" in made.stdout
    with opened(out, keys.identity) as backup:
        shutil.copy(backup.store, tmp_path / "member.sqlite3")
        member = Store(tmp_path / "member.sqlite3")
        assert member.version_counts() == {1: 2} and state_of(member) == CardState(2)
        member.close()
        restore_into_either_engine(backup, postgres, tmp_path, monkeypatch)


def restore_into_either_engine(
    backup: Backup, postgres: LocalPostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``restore``'s store step, from a backup opened and checked."""
    target = pg_store_url(postgres, "backup_target", owner=True)
    other = Store(target)
    put(other, "AC99999999", "0.01", number=NUMBER_V3, card=CARD_V3, pin=PIN_V3)
    other.close()
    monkeypatch.chdir(tmp_path)  # a PostgreSQL store's copy aside goes to the working dir
    aside = restore_store(backup, target)
    assert aside is not None and aside.parent == tmp_path
    assert stat.S_IMODE(aside.stat().st_mode) == 0o600
    kept = Store(aside)
    assert kept.has_account("AC99999999") and not kept.has_account("AC12345678")
    kept.close()
    restored = Store(target)
    assert restored.has_account("AC12345678") and not restored.has_account("AC99999999")
    assert state_of(restored) == CardState(2)
    restored.close()
    assert restore_store(backup, StoreUrl.sqlite(str(tmp_path / "new" / "a.sqlite3"))) is None
    assert state_of(Store(tmp_path / "new" / "a.sqlite3")) == CardState(2)
