"""The lookup's decision (service/backend/decision.py) on the real SQLite store, with explicit
clocks: what each outcome reads, compares, counts and remembers, in one transaction.

Verifiers here are fixed strings shaped like Transit HMACs; Vault is the integration tests'
business (tests/integration/calls/test_guessing.py and test_identification.py run the same policy
on real processes).
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from service.backend.app import http_answer
from service.backend.decision import (
    Attempt,
    Decision,
    Hmacs,
    Identification,
    LookupOutcome,
    decide,
)
from service.backend.policy import LockKind, LockoutPolicy
from service.store.accounts import Store
from service.store.ledger import CardState
from tests.support.store import put, query

NUMBER, CARD, PIN = "vault:v2:bnVtYmVy", "vault:v2:Y2FyZA==", "vault:v2:cmlnaHQ="
RIGHT = Hmacs(NUMBER, CARD, PIN)
WRONG = Hmacs(NUMBER, CARD, "vault:v2:d3Jvbmc=")
WRONG_CARD = Hmacs(NUMBER, "vault:v2:b3RoZXI=", PIN)
UNKNOWN = Hmacs("vault:v2:bm9ib2R5", CARD, PIN)
CALLER, OTHER_CALLER = "vault:v2:Y2FsbGVyLWE=", "vault:v2:Y2FsbGVyLWI="
REGISTERED = "vault:v2:cmVnaXN0ZXJlZA=="
POLICY = LockoutPolicy(
    threshold=3,
    duration=60,
    hard_limit=6,
    caller_limit=10,
    caller_window=3600,
    withheld_limit=4,
    withheld_window=600,
)
T0 = 1_000_000.0
TTL = 4 * 3600.0


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "accounts.sqlite3")
    put(s, number=NUMBER, card=CARD, pin=PIN, callers=(REGISTERED,))
    return s


class Calls:
    """Numbered CallSids, as a guesser redialling would make them."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> str:
        self.n += 1
        return f"CA{self.n:032x}"


@pytest.fixture
def new_call() -> Calls:
    return Calls()


def run(
    store: Store,
    hmacs: Hmacs | tuple[Hmacs, ...],
    at: float,
    *,
    call_sid: str,
    key: str | None = "key",
    caller: str = CALLER,
    by: Identification = Identification.ACCOUNT_NUMBER,
    withheld: bool = False,
    card_only: bool = False,
    final: bool = False,
    policy: LockoutPolicy = POLICY,
) -> Decision:
    candidates = hmacs if isinstance(hmacs, tuple) else (hmacs,)
    attempt = Attempt(call_sid, key, caller, withheld, by, candidates, card_only=card_only)
    return store.transaction(
        lambda ledger: decide(
            ledger, attempt, policy=policy, now=at, answer=http_answer, answer_ttl=TTL, final=final
        )
    )


def outcome(decision: Decision) -> LookupOutcome:
    assert decision.result is not None
    return decision.result.outcome


def card_state(store: Store) -> CardState:
    with closing(sqlite3.connect(store.path)) as db:
        row = db.execute("SELECT failures, locked_until, hard FROM card_lockout").fetchone()
    return CardState() if row is None else CardState(row[0], row[1], bool(row[2]))


def caller_rows(store: Store, caller: str = CALLER) -> int:
    with closing(sqlite3.connect(store.path)) as db:
        (n,) = db.execute(
            "SELECT COUNT(*) FROM caller_failures WHERE caller=?", (caller,)
        ).fetchone()
    return int(n)


def test_the_right_pin_is_found_and_remembered(store: Store, new_call: Calls) -> None:
    sid = new_call()
    decision = run(store, RIGHT, T0, call_sid=sid)
    assert outcome(decision) is LookupOutcome.FOUND and decision.compared
    assert decision.result is not None and decision.result.account == "AC12345678"
    assert store.answer(sid, "key", T0 + 1, TTL) == (
        200,
        json.dumps({"account": "AC12345678", "balance": "12.55"}),
    )
    assert caller_rows(store) == 0


def test_the_same_request_again_is_answered_from_memory_and_counts_nothing(
    store: Store, new_call: Calls
) -> None:
    sid = new_call()
    first = run(store, WRONG, T0, call_sid=sid)
    again = run(store, WRONG, T0 + 1, call_sid=sid)
    assert outcome(first) is LookupOutcome.NOT_FOUND and first.wrong_pin
    assert again.result is None and again.replayed == (404, '{"detail": "not found"}')
    assert card_state(store).failures == 1 and caller_rows(store) == 1


def test_wrong_pins_lock_escalate_and_end_in_a_hard_lock(store: Store, new_call: Calls) -> None:
    callers = iter(f"vault:v2:{i:04d}" for i in range(100))  # no caller limit in the way
    at = T0

    def guess(hmacs: Hmacs) -> Decision:
        return run(store, hmacs, at, call_sid=new_call(), caller=next(callers))

    first = [guess(WRONG) for _ in range(3)]
    assert [d.lock for d in first] == [None, None, LockKind.CARD]
    assert card_state(store) == CardState(3, T0 + 60)
    locked = guess(RIGHT)  # locked: the PIN is not compared, even the right one
    assert outcome(locked) is LookupOutcome.LOCKED and not locked.compared
    assert card_state(store).failures == 3  # a locked attempt counts nothing for the card

    at = T0 + 60  # the first lock is over; the count is not
    second = [guess(WRONG) for _ in range(3)]
    assert [d.lock for d in second] == [None, None, LockKind.CARD_HARD]
    assert card_state(store) == CardState(6, 0.0, hard=True)
    at = T0 + 10 * 365 * 86400
    assert outcome(guess(RIGHT)) is LookupOutcome.LOCKED


def test_the_second_lock_lasts_twice_as_long(store: Store, new_call: Calls) -> None:
    policy = LockoutPolicy(3, 60, 100, 1000, 3600, 1000, 600)
    for at in (T0, T0, T0, T0 + 60, T0 + 60, T0 + 60):
        run(store, WRONG, at, call_sid=new_call(), policy=policy)
    assert card_state(store) == CardState(6, T0 + 60 + 120)


def test_a_correct_pin_forgets_the_cards_failures_not_the_callers(
    store: Store, new_call: Calls
) -> None:
    run(store, WRONG, T0, call_sid=new_call())
    run(store, WRONG, T0, call_sid=new_call())
    assert outcome(run(store, RIGHT, T0, call_sid=new_call())) is LookupOutcome.FOUND
    assert card_state(store) == CardState()
    assert caller_rows(store) == 2  # one good card must not buy more guesses on others
    assert [run(store, WRONG, T0, call_sid=new_call()).lock for _ in range(3)] == [
        None,
        None,
        LockKind.CARD,
    ]


def test_unknown_account_number_is_a_caller_failure(store: Store, new_call: Calls) -> None:
    decision = run(store, UNKNOWN, T0, call_sid=new_call(), final=True)
    assert outcome(decision) is LookupOutcome.NOT_FOUND and not decision.compared
    assert caller_rows(store) == 1 and card_state(store) == CardState()


def test_a_wrong_card_of_a_known_account_counts_against_it(store: Store, new_call: Calls) -> None:
    decision = run(store, WRONG_CARD, T0, call_sid=new_call())
    assert outcome(decision) is LookupOutcome.NOT_FOUND and decision.wrong_pin
    assert card_state(store).failures == 1 and caller_rows(store) == 1
    assert decision.account is not None and decision.account.isalpha()  # its reference


def test_two_accounts_with_the_same_card_and_pin_each_need_their_own_number(
    store: Store, new_call: Calls
) -> None:
    other_number = "vault:v2:b3RoZXItbnVtYmVy"
    put(store, "AC2", "2.00", number=other_number, card=CARD, pin=PIN)
    verifiers = query(store, "SELECT card_verifier, pin_verifier FROM accounts")
    assert len({row[0] for row in verifiers}) == 2 and len({row[1] for row in verifiers}) == 2
    first = run(store, RIGHT, T0, call_sid=new_call())
    second = run(store, Hmacs(other_number, CARD, PIN), T0, call_sid=new_call())
    assert first.result is not None and first.result.account == "AC12345678"
    assert second.result is not None and second.result.account == "AC2"


def test_the_registered_number_finds_the_account_whose_card_matches(
    store: Store, new_call: Calls
) -> None:
    """A household's number on two accounts: the card tells them apart. A card that
    matches neither is nobody's failure but the caller's."""
    put(
        store,
        "AC2",
        "2.00",
        number="vault:v2:c2Vjb25k",
        card="vault:v2:Y2FyZDI=",
        pin="vault:v2:cGluMg==",
        callers=(REGISTERED,),
    )
    found = run(
        store,
        Hmacs(REGISTERED, "vault:v2:Y2FyZDI=", "vault:v2:cGluMg=="),
        T0,
        call_sid=new_call(),
        by=Identification.CALLER,
    )
    assert found.result is not None and found.result.account == "AC2"
    first = run(
        store, Hmacs(REGISTERED, CARD, PIN), T0, call_sid=new_call(), by=Identification.CALLER
    )
    assert first.result is not None and first.result.account == "AC12345678"
    nobody = run(
        store,
        Hmacs(REGISTERED, "vault:v2:bm9uZQ==", PIN),
        T0,
        call_sid=new_call(),
        by=Identification.CALLER,
    )
    assert outcome(nobody) is LookupOutcome.NOT_FOUND and not nobody.wrong_pin
    assert card_state(store) == CardState() and caller_rows(store) == 1
    wrong_pin = run(
        store,
        Hmacs(REGISTERED, CARD, "vault:v2:eA=="),
        T0,
        call_sid=new_call(),
        by=Identification.CALLER,
    )
    assert outcome(wrong_pin) is LookupOutcome.NOT_FOUND and wrong_pin.wrong_pin


def test_an_unregistered_or_unattested_number_finds_nothing(store: Store, new_call: Calls) -> None:
    for identity in ("vault:v2:dW5yZWdpc3RlcmVk", None):
        decision = run(
            store,
            Hmacs(identity, CARD, PIN),
            T0,
            call_sid=new_call(),
            by=Identification.CALLER,
            final=True,
        )
        assert outcome(decision) is LookupOutcome.NOT_FOUND and not decision.compared
    assert caller_rows(store) == 2 and card_state(store) == CardState()


def test_withheld_callers_share_a_bucket_with_its_own_window(store: Store, new_call: Calls) -> None:
    anonymous = "vault:v2:YW5vbnltb3Vz"
    for i in range(4):
        run(
            store, UNKNOWN, T0 + i, call_sid=new_call(), caller=anonymous, withheld=True, final=True
        )
    cut = run(store, RIGHT, T0 + 10, call_sid=new_call(), caller=anonymous, withheld=True)
    assert outcome(cut) is LookupOutcome.CALLER_CUT_OFF
    # The shared bucket's window (600 s), not the caller window (3,600 s).
    back = run(store, RIGHT, T0 + 605, call_sid=new_call(), caller=anonymous, withheld=True)
    assert outcome(back) is LookupOutcome.FOUND


def test_the_card_only_lookup_finds_a_migrated_account_and_salts_it(
    tmp_path: Path, new_call: Calls
) -> None:
    """A migrated account (unsalted verifiers, no account number): found by its card
    alone while allowed; its first success binds its verifiers to its salt and keeps the
    card-only index until an account number is set."""
    store = Store(tmp_path / "s.sqlite3")
    store._db.run(
        lambda db: db.execute(
            "INSERT INTO accounts(account, ref, balance, salt, card_verifier, pin_verifier,"
            " salted, legacy_card, lookup_version) VALUES ('AC9', 'LEGACYREF', '9.00',"
            " '0011223344556677', ?, ?, 0, ?, 2)",
            (CARD, PIN, CARD),
        ),
        write=True,
    )
    star = Hmacs(None, CARD, PIN)
    refused = run(store, star, T0, call_sid=new_call(), by=Identification.CALLER, final=True)
    assert outcome(refused) is LookupOutcome.NOT_FOUND
    found = run(store, star, T0, call_sid=new_call(), by=Identification.CALLER, card_only=True)
    assert found.result is not None and found.result.account == "AC9"
    assert found.legacy and found.upgraded
    ((card_v, pin_v, salted, legacy),) = query(
        store, "SELECT card_verifier, pin_verifier, salted, legacy_card FROM accounts"
    )
    assert (salted, legacy) == (1, CARD) and card_v != CARD and pin_v != PIN
    again = run(store, UNKNOWN, T0, call_sid=new_call(), card_only=True)  # any number
    assert again.result is not None and again.result.account == "AC9"
    assert store.set_account_number("AC9", NUMBER) is None
    assert store.legacy_accounts() == 0
    assert (
        outcome(
            run(
                store,
                star,
                T0,
                call_sid=new_call(),
                by=Identification.CALLER,
                card_only=True,
                final=True,
            )
        )
        is LookupOutcome.NOT_FOUND
    )
    assert run(store, RIGHT, T0, call_sid=new_call()).result == found.result


def test_a_caller_is_cut_off_at_the_limit_without_a_lookup(store: Store, new_call: Calls) -> None:
    decisions = [run(store, UNKNOWN, T0 + i, call_sid=new_call(), final=True) for i in range(10)]
    assert [d.caller_cut_off for d in decisions] == [False] * 9 + [True]
    cut = run(store, RIGHT, T0 + 20, call_sid=new_call())  # even the right card and PIN
    assert outcome(cut) is LookupOutcome.CALLER_CUT_OFF and not cut.compared
    assert caller_rows(store) == 10  # a cut-off call is not itself counted
    # Another number is not affected.
    assert (
        outcome(run(store, RIGHT, T0 + 20, call_sid=new_call(), caller=OTHER_CALLER))
        is LookupOutcome.FOUND
    )
    # The window slides: an hour after the first failure, one more try is allowed.
    assert outcome(run(store, RIGHT, T0 + 3600.5, call_sid=new_call())) is LookupOutcome.FOUND


def test_locked_attempts_count_for_the_caller(store: Store, new_call: Calls) -> None:
    for _ in range(3):
        run(store, WRONG, T0, call_sid=new_call(), caller=OTHER_CALLER)
    for i in range(10):
        assert outcome(run(store, RIGHT, T0 + i, call_sid=new_call())) is LookupOutcome.LOCKED
    assert outcome(run(store, RIGHT, T0 + 61, call_sid=new_call())) is LookupOutcome.CALLER_CUT_OFF


def test_a_second_lookup_in_a_call_is_refused_and_counts(store: Store, new_call: Calls) -> None:
    sid = new_call()
    assert outcome(run(store, WRONG, T0, call_sid=sid, key="first")) is LookupOutcome.NOT_FOUND
    second = run(store, RIGHT, T0 + 1, call_sid=sid, key="second")
    assert outcome(second) is LookupOutcome.SECOND_LOOKUP and not second.compared
    assert card_state(store).failures == 2 and caller_rows(store) == 2
    # Its own retry gets its own answer back and counts nothing more.
    assert run(store, RIGHT, T0 + 2, call_sid=sid, key="second").replayed == (
        409,
        '{"detail": "this call already had its lookup"}',
    )
    assert card_state(store).failures == 2


def test_requests_without_a_key_are_never_each_others_retry(store: Store, new_call: Calls) -> None:
    sid = new_call()
    assert outcome(run(store, RIGHT, T0, call_sid=sid, key=None)) is LookupOutcome.FOUND
    again = run(store, RIGHT, T0 + 1, call_sid=sid, key=None)
    assert outcome(again) is LookupOutcome.SECOND_LOOKUP
    assert card_state(store).failures == 1


def test_older_key_versions_are_asked_for_and_the_account_upgraded(
    tmp_path: Path, new_call: Calls
) -> None:
    store = Store(tmp_path / "s.sqlite3")
    v1 = Hmacs("vault:v1:bnVtYmVy", "vault:v1:Y2FyZA==", "vault:v1:cGlu")
    put(store, "AC1", "1.00", number=v1.identity, card=v1.card, pin=v1.pin)
    v2 = Hmacs("vault:v2:bnVtYmVyMg==", "vault:v2:Y2FyZDI=", "vault:v2:cGluMg==")
    sid = new_call()
    asked = run(store, v2, T0, call_sid=sid)
    assert asked.need_versions == (1,) and asked.result is None
    assert store.answer(sid, "key", T0, TTL) is None and caller_rows(store) == 0  # no write
    found = run(store, (v2, v1), T0, call_sid=sid)
    assert outcome(found) is LookupOutcome.FOUND and found.upgraded
    assert store.version_counts() == {2: 2}  # its card and PIN, and its account number
    assert outcome(run(store, v2, T0, call_sid=new_call())) is LookupOutcome.FOUND
    # On the last pass an unknown account is unknown, whatever versions were not tried.
    v3 = Hmacs("vault:v3:eg==", "vault:v3:eA==", "vault:v3:eQ==")
    assert run(store, v3, T0, call_sid=new_call()).need_versions == (2,)
    assert outcome(run(store, v3, T0, call_sid=new_call(), final=True)) is LookupOutcome.NOT_FOUND
