"""Reading an import file (service/backend/importing.py) and comparing a row with an
account by verifiers (service/backend/enrolment.py: same_content, calls). The import
itself, on real OpenBao and both engines: tests/integration/store/test_accounts_import.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.backend.enrolment import ITEMS_PER_CALL, Enrolment, calls, same_content
from service.backend.importing import MALFORMED_CSV, MALFORMED_JSON, read_lines
from service.errors import EnrolmentRefused
from service.store.accounts import AccountRecord, StoredAccount
from service.store.identity import bind, new_salt

HEADER = "account,balance,account_number,card_last4,pin,callers\n"


def test_a_csv_is_read_row_by_row_with_its_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text(
        HEADER + "ACA,1.00,52718364,5678,7351,+15550100001; +15550100002\n"
        "\n"  # blank: skipped, but counted as a line
        "ACB,2.00,63829475,5678,7351,\n"
        "ACC,1.00\n"
        '"ACD,"x",1\n'
    )
    lines = list(read_lines(path))
    assert [(line.number, line.problem) for line in lines] == [
        (2, None),
        (4, None),
        (5, MALFORMED_CSV),
        (6, MALFORMED_CSV),
    ]
    assert lines[0].row == Enrolment(
        "ACA", "1.00", "52718364", "5678", "7351", ("+15550100001", "+15550100002")
    )
    assert lines[1].row is not None and lines[1].row.callers == ()
    assert lines[-1].position == path.stat().st_size


def test_json_lines_are_read_with_callers_as_a_list(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text(
        '{"account": "ACA", "balance": "1.00", "account_number": "52718364", '
        '"card_last4": "5678", "pin": "7351", "callers": ["+15550100001"]}\n'
        '{"account": "ACB", "balance": 1, "account_number": "1", "card_last4": '
        '"1", "pin": "1", "callers": []}\n'
        "[1, 2]\n"
        "not json at all 1234\n"
    )
    lines = list(read_lines(path))
    assert [(line.number, line.problem) for line in lines] == [
        (1, None),
        (2, MALFORMED_JSON),
        (3, MALFORMED_JSON),
        (4, MALFORMED_JSON),
    ]
    assert lines[0].row is not None and lines[0].row.callers == ("+15550100001",)


@pytest.mark.parametrize(
    ("name", "content", "why"),
    [
        ("a.txt", HEADER, "a.txt: expected a .csv or .jsonl file"),
        (
            "a.csv",
            "account,balance\n",
            "the first line must be the header account,balance,"
            "account_number,card_last4,pin,callers",
        ),
        (
            "a.csv",
            "",
            "the first line must be the header account,balance,"
            "account_number,card_last4,pin,callers",
        ),
    ],
)
def test_a_file_that_is_not_an_import_is_refused_in_one_line(
    tmp_path: Path, name: str, content: str, why: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(EnrolmentRefused) as refused:
        list(read_lines(path))
    assert str(refused.value) == why


def test_rows_are_cut_into_transit_calls_of_whole_rows() -> None:
    rows = [Enrolment("A", "1", "1", "1", "1", ("+1",) * (i % 6)) for i in range(400)]
    cut = list(calls(rows))
    assert [row for call in cut for row in call] == rows
    sizes = [sum(3 + len(row.callers) for row in call) for call in cut]
    assert max(sizes) <= ITEMS_PER_CALL and min(sizes[:-1]) > ITEMS_PER_CALL - 9
    assert 1 + 2 * 2 * ITEMS_PER_CALL < 1000  # two calls merged by the coalescer


CARD, PIN, NUMBER, CALLER = (f"vault:v1:{t}" for t in ("Y2FyZA==", "cGlu", "bnVt", "Y2Fs"))


def _record(
    balance: str = "1.00",
    *,
    card: str = CARD,
    pin: str = PIN,
    number: str = NUMBER,
    callers: tuple[str, ...] = (CALLER,),
) -> AccountRecord:
    salt = new_salt()  # a row's own, new salt: never the stored one
    return AccountRecord(
        "ACA", balance, salt, number, card, bind(salt, card), bind(salt, pin), callers, pin
    )


def test_a_row_is_compared_with_an_account_by_its_verifiers() -> None:
    salt = new_salt()
    stored = StoredAccount(
        "ACA", "1.00", salt, True, NUMBER, bind(salt, CARD), bind(salt, PIN), frozenset({CALLER})
    )
    assert same_content(stored, _record())
    assert not same_content(stored, _record("1.01"))
    assert not same_content(stored, _record(pin="vault:v1:b3RoZXI="))
    assert not same_content(stored, _record(card="vault:v1:b3RoZXI="))
    assert not same_content(stored, _record(number="vault:v1:b3RoZXI="))
    assert not same_content(stored, _record(callers=()))
    assert not same_content(stored, _record(pin="vault:v2:cGlu"))  # a later key version
    migrated = StoredAccount("ACA", "1.00", salt, False, NUMBER, CARD, PIN, frozenset({CALLER}))
    assert same_content(migrated, _record())
