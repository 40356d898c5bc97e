"""The backend's HTTP edge and the lookup decision in process: Starlette's TestClient, a fake
Transit (tests/support/fake_transit.py) and a real SQLite store in tmp_path.

What is proved here: who may ask (bearer), what may be asked (media type, schema, never
echoing a value), which outcome each lookup reaches and the status it maps to, that the
outcome shows on the access line and in ``ivr_lookups_total``, and that a retry gets the
remembered answer without counting twice. Real Vault decrypts are the integration tests'
business (tests/integration/: calls/test_backend.py, calls/test_guessing.py,
keys/test_rotation.py).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families
from starlette.requests import Request

from service.backend.app import ANSWERS, create_backend_app, request_budget
from service.backend.decision import LookupOutcome
from service.backend.enrolment import Enrolment, make_records
from service.backend.keycheck import CANARY_INPUT
from service.backend.policy import LockKind
from service.devtools.caller import new_call_sid
from service.errors import VaultTimeout
from service.settings import Secret, Settings
from service.store.accounts import Store
from service.web.metrics import vault_error_kinds
from tests.support.fake_transit import FakeTransit, fake_session

with warnings.catch_warnings():  # Starlette would have httpx2; the users chose httpx
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

BEARER = "backend-bearer-for-tests"
AUTH = {"Authorization": f"Bearer {BEARER}"}
NUMBER, CARD, PIN = "31415926", "1234", "4321"
CALLER = "+15005550006"
THRESHOLD, HARD_LIMIT, CALLER_LIMIT = 3, 6, 8


@dataclass
class Backend:
    client: TestClient
    transit: FakeTransit

    def ciphertexts(
        self,
        call_sid: str,
        card: str = CARD,
        pin: str = PIN,
        caller: str = CALLER,
        number: str | None = NUMBER,
    ) -> dict[str, str]:
        body = {
            "call_sid": call_sid,
            "card_last4": self.transit.seal(card.encode(), f"{call_sid}:card_last4".encode()),
            "pin": self.transit.seal(pin.encode(), f"{call_sid}:pin".encode()),
            "caller": self.transit.seal(caller.encode(), f"{call_sid}:caller".encode()),
            "issued": str(int(time.time())),
        }
        if number is not None:
            body["account_number"] = self.transit.seal(
                number.encode(), f"{call_sid}:account_number".encode()
            )
        return body

    def lookup(
        self, body: object, *, key: str | None = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        extra = {"Idempotency-Key": key} if key else {}
        response = self.client.post(
            "/v1/lookup", json=body, headers={**AUTH, **extra, **(headers or {})}
        )
        # TestClient is typed against httpx2 (not installed), so mypy sees Any here.
        assert isinstance(response, httpx.Response)
        return response

    def metric(self, name: str, **labels: str) -> float:
        for family in text_string_to_metric_families(self.client.get("/metrics").text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return 0.0


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[Backend]:
    transit = FakeTransit()
    settings = Settings(
        vault_role_id=Secret("role"),
        vault_secret_id=Secret("secret"),
        backend_token=Secret(BEARER),
        store_path=str(tmp_path / "s.sqlite3"),
        lockout_threshold=THRESHOLD,
        lockout_hard_limit=HARD_LIMIT,
        caller_failure_limit=CALLER_LIMIT,
    )
    (canary,) = asyncio.run(transit.hmac([CANARY_INPUT]))
    records = asyncio.run(
        make_records(transit, [Enrolment("AC12345678", "12.55", NUMBER, CARD, PIN, (CALLER,))])
    )
    store = Store(settings.store_path)
    store.add_canary(canary, 0.0)  # as enrolment records it
    assert store.add_accounts(records) == [None]
    store.close()
    app = create_backend_app(settings, transit_session=fake_session(transit))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Backend(client, transit)


def access_lines(logs: Sequence[Mapping[str, Any]]) -> list[tuple[object, object]]:
    return [
        (line.get("outcome"), line["status_code"])
        for line in logs
        if line.get("event") == "request" and line.get("path") == "/v1/lookup"
    ]


# -- who and what may ask ----------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", f"Basic {BEARER}", BEARER, "Bearer ", f"Bearer {BEARER}x"],
)
def test_without_the_bearer_token_401(backend: Backend, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = backend.client.post(
        "/v1/lookup", json=backend.ciphertexts(new_call_sid()), headers=headers
    )
    assert (response.status_code, response.content) == (401, b"")
    assert response.headers["www-authenticate"] == "Bearer"
    assert backend.metric("ivr_lookups_total", outcome="found") == 0


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "", "application/jsonx"]
)
def test_anything_but_json_is_415(backend: Backend, content_type: str) -> None:
    response = backend.client.post(
        "/v1/lookup", content=b'{"call_sid": "x"}', headers={**AUTH, "Content-Type": content_type}
    )
    assert response.status_code == 415


def test_json_with_parameters_is_json(backend: Backend) -> None:
    response = backend.client.post(
        "/v1/lookup",
        content=httpx.Request("POST", "/", json=backend.ciphertexts(new_call_sid())).content,
        headers={**AUTH, "Content-Type": "Application/JSON; charset=utf-8"},
    )
    assert response.status_code == 200


MARK = "98765"  # digits that must never come back in an answer


@pytest.mark.parametrize(
    "body",
    [
        {"call_sid": f"CA{MARK}", "card_last4": f"vault:v1:{MARK}==", "pin": MARK},
        {"call_sid": new_call_sid(), "card_last4": MARK, "pin": f"{MARK}:{MARK}"},
        {"call_sid": new_call_sid(), "card_last4": int(MARK), "pin": [MARK]},
        {"call_sid": new_call_sid(), MARK: MARK},
        {
            "call_sid": new_call_sid(),
            "card_last4": "vault:v1:QUJD",
            "pin": "vault:v1:QUJD",
            f"pin{MARK}": "x",
        },
        [MARK],
        MARK,
    ],
)
def test_schema_problems_are_422_and_never_echo_a_value(
    backend: Backend,
    body: object,
) -> None:
    response = backend.lookup(body)
    assert response.status_code == 422
    problems = response.json()["detail"]
    assert problems and all(set(p) == {"loc", "msg"} for p in problems)
    assert MARK not in response.text
    assert backend.metric("ivr_requests_total", route="/v1/lookup", outcome="invalid") == 1


@pytest.mark.parametrize("depth", [1_000, 2_500])
def test_deeply_nested_json_is_422_not_a_500(backend: Backend, depth: int) -> None:
    """json's decoder raised RecursionError past ~1,000 levels: a 500 with a traceback.
    Both bodies stay under MAX_BODY_BYTES (16 KB), so they reach the parser."""
    for body in (b"[" * 3 * depth + b"]" * 3 * depth, b'{"a":' * depth + b"1" + b"}" * depth):
        response = backend.client.post(
            "/v1/lookup", content=body, headers={**AUTH, "Content-Type": "application/json"}
        )
        assert response.status_code == 422
        assert response.json()["detail"] in (
            [{"loc": "body", "msg": "nested too deeply"}],
            [{"loc": "body", "msg": "expected a JSON object"}],
        )


def test_an_invalid_idempotency_key_is_422(backend: Backend) -> None:
    response = backend.lookup(backend.ciphertexts(new_call_sid()), key="k" * 201)
    assert response.status_code == 422
    assert response.json() == {"detail": [{"loc": "header:Idempotency-Key", "msg": "invalid"}]}


# -- the outcomes, their statuses, their access line and their metric --------------------


def test_every_outcome_has_exactly_one_answer() -> None:
    assert set(ANSWERS) == set(LookupOutcome)


def test_found(backend: Backend) -> None:
    with structlog.testing.capture_logs() as logs:
        response = backend.lookup(backend.ciphertexts(new_call_sid()))
    assert (response.status_code, response.json()) == (
        200,
        {"account": "AC12345678", "balance": "12.55"},
    )
    assert access_lines(logs) == [("found", 200)]
    assert backend.metric("ivr_lookups_total", outcome="found") == 1


@pytest.mark.parametrize(("card", "pin"), [("5678", PIN), (CARD, "0000")])
def test_unknown_card_or_wrong_pin_is_the_same_404(
    backend: Backend,
    card: str,
    pin: str,
) -> None:
    with structlog.testing.capture_logs() as logs:
        response = backend.lookup(backend.ciphertexts(new_call_sid(), card, pin))
    assert (response.status_code, response.json()) == (404, {"detail": "not found"})
    assert access_lines(logs) == [("not_found", 404)]
    assert backend.metric("ivr_lookups_total", outcome="not_found") == 1


def test_locked_after_the_threshold_of_wrong_pins(backend: Backend) -> None:
    for n in range(THRESHOLD):  # each from another number: the caller limit stays out of it
        assert (
            backend.lookup(
                backend.ciphertexts(new_call_sid(), pin="0000", caller=f"+1500555{n:04d}")
            ).status_code
            == 404
        )
    assert backend.metric("ivr_lockouts_total", kind="card") == 1
    assert backend.metric("ivr_wrong_pins_total") == THRESHOLD
    with structlog.testing.capture_logs() as logs:
        response = backend.lookup(backend.ciphertexts(new_call_sid()))  # the right PIN
    assert (response.status_code, response.json()) == (423, {"detail": "locked"})
    assert access_lines(logs) == [("locked", 423)]
    assert backend.metric("ivr_lookups_total", outcome="locked") == 1


def test_a_ciphertext_of_another_call_is_undecryptable_and_logged_as_such(
    backend: Backend,
) -> None:
    """The access line and ivr_lookups_total say ``undecryptable`` (it used to be
    overwritten with ``rejected`` before it was logged)."""
    body = {**backend.ciphertexts(new_call_sid()), "call_sid": new_call_sid()}
    with structlog.testing.capture_logs() as logs:
        response = backend.lookup(body)
    assert (response.status_code, response.json()) == (
        422,
        {"detail": "ciphertext could not be decrypted for this call"},
    )
    assert access_lines(logs) == [("undecryptable", 422)]
    assert backend.metric("ivr_lookups_total", outcome="undecryptable") == 1
    assert backend.metric("ivr_requests_total", route="/v1/lookup", outcome="undecryptable") == 1


@pytest.mark.parametrize(("card", "pin"), [("12345", PIN), (CARD, "43a1"), ("", "")])
def test_decrypted_entries_that_are_not_4_digits_are_malformed(
    backend: Backend, card: str, pin: str
) -> None:
    with structlog.testing.capture_logs() as logs:
        response = backend.lookup(backend.ciphertexts(new_call_sid(), card, pin))
    assert (response.status_code, response.json()) == (
        422,
        {"detail": "decrypted values are not entries of the expected number of digits"},
    )
    assert access_lines(logs) == [("malformed", 422)]
    assert backend.metric("ivr_lookups_total", outcome="malformed") == 1


@pytest.mark.parametrize("number", ["1234567", "123456789", "1234567a"])
def test_a_decrypted_account_number_of_another_length_is_malformed(
    backend: Backend, number: str
) -> None:
    response = backend.lookup(backend.ciphertexts(new_call_sid(), number=number))
    assert response.status_code == 422


def test_the_registered_path_and_its_refusals(backend: Backend) -> None:
    """Identified by the registered caller number; an unregistered number, a withheld
    one, or both identifications at once: no account, or a precise 422."""
    registered = {**backend.ciphertexts(new_call_sid(), number=None), "registered": True}
    assert backend.lookup(registered).json() == {"account": "AC12345678", "balance": "12.55"}
    for caller in ("+15005550007", "anonymous"):
        other = {
            **backend.ciphertexts(new_call_sid(), number=None, caller=caller),
            "registered": True,
        }
        assert backend.lookup(other).status_code == 404
    both = {**backend.ciphertexts(new_call_sid()), "registered": True}
    response = backend.lookup(both)
    assert response.status_code == 422 and "one identification" in response.text
    for bad in ({"registered": "yes"}, {"stir_verstat": "A B"}, {"stir_verstat": 7}):
        assert backend.lookup({**backend.ciphertexts(new_call_sid()), **bad}).status_code == 422


def test_one_lookup_is_one_decrypt_one_hmac_and_one_thread_hop(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What docs/security.md states: per lookup, on either path, one Transit decrypt and
    one Transit HMAC (batches), and one hop to the store's threads (the decision's
    transaction, which reads the remembered answers too); a retry the same."""
    backend.lookup(backend.ciphertexts(new_call_sid()), key="warm-up")  # canary recorded
    counts: Counter[str] = Counter()
    transit = backend.transit
    for name in ("decrypt", "hmac"):
        original = getattr(transit, name)

        async def counted(
            *args: Any, _original: Any = original, _name: str = name, **kwargs: Any
        ) -> Any:
            counts[_name] += 1
            return await _original(*args, **kwargs)

        monkeypatch.setattr(transit, name, counted)
    submit = transit.executor.submit

    def hop(*args: Any, **kwargs: Any) -> Any:
        counts["thread hops"] += 1
        return submit(*args, **kwargs)

    monkeypatch.setattr(transit.executor, "submit", hop)
    bodies = [
        backend.ciphertexts(new_call_sid()),
        {**backend.ciphertexts(new_call_sid(), number=None), "registered": True},
    ]
    for n, body in enumerate(bodies):
        counts.clear()
        assert backend.lookup(body, key=f"key-{n}").status_code == 200
        assert counts == {"decrypt": 1, "hmac": 1, "thread hops": 1}, counts
        counts.clear()
        with structlog.testing.capture_logs() as logs:
            assert backend.lookup(body, key=f"key-{n}").status_code == 200
        assert access_lines(logs) == [("replayed", 200)]
        assert counts == {"decrypt": 1, "hmac": 1, "thread hops": 1}, counts


def test_vault_unavailable_is_503_and_nothing_is_decided(backend: Backend) -> None:
    backend.transit.fail_with = VaultTimeout("transit decrypt: no answer from Vault in time")
    response = backend.lookup(backend.ciphertexts(new_call_sid()))
    assert (response.status_code, response.json()) == (503, {"detail": "vault unavailable"})
    assert backend.metric("ivr_vault_errors_total", kind="timeout") == 1
    assert sum(backend.metric("ivr_lookups_total", outcome=o) for o in LookupOutcome) == 0


# -- a retry of the same request ---------------------------------------------------------


@pytest.mark.parametrize("failure", ["vault", "canaries", "undecryptable"])
def test_a_retry_gets_its_remembered_answer_when_vault_cannot_decide_it(
    backend: Backend, failure: str
) -> None:
    """The remembered answer is read in the decision's transaction, after Vault: a retry
    that never gets there (Vault away, its canaries not reproduced, the entries no longer
    decrypting) still gets the answer it was given, from a read of its own; a request
    without a remembered answer gets the failure's own answer."""
    sid = new_call_sid()
    body = backend.ciphertexts(sid, pin="0000")
    first = backend.lookup(body, key="token-1")
    assert (first.status_code, first.json()) == (404, {"detail": "not found"})
    lookup = backend.client.app.state.lookup  # type: ignore[attr-defined]
    if failure == "vault":
        backend.transit.fail_with = VaultTimeout("transit decrypt: no answer from Vault in time")
        expected, outcome = (503, {"detail": "vault unavailable"}), "vault_unavailable"
    elif failure == "canaries":
        lookup.keys._last = replace(lookup.keys._last, mismatched=(1,))
        lookup.keys._checked_at = lookup.keys.clock()
        expected, outcome = (503, {"detail": "vault unavailable"}), "vault_unavailable"
    else:
        body = {**body, "pin": backend.transit.seal(b"0000", b"another call:pin")}
        expected = (422, {"detail": "ciphertext could not be decrypted for this call"})
        outcome = "undecryptable"
    with structlog.testing.capture_logs() as logs:
        again = backend.lookup(body, key="token-1")
        other = backend.lookup(body, key="token-2")
    assert (again.status_code, again.json()) == (404, {"detail": "not found"})
    assert (other.status_code, other.json()) == expected
    assert access_lines(logs) == [("replayed", 404), (outcome, expected[0])]
    assert backend.metric("ivr_lookups_total", outcome="not_found") == 1  # decided once


def test_a_replay_gets_the_remembered_answer(backend: Backend) -> None:
    sid = new_call_sid()
    first = backend.lookup(backend.ciphertexts(sid), key="token-1")
    with structlog.testing.capture_logs() as logs:
        again = backend.lookup(backend.ciphertexts(sid), key="token-1")
    assert (
        (again.status_code, again.json())
        == (first.status_code, first.json())
        == (200, {"account": "AC12345678", "balance": "12.55"})
    )
    assert access_lines(logs) == [("replayed", 200)]
    assert backend.metric("ivr_lookups_total", outcome="found") == 1  # decided once


def test_a_replayed_wrong_pin_counts_once(backend: Backend) -> None:
    """THRESHOLD - 1 distinct wrong PINs, each sent twice: no lock. Had a replay counted,
    the card would be locked before the last distinct one."""
    for attempt in range(THRESHOLD - 1):
        sid = new_call_sid()
        for _ in range(2):
            response = backend.lookup(backend.ciphertexts(sid, pin="0000"), key=f"t{attempt}")
            assert response.status_code == 404
    assert backend.metric("ivr_lockouts_total", kind="card") == 0
    assert backend.metric("ivr_wrong_pins_total") == THRESHOLD - 1
    assert backend.lookup(backend.ciphertexts(new_call_sid())).status_code == 200


def test_the_hard_limit_holds_until_an_unlock(backend: Backend, tmp_path: Path) -> None:
    def wrong(n: int) -> int:
        return backend.lookup(
            backend.ciphertexts(new_call_sid(), pin="0000", caller=f"+1500555{n:04d}")
        ).status_code

    assert [wrong(n) for n in range(THRESHOLD)] == [404] * THRESHOLD
    store = Store(tmp_path / "s.sqlite3")
    try:
        # The first lock ends; the count does not: THRESHOLD more wrong PINs lock it for good.
        with closing(sqlite3.connect(store.path)) as db, db:
            db.execute("UPDATE card_lockout SET locked_until = 0")
        assert [wrong(n) for n in range(THRESHOLD, HARD_LIMIT)] == [404] * THRESHOLD
        assert backend.metric("ivr_lockouts_total", kind="card_hard") == 1
        assert backend.lookup(backend.ciphertexts(new_call_sid())).status_code == 423
        store.unlock("AC12345678")
        assert backend.lookup(backend.ciphertexts(new_call_sid())).status_code == 200
    finally:
        store.close()


def test_a_caller_number_is_cut_off_after_its_limit(backend: Backend) -> None:
    for n in range(CALLER_LIMIT):  # unknown accounts: none is locked on the way
        assert (
            backend.lookup(backend.ciphertexts(new_call_sid(), number=f"9{n:07d}")).status_code
            == 404
        )
    assert backend.metric("ivr_lockouts_total", kind="caller") == 1
    with structlog.testing.capture_logs() as logs:
        cut = backend.lookup(backend.ciphertexts(new_call_sid()))  # the right card and PIN
    assert (cut.status_code, cut.json()) == (
        429,
        {"detail": "too many failed lookups from this caller"},
    )
    assert access_lines(logs) == [("caller_cut_off", 429)]
    assert (
        backend.lookup(backend.ciphertexts(new_call_sid(), caller="+15005550007")).status_code
        == 200
    )
    assert backend.metric("ivr_lockouts_total", kind="card") == 0


def test_a_second_lookup_in_one_call_is_409_and_a_failure(backend: Backend) -> None:
    sid = new_call_sid()
    assert backend.lookup(backend.ciphertexts(sid, pin="0000"), key="one").status_code == 404
    with structlog.testing.capture_logs() as logs:
        second = backend.lookup(backend.ciphertexts(sid), key="two")  # the right PIN
    assert (second.status_code, second.json()) == (
        409,
        {"detail": "this call already had its lookup"},
    )
    assert access_lines(logs) == [("second_lookup", 409)]
    assert backend.metric("ivr_wrong_pins_total") == 1  # the second PIN was not compared
    # It counted as the card's second failure: one more wrong PIN locks it.
    assert backend.lookup(backend.ciphertexts(new_call_sid(), pin="0000")).status_code == 404
    assert backend.metric("ivr_lockouts_total", kind="card") == 1


def test_every_closed_label_is_exported_at_zero_from_the_start(backend: Backend) -> None:
    """Before any lookup, each outcome, lockout kind and Vault error kind is a series at 0:
    the alert rules and the dashboard see it on a fresh start, not "no data"."""
    samples = {
        (s.name, tuple(s.labels.items())): s.value
        for family in text_string_to_metric_families(backend.client.get("/metrics").text)
        for s in family.samples
    }
    expected = (
        [("ivr_lookups_total", (("outcome", o.value),)) for o in LookupOutcome]
        + [("ivr_lockouts_total", (("kind", k.value),)) for k in LockKind]
        + [("ivr_vault_errors_total", (("kind", k),)) for k in vault_error_kinds()]
    )
    assert {key: samples.get(key) for key in expected} == dict.fromkeys(expected, 0.0)
    assert {"timeout", "sealed", "forbidden", "unavailable"} <= set(vault_error_kinds())


# -- the request budget (docs/past-one-machine.md, silent faults) ---------------------


@pytest.mark.parametrize(
    ("header", "budget"),
    [
        (None, 2.5),
        ("1.25", 1.25),
        ("0.001", 0.001),
        ("9", 2.5),
        ("inf", 2.5),
        ("-1", 0.0),
        ("0", 0.0),
        ("nan", 2.5),
        ("soon", 2.5),
        ("", 2.5),
        ("1" * 17, 2.5),
        ("1e-3", 0.001),
    ],
)
def test_the_budget_is_the_webhooks_within_the_backends_own(
    header: str | None, budget: float
) -> None:
    scope = {
        "type": "http",
        "headers": [] if header is None else [(b"x-request-budget", header.encode())],
    }
    assert request_budget(Request(scope), Settings()) == budget


def test_a_lookup_with_no_budget_left_decides_nothing(backend: Backend) -> None:
    call_sid = new_call_sid()
    spent = backend.lookup(
        backend.ciphertexts(call_sid, pin="9999"), key="k1", headers={"X-Request-Budget": "0"}
    )
    assert spent.status_code == 503
    assert spent.json() == {"detail": "request budget spent"}
    # Nothing was decided: no wrong PIN counted, and the retry on a replica with time
    # left decides it, once.
    assert backend.metric("ivr_wrong_pins_total") == 0
    assert (
        backend.lookup(
            backend.ciphertexts(call_sid, pin="9999"), key="k1", headers={"X-Request-Budget": "1.5"}
        ).status_code
        == 404
    )
    assert backend.metric("ivr_wrong_pins_total") == 1
