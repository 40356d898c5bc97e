"""Enrolling accounts: verifiers made by Transit HMAC, bound to each account, stored;
digits never stored. The one place enrolment's rules live (docs/security.md, identification);
``accounts add``,
``accounts update --set-account-number`` and any bulk import go through it.

The API, in the order a caller uses it:

- :class:`Enrolment`: one account as an operator gives it (digits in memory only).
- :func:`problem`: the checks that need neither Vault nor the store (the label, the amount,
  the digits, the caller numbers, the account number against the label, a weak PIN): one
  plain phrase that never quotes a digit, or None.
- :func:`make_records`: Transit's HMACs of many rows, in batches (``batch_input``) of
  whole rows, at most :data:`ITEMS_PER_CALL` inputs per Transit call, then bound to fresh
  salts.
- :meth:`~service.store.accounts.Store.add_accounts`: the store's checks (label, account
  number, a caller number with the same last-4 on another account) and the writes, one
  transaction per batch.
- :func:`enrol`: all of it for a batch, with the ``ivr-lookup`` canary check; per row,
  None or the refusal line.

Every enrolment refuses a weak PIN (:mod:`.pin_rules`), with one exception:
:func:`seed_demo`, the tutorial's demo account, whose PIN 4321 is itself weak. Only
``make run`` and the dev compose seed it; nothing meant for production does.

Before it writes, enrolment checks the store's ``ivr-lookup`` canaries against this Vault
(:mod:`service.backend.keycheck`): an account added under a Vault that cannot reproduce
the others would work while every older one silently failed. It records the canary of the
version it uses, if that version is new to the store.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from service.backend.keycheck import CANARY_INPUT, Hmac, KeyCheck, check_keys
from service.backend.pin_rules import weakness
from service.errors import EnrolmentRefused
from service.formats import CARD_DIGITS, PIN_DIGITS, is_digits
from service.money import parse_balance
from service.settings import Settings
from service.store.accounts import AccountRecord, Refusal, Store, StoredAccount
from service.store.identity import (
    bind,
    card_input,
    matches,
    new_salt,
    new_salts,
    number_input,
    pin_input,
    registered_input,
)
from service.vault.client import VaultClient
from service.vault.session import transit_session
from service.vault.transit import Transit
from service.web.metrics import Metrics

T = TypeVar("T")

DEMO_ACCOUNT = ("AC12345678", "12.55")
DEMO_CARD, DEMO_PIN = "1234", "4321"  # the tutorial's test account
# The demo's account number (not the label's digits), and the caller number registered on
# it: the simulator's default From (Twilio's test number), so that both paths work.
DEMO_ACCOUNT_NUMBER = "31415926"
DEMO_CALLER = "+15005550006"

# Inputs per Transit HMAC call, whole rows only. The listener refuses a request of more
# than 1,000 JSON strings (max_request_json_strings, OpenBao's listener default); an HMAC batch
# is 1 + 2 per input, and the coalescer may merge two calls at the latest version into one
# (service/vault/coalescer.py, max_in_flight=2): 1 + 2 * 2 * 240 = 961 strings at most.
ITEMS_PER_CALL = 240
MAX_CALLERS = 5

LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
AMOUNT = re.compile(r"[0-9]{1,12}(\.[0-9]{1,2})?")
E164 = re.compile(r"\+[1-9][0-9]{1,14}")
BAD_AMOUNT = "balance: expected an amount such as 12.55"

REFUSALS = {
    Refusal.LABEL_EXISTS: "account {account} already exists; change it with "
    "`ivr-vault accounts update`",
    Refusal.NUMBER_ENROLLED: "that account number is already enrolled on another account",
    Refusal.CALLER_SAME_CARD: "a caller number is already registered on another account "
    "with the same card last-4 (the two could not be told apart)",
    Refusal.NO_ACCOUNT: "no account {account}",
}


@dataclass(frozen=True)
class Enrolment:
    """One account to enrol. ``callers``: E.164 numbers registered on it."""

    account: str
    balance: str
    account_number: str
    last4: str
    pin: str
    callers: tuple[str, ...] = ()

    def __repr__(self) -> str:  # never the digits, should one be logged or printed
        return f"Enrolment(account={self.account!r}, callers={len(self.callers)})"


def label_digits(label: str) -> str:
    return "".join(c for c in label if c.isascii() and c.isdigit())


def number_problem(account: str, number: str, settings: Settings) -> str | None:
    digits = settings.account_number_digits
    if not is_digits(number, digits):
        return f"account number: expected exactly {digits} digits"
    if number == label_digits(account):
        return (
            "account number: must not be the digits of the account's label (the "
            "label is read back to callers; the account number is a secret)"
        )
    return None


def malformed(row: Enrolment, settings: Settings) -> str | None:
    """What is wrong with the shape of ``row`` as typed or read (``accounts add`` calls it
    bad input); None when every entry is well formed. Never quotes a digit of it."""
    if not LABEL.fullmatch(row.account):
        return "account: expected letters, digits, '.', '_' or '-' (at most 64)"
    if not AMOUNT.fullmatch(row.balance):
        return BAD_AMOUNT
    if not is_digits(row.account_number, settings.account_number_digits):
        return f"account number: expected exactly {settings.account_number_digits} digits"
    if not is_digits(row.last4, CARD_DIGITS):
        return f"card last-4: expected exactly {CARD_DIGITS} digits"
    if not is_digits(row.pin, PIN_DIGITS):
        return f"PIN: expected exactly {PIN_DIGITS} digits"
    if len(row.callers) > MAX_CALLERS:
        return f"caller numbers: at most {MAX_CALLERS}"
    if any(not E164.fullmatch(c) for c in row.callers):
        return "caller number: expected E.164 (+ then up to 15 digits)"
    return None


def problem(row: Enrolment, settings: Settings, *, check_pin: bool = True) -> str | None:
    """Why ``row`` cannot be enrolled as given, before Vault or the store; None if it
    can. Never quotes a digit of it. ``check_pin=False``: the demo account's exception
    (its weak PIN, and its tutorial balance whatever BALANCE_CURRENCY says)."""
    why = malformed(row, settings) or number_problem(row.account, row.account_number, settings)
    if why is not None:
        return why
    if check_pin:
        try:
            parse_balance(row.balance, settings.balance_currency)  # JPY: 1255, never 12.55
        except ValueError as exc:
            return str(exc)
        weak = weakness(row.pin)
        if weak is not None:
            return f"PIN refused: {weak}; choose another"
    return None


def row_inputs(row: Enrolment) -> list[bytes]:
    """What Transit HMACs for one row, in this order: account number, card, PIN, callers."""
    return [
        number_input(row.account_number),
        card_input(row.last4),
        pin_input(row.last4, row.pin),
        *map(registered_input, row.callers),
    ]


def calls(rows: Sequence[Enrolment]) -> Iterator[Sequence[Enrolment]]:
    """``rows`` cut into Transit calls of whole rows, at most :data:`ITEMS_PER_CALL`
    inputs each."""
    start, items = 0, 0
    for end, row in enumerate(rows):
        size = 3 + len(row.callers)
        if items + size > ITEMS_PER_CALL and end > start:
            yield rows[start:end]
            start, items = end, 0
        items += size
    if start < len(rows):
        yield rows[start:]


async def make_records(
    transit: Hmac,
    rows: Sequence[Enrolment],
    *,
    key_version: int | None = None,
    parallel: int = 1,
) -> list[AccountRecord]:
    """The verifiers of ``rows`` (already checked by :func:`problem`): Transit HMACs of
    whole rows in batches, bound to a fresh salt per account. With ``key_version`` (the
    latest, as the caller learnt it), calls skip the coalescer and up to ``parallel`` run
    at once (an import); without, one at a time (the coalescer may merge two)."""
    gate = asyncio.Semaphore(parallel if key_version is not None else 1)

    async def made(chunk: Sequence[Enrolment]) -> list[AccountRecord]:
        async with gate:
            outputs = iter(
                await transit.hmac(
                    [item for row in chunk for item in row_inputs(row)], key_version=key_version
                )
            )
        records = []
        for row, salt in zip(chunk, new_salts(len(chunk)), strict=True):
            number_v, card_v, pin_v = next(outputs), next(outputs), next(outputs)
            callers = tuple(next(outputs) for _ in row.callers)
            records.append(
                AccountRecord(
                    row.account,
                    row.balance,
                    salt,
                    number_v,
                    card_v,
                    bind(salt, card_v),
                    bind(salt, pin_v),
                    callers,
                    pin_v,
                )
            )
        return records

    done = await asyncio.gather(*(made(chunk) for chunk in calls(rows)))
    return [record for chunk in done for record in chunk]


def same_content(stored: StoredAccount, record: AccountRecord) -> bool:
    """Whether ``record`` (a row as Transit HMACed it) is what ``stored`` holds: the
    identifiers compared as they are, the card and PIN recomputed with the stored salt,
    the balance as text. No digit is needed: the store keeps none. A stored account whose
    verifiers are at an older ``ivr-lookup`` version than the row's compares as different
    (its verifiers cannot be recomputed without Transit at that version)."""
    return (
        stored.balance == record.balance
        and stored.number_verifier == record.number_verifier
        and matches(stored.card_verifier, stored.salt, record.card_hmac, salted=stored.salted)
        and matches(stored.pin_verifier, stored.salt, record.pin_hmac, salted=stored.salted)
        and stored.callers == frozenset(record.callers)
    )


def enrol(
    settings: Settings,
    rows: Sequence[Enrolment],
    *,
    check_pin: bool = True,
    vault: VaultClient | None = None,
) -> list[str | None]:
    """Enrol ``rows``: per row, None when written, else the one line that refuses it
    (nothing of that row written). Runs with the backend identity (HMAC with
    ``ivr-lookup``), or an operator token. Raises
    :class:`~service.errors.LookupKeyMismatch` when this Vault cannot reproduce the
    store's canaries: then nothing is written."""
    lines: list[str | None] = [problem(row, settings, check_pin=check_pin) for row in rows]
    todo = [i for i, line in enumerate(lines) if line is None]
    if not todo:
        return lines
    store = Store(settings.store)
    try:

        async def made() -> tuple[list[AccountRecord], str]:
            async with transit_session(settings, Metrics(), threads=2, vault=vault) as transit:
                await check_canaries(transit, settings, store)
                (canary,) = await transit.hmac([CANARY_INPUT])
                return await make_records(transit, [rows[i] for i in todo]), canary

        records, canary = asyncio.run(made())
        store.add_canary(canary, time.time())
        for i, refusal in zip(todo, store.add_accounts(records), strict=True):
            if refusal is not None:
                lines[i] = REFUSALS[refusal].format(account=rows[i].account)
    finally:
        store.close()
    return lines


def add_account(settings: Settings, row: Enrolment, *, vault: VaultClient | None = None) -> None:
    """Enrol one account; :class:`EnrolmentRefused` with the line that says why not."""
    (line,) = enrol(settings, [row], vault=vault)
    if line is not None:
        raise EnrolmentRefused(line)


def set_account_number(
    settings: Settings, account: str, number: str, *, vault: VaultClient | None = None
) -> None:
    """Give ``account`` its account number (which ends its card-only lookup);
    :class:`EnrolmentRefused` with the line that says why not."""
    why = number_problem(account, number, settings)
    if why is not None:
        raise EnrolmentRefused(why)
    store = Store(settings.store)
    try:

        async def made() -> str:
            async with transit_session(settings, Metrics(), threads=2, vault=vault) as transit:
                await check_canaries(transit, settings, store)
                (number_v,) = await transit.hmac([number_input(number)])
                return number_v

        refusal = store.set_account_number(account, asyncio.run(made()))
    finally:
        store.close()
    if refusal is not None:
        raise EnrolmentRefused(REFUSALS[refusal].format(account=account))


CARD_MISMATCH = (
    "card last-4: not the account's card (a new card: `ivr-vault accounts update --change-card`)"
)


def _with_transit(
    settings: Settings,
    store: Store,
    work: Callable[[Transit], Awaitable[T]],
    *,
    vault: VaultClient | None = None,
    threads: int = 2,
) -> T:
    """``work`` with a Transit session, once this Vault reproduces the store's canaries."""

    async def run() -> T:
        async with transit_session(settings, Metrics(), threads=threads, vault=vault) as transit:
            await check_canaries(transit, settings, store)
            return await work(transit)

    return asyncio.run(run())


def _existing(store: Store, account: str) -> StoredAccount:
    stored = store.stored([account]).get(account)
    if stored is None:
        raise EnrolmentRefused(REFUSALS[Refusal.NO_ACCOUNT].format(account=account))
    return stored


def change_card(
    settings: Settings,
    account: str,
    last4: str,
    pin: str,
    *,
    new_card: bool,
    vault: VaultClient | None = None,
) -> None:
    """A PIN reset (``new_card`` False: ``last4`` must be the account's card) or a card
    change (a new last-4 and PIN): the card and PIN verifiers re-made, with a new salt.
    :class:`EnrolmentRefused` with the line that says why not."""
    if not is_digits(last4, CARD_DIGITS):
        raise EnrolmentRefused(f"card last-4: expected exactly {CARD_DIGITS} digits")
    if not is_digits(pin, PIN_DIGITS):
        raise EnrolmentRefused(f"PIN: expected exactly {PIN_DIGITS} digits")
    weak = weakness(pin)
    if weak is not None:
        raise EnrolmentRefused(f"PIN refused: {weak}; choose another")
    store = Store(settings.store)
    try:
        stored = _existing(store, account)
        card_h, pin_h = _with_transit(
            settings,
            store,
            lambda transit: transit.hmac([card_input(last4), pin_input(last4, pin)]),
            vault=vault,
        )
        if not new_card and not matches(
            stored.card_verifier, stored.salt, card_h, salted=stored.salted
        ):
            raise EnrolmentRefused(CARD_MISMATCH)
        salt = new_salt()
        refusal = store.set_card(
            account,
            AccountRecord(
                account,
                stored.balance,
                salt,
                stored.number_verifier or "",
                card_h,
                bind(salt, card_h),
                bind(salt, pin_h),
                (),
                pin_h,
            ),
        )
    finally:
        store.close()
    if refusal is not None:
        raise EnrolmentRefused(REFUSALS[refusal].format(account=account))


def set_balance(settings: Settings, account: str, balance: str) -> None:
    """:class:`EnrolmentRefused` for an amount that is not one, or no such account."""
    if not AMOUNT.fullmatch(balance):
        raise EnrolmentRefused(BAD_AMOUNT)
    store = Store(settings.store)
    try:
        if not store.set_balance(account, balance):
            raise EnrolmentRefused(REFUSALS[Refusal.NO_ACCOUNT].format(account=account))
    finally:
        store.close()


def caller_problem(callers: Sequence[str]) -> str | None:
    if not callers:
        return "caller numbers: none given"
    if any(not E164.fullmatch(c) for c in callers):
        return "caller number: expected E.164 (+ then up to 15 digits)"
    return None


def add_callers(
    settings: Settings,
    account: str,
    last4: str,
    callers: Sequence[str],
    *,
    vault: VaultClient | None = None,
) -> None:
    """Register caller numbers on an account. Its card last-4 (checked against the
    account's) tells whether a number is already on another account with the same card."""
    why = caller_problem(callers)
    if why is not None:
        raise EnrolmentRefused(why)
    if not is_digits(last4, CARD_DIGITS):
        raise EnrolmentRefused(f"card last-4: expected exactly {CARD_DIGITS} digits")
    store = Store(settings.store)
    try:
        stored = _existing(store, account)
        card_h, *registered = _with_transit(
            settings,
            store,
            lambda transit: transit.hmac([card_input(last4), *map(registered_input, callers)]),
            vault=vault,
        )
        if not matches(stored.card_verifier, stored.salt, card_h, salted=stored.salted):
            raise EnrolmentRefused(CARD_MISMATCH)
        if len(stored.callers | set(registered)) > MAX_CALLERS:
            raise EnrolmentRefused(f"caller numbers: at most {MAX_CALLERS} per account")
        refusal = store.register_callers(
            account,
            AccountRecord(
                account,
                stored.balance,
                stored.salt,
                "",
                card_h,
                stored.card_verifier,
                stored.pin_verifier,
                tuple(registered),
            ),
        )
    finally:
        store.close()
    if refusal is not None:
        raise EnrolmentRefused(REFUSALS[refusal].format(account=account))


def remove_callers(
    settings: Settings, account: str, callers: Sequence[str], *, vault: VaultClient | None = None
) -> int:
    """Unregister caller numbers from an account: how many were registered on it."""
    why = caller_problem(callers)
    if why is not None:
        raise EnrolmentRefused(why)
    store = Store(settings.store)
    try:
        _existing(store, account)
        registered = _with_transit(
            settings,
            store,
            lambda transit: transit.hmac([registered_input(c) for c in callers]),
            vault=vault,
        )
        removed = store.unregister_callers(account, registered)
    finally:
        store.close()
    if removed is None:
        raise EnrolmentRefused(REFUSALS[Refusal.NO_ACCOUNT].format(account=account))
    return removed


async def check_canaries(transit: Transit, settings: Settings, store: Store) -> None:
    check = await check_keys(
        transit, settings.lookup_key, store.canaries(), store.lookup_versions()
    )
    if not check.ok:
        raise check.error()


def seed_demo(settings: Settings, *, vault: VaultClient | None = None) -> str:
    """The demo account (card 1234, PIN 4321), for development only: the one enrolment
    that skips the weak-PIN rule, and only for these constants. Only when the store has
    no account of that name: a store with data in it is never written over. Returns the
    line that says which."""
    store = Store(settings.store)
    try:
        present = store.has_account(DEMO_ACCOUNT[0])
    finally:
        store.close()
    if present:
        return f"demo account {DEMO_ACCOUNT[0]} already in the store; not seeded again"
    row = Enrolment(*DEMO_ACCOUNT, DEMO_ACCOUNT_NUMBER, DEMO_CARD, DEMO_PIN, (DEMO_CALLER,))
    (line,) = enrol(settings, [row], check_pin=False, vault=vault)
    if line is not None:
        raise EnrolmentRefused(line)
    return f"demo account {DEMO_ACCOUNT[0]} provisioned (development only: its PIN is weak)"


def check_store_keys(
    settings: Settings, *, adopt: bool = False, vault: VaultClient | None = None
) -> KeyCheck:
    """The backend's start-up check, on demand (``ivr-vault accounts check-keys``). With
    ``adopt``, versions stored verifiers use without a canary (a store made before
    canaries) get this Vault's: only for an operator who knows this Vault made them.
    A canary that does not match is never replaced."""
    store = Store(settings.store)
    try:

        async def checked() -> KeyCheck:
            async with transit_session(settings, Metrics(), threads=2, vault=vault) as transit:
                check = await check_keys(
                    transit, settings.lookup_key, store.canaries(), store.lookup_versions()
                )
                if adopt and check.unguarded and not check.mismatched:
                    for version in check.unguarded:
                        (canary,) = await transit.hmac([CANARY_INPUT], key_version=version)
                        store.add_canary(canary, time.time())
                    check = await check_keys(
                        transit, settings.lookup_key, store.canaries(), store.lookup_versions()
                    )
                return check

        return asyncio.run(checked())
    finally:
        store.close()
