"""``ivr-vault accounts add|update|remove|list|import|unlock|seed-demo|check-keys``:
provision, change, list and remove accounts, import them in bulk, lift locks.

The digits (account number, card last-4, PIN) and the caller numbers come from a prompt or
stdin, one per line, never argv. Every refusal (a weak PIN, a bad amount, an existing
label, an account number already enrolled ...) is one plain line on stderr and exit
status 2, never echoing a digit and never a raw constraint message. ``seed-demo`` is for
development only: the demo PIN is weak by design.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from service.errors import BadInput, EnrolmentRefused, StoreConflict
from service.settings import Settings

log = structlog.get_logger("ivr.accounts")

Reader = Callable[[str, bool], str]


def _read_line(label: str, secret: bool) -> str:
    """One entry: from a prompt on a terminal (hidden when ``secret``), else one line of
    stdin; never from argv. EOF reads as an empty line."""
    if sys.stdin.isatty():
        return (getpass.getpass(f"{label}: ") if secret else input(f"{label}: ")).strip()
    return sys.stdin.readline().strip()


def read_enrolment(
    account: str,
    balance: str,
    read: Reader = _read_line,
) -> tuple[str, str, str, tuple[str, ...]]:
    """The account number, card last-4, PIN, then caller numbers until an empty line or
    EOF."""
    number = read("account number", True)
    card = read("card last 4 digits", True)
    pin = read("PIN", True)
    callers: list[str] = []
    while True:
        caller = read("caller number registered on the account (E.164; empty: done)", False)
        if not caller:
            return number, card, pin, tuple(callers)
        callers.append(caller)


def _refused(line: str) -> int:
    print(f"ivr-vault: {line}", file=sys.stderr)
    return 2


def _add(args: argparse.Namespace, settings: Settings) -> int:
    from service.backend.enrolment import Enrolment, add_account, malformed

    number, card, pin, callers = read_enrolment(args.account, args.balance)
    row = Enrolment(args.account, args.balance, number, card, pin, callers)
    shape = malformed(row, settings)
    if shape is not None:  # what was typed or piped in: "bad input", exit 2
        raise BadInput(shape)
    try:
        add_account(settings, row)
    except EnrolmentRefused as exc:
        return _refused(str(exc))
    except StoreConflict:  # another enrolment took the label or number meanwhile
        return _refused(
            f"account {args.account} conflicts with one enrolled meanwhile; "
            "check with `ivr-vault accounts update` and run again"
        )
    _audit(settings, args.account, "account added by an operator")
    print(
        f"ivr-vault: account {args.account} provisioned"
        + (f" ({len(callers)} caller numbers registered)" if callers else "")
    )
    return 0


def _read_numbers(label: str) -> tuple[str, ...]:
    """Caller numbers, one per line, until an empty line or EOF."""
    numbers: list[str] = []
    while number := _read_line(f"{label} (E.164; empty: done)", False):
        numbers.append(number)
    return tuple(numbers)


def _audit(settings: Settings, account: str, event: str, **facts: object) -> None:
    """An operator audit line, naming the account by its letters-only reference: the label
    may hold digits, which the scrubber masks."""
    from service.store.accounts import Store

    store = Store(settings.store)
    try:
        reference = store.reference(account)
    finally:
        store.close()
    log.warning(event, account_ref=reference, **facts)


UPDATES = ("set_account_number", "reset_pin", "change_card", "add_callers", "remove_callers")


def _update(args: argparse.Namespace, settings: Settings) -> int:
    """One change that reads digits (from a prompt or stdin), and/or a new balance."""
    from service.backend import enrolment

    change = next((name for name in UPDATES if getattr(args, name)), None)
    if change is None and args.balance is None:
        return _refused(
            "accounts update: nothing to change (--balance, "
            + ", ".join("--" + name.replace("_", "-") for name in UPDATES)
            + ")"
        )
    if args.balance is not None and not enrolment.AMOUNT.fullmatch(args.balance):
        return _refused(enrolment.BAD_AMOUNT)  # before anything is changed
    done: dict[str, str] = {}  # change → what it did
    try:
        if change == "set_account_number":
            number = _read_line("account number", True)
            enrolment.set_account_number(settings, args.account, number)
            done[change] = "account number set (its card-only lookup has ended)"
        elif change in ("reset_pin", "change_card"):
            new_card = change == "change_card"
            last4 = _read_line(
                "new card last 4 digits" if new_card else "the account's card last 4 digits", True
            )
            pin = _read_line("new PIN", True)
            enrolment.change_card(settings, args.account, last4, pin, new_card=new_card)
            done[change] = "card and PIN changed" if new_card else "PIN reset"
        elif change == "add_callers":
            last4 = _read_line("the account's card last 4 digits", True)
            callers = _read_numbers("caller number to register")
            enrolment.add_callers(settings, args.account, last4, callers)
            done[change] = f"{len(callers)} caller numbers registered"
        elif change == "remove_callers":
            callers = _read_numbers("caller number to unregister")
            removed = enrolment.remove_callers(settings, args.account, callers)
            done[change] = f"{removed} of {len(callers)} caller numbers unregistered"
        if args.balance is not None:
            enrolment.set_balance(settings, args.account, args.balance)
            done["balance"] = "balance changed"
    except EnrolmentRefused as exc:
        return _refused(str(exc))
    except StoreConflict:  # another enrolment took the number meanwhile
        return _refused("that account number is already enrolled on another account")
    finally:
        if done:  # what was changed, even when what followed was refused
            _audit(settings, args.account, "account changed by an operator", changes=list(done))
    print(f"ivr-vault: account {args.account}: {'; '.join(done.values())}")
    return 0


def _remove(args: argparse.Namespace, settings: Settings) -> int:
    from service.store.accounts import Store

    store = Store(settings.store)
    try:
        reference = store.remove(args.account)
    finally:
        store.close()
    if reference is None:
        return _refused(f"no account {args.account}")
    log.warning("account removed by an operator", account_ref=reference)
    print(f"ivr-vault: account {args.account} removed (reference {reference})")
    return 0


def _list(args: argparse.Namespace, settings: Settings) -> int:
    """Every account, streamed: a table, or JSON Lines with ``--json``."""
    from service.cli.accounts_output import TABLE_HEADER, json_line, table_line
    from service.store.accounts import Store

    store = Store(settings.store, pool_size=1)
    now = time.time()
    try:
        if not args.json:
            print(TABLE_HEADER)
        for summary in store.summaries():
            print(json_line(summary, now) if args.json else table_line(summary, now))
    except BrokenPipeError:  # `| head`: the reader has what it wanted
        # Python would flush stdout again at exit and complain: point it at /dev/null.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        store.close()
    return 0


def _import(args: argparse.Namespace, settings: Settings) -> int:
    from service.backend.importing import import_file
    from service.cli.accounts_output import Reporter

    path = Path(args.file)
    reporter = Reporter(path)
    try:
        summary = import_file(
            settings, path, update=args.update, refuse=reporter.refuse, progress=reporter.progress
        )
    except EnrolmentRefused as exc:
        reporter.done()
        return _refused(str(exc))
    reporter.done()
    # Counts stay out of the log line (the scrubber masks numbers it does not know);
    # the summary below carries them.
    log.warning(
        "accounts imported by an operator",
        file=path.name,
        outcome="rows refused" if summary.refused else "complete",
    )
    print(
        f"ivr-vault: import {path.name}: {summary.rows} rows: {summary.added} added, "
        f"{summary.skipped} already present, {summary.updated} updated, "
        f"{summary.refused} refused ({summary.rows / max(summary.seconds, 1e-9):.0f} "
        f"rows/s, {summary.transit_calls} Transit calls)"
    )
    return 2 if summary.refused else 0


def _unlock(args: argparse.Namespace, settings: Settings) -> int:
    """Forget an account's wrong PINs and lift its lock, as an operator identity."""
    from service.keys.lifecycle import operator_identity, operator_vault
    from service.store.accounts import Store

    vault = operator_vault(settings)
    try:
        operator = operator_identity(vault)
    finally:
        vault.close()
    store = Store(settings.store)
    try:
        before = store.unlock(args.account)
        reference = store.reference(args.account)
    finally:
        store.close()
    if before is None:
        print(f"ivr-vault: no account {args.account}", file=sys.stderr)
        return 1
    state = (
        "hard-locked" if before.hard else "locked" if before.locked(time.time()) else "not locked"
    )
    # The letters-only reference: the label may hold digits, which the scrubber masks.
    log.warning(
        "account unlocked by an operator", account_ref=reference, operator=operator, was=state
    )
    print(
        f"ivr-vault: account {args.account} unlocked (was {state}; "
        f"{before.failures} consecutive wrong PINs forgotten)"
    )
    return 0


def _seed_demo(args: argparse.Namespace, settings: Settings) -> int:
    """The tutorial's test account (card 1234, PIN 4321): ``make run`` and the dev compose
    only. Its PIN would be refused by ``add``; this is the one, fixed exception."""
    from service.backend.enrolment import seed_demo

    print(f"ivr-vault: {seed_demo(settings)}")
    return 0


def _check_keys(args: argparse.Namespace, settings: Settings) -> int:
    """The backend's ivr-lookup canary check (docs/backup.md): exit 0 when this Vault
    reproduces every canary the store needs, else 1 with the one line that says why."""
    from service.backend.enrolment import check_store_keys

    check = check_store_keys(settings, adopt=args.adopt)
    if not check.ok:
        print(f"ivr-vault: {check.error()}", file=sys.stderr)
        return 1
    print(f"ivr-vault: {settings.lookup_key}: this Vault reproduces the account store's canaries")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    accounts = sub.add_parser("accounts", help="account store").add_subparsers(
        dest="accounts_command", required=True
    )
    p = accounts.add_parser(
        "add",
        help="provision an account; from a prompt or stdin, one "
        "per line, never argv: its account number, card "
        "last-4, PIN, then caller numbers (E.164) until an "
        "empty line; weak PINs are refused",
    )
    p.add_argument("--account", required=True, help="the label read back to callers")
    p.add_argument("--balance", required=True)
    p.set_defaults(func=_add, dev_identity="ivr-backend")
    p = accounts.add_parser(
        "update",
        help="change an account: --balance, and one change "
        "whose digits come from a prompt or stdin, one "
        "per line, never argv",
    )
    p.add_argument("--account", required=True)
    p.add_argument("--balance", help="the new balance (an amount such as 12.55)")
    change = p.add_mutually_exclusive_group()
    change.add_argument(
        "--set-account-number",
        action="store_true",
        help="reads the account number (ends a migrated account's card-only lookup)",
    )
    change.add_argument(
        "--reset-pin", action="store_true", help="reads the account's card last-4, then the new PIN"
    )
    change.add_argument(
        "--change-card", action="store_true", help="reads the new card last-4, then the new PIN"
    )
    change.add_argument(
        "--add-callers",
        action="store_true",
        help="reads the account's card last-4, then caller numbers (E.164) "
        "to register until an empty line",
    )
    change.add_argument(
        "--remove-callers",
        action="store_true",
        help="reads caller numbers (E.164) to unregister until an empty line",
    )
    p.set_defaults(func=_update, dev_identity="ivr-backend")
    p = accounts.add_parser(
        "remove", help="delete an account, its caller registrations and its lockout"
    )
    p.add_argument("--account", required=True)
    p.set_defaults(func=_remove, dev_identity="ivr-backend")
    p = accounts.add_parser(
        "list",
        help="every account: identification paths, lock state, "
        "wrong PINs, last success; never a digit entry",
    )
    p.add_argument("--json", action="store_true", help="JSON Lines, one object per account")
    p.set_defaults(func=_list, dev_identity="ivr-backend")
    p = accounts.add_parser(
        "import",
        help="accounts from a .csv (header account,balance,"
        "account_number,card_last4,pin,callers; callers "
        "separated by ;) or .jsonl file, streamed; a row "
        "already present is skipped; exit 2 when a row "
        "was refused",
    )
    p.add_argument("file")
    p.add_argument(
        "--update",
        action="store_true",
        help="replace an account whose label exists with other content",
    )
    p.set_defaults(func=_import, dev_identity="ivr-backend")
    p = accounts.add_parser(
        "unlock",
        help="forget an account's wrong PINs and lift its "
        "lock; as the key-admin (operator) identity",
    )
    p.add_argument("--account", required=True)
    p.set_defaults(func=_unlock, dev_identity="ivr-keyadmin")
    p = accounts.add_parser(
        "seed-demo",
        help="development only: provision the demo account "
        "(card 1234, PIN 4321) with the backend's "
        "identity, unless the store has it",
    )
    p.set_defaults(func=_seed_demo, dev_identity="ivr-backend")
    p = accounts.add_parser(
        "check-keys",
        help="check that this Vault reproduces the store's "
        "ivr-lookup canaries (as the backend does)",
    )
    p.add_argument(
        "--adopt",
        action="store_true",
        help="record this Vault's canaries for verifier versions that have none "
        "(a store made before canaries); only if this Vault made them",
    )
    p.set_defaults(func=_check_keys, dev_identity="ivr-backend")
