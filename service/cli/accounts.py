"""``ivr-vault accounts add|update|unlock|seed-demo|check-keys``: provision accounts, lift
locks.

The digits (account number, card last-4, PIN) and the caller numbers come from a prompt or
stdin, one per line, never argv. Every refusal (a weak PIN, a bad amount, an existing
label, an account number already enrolled ...) is one plain line on stderr and exit
status 2, never echoing a digit and never a raw constraint message. ``seed-demo`` is for
development only: the demo PIN is weak by design.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from collections.abc import Callable

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


def read_enrolment(account: str, balance: str, read: Reader = _read_line,
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
        return _refused(f"account {args.account} conflicts with one enrolled meanwhile; "
                        "check with `ivr-vault accounts update` and run again")
    print(f"ivr-vault: account {args.account} provisioned"
          + (f" ({len(callers)} caller numbers registered)" if callers else ""))
    return 0


def _update(args: argparse.Namespace, settings: Settings) -> int:
    from service.backend.enrolment import set_account_number

    if not args.set_account_number:
        return _refused("accounts update: nothing to change (--set-account-number)")
    number = _read_line("account number", True)
    try:
        set_account_number(settings, args.account, number)
    except EnrolmentRefused as exc:
        return _refused(str(exc))
    except StoreConflict:
        return _refused("that account number is already enrolled on another account")
    print(f"ivr-vault: account {args.account}: account number set (its card-only lookup "
          "has ended)")
    return 0


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
    state = ("hard-locked" if before.hard else "locked" if before.locked(time.time())
             else "not locked")
    # The letters-only reference: the label may hold digits, which the scrubber masks.
    log.warning("account unlocked by an operator", account_ref=reference, operator=operator,
                was=state)
    print(f"ivr-vault: account {args.account} unlocked (was {state}; "
          f"{before.failures} consecutive wrong PINs forgotten)")
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
    print(f"ivr-vault: {settings.lookup_key}: this Vault reproduces the account store's "
          "canaries")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    accounts = sub.add_parser("accounts", help="account store").add_subparsers(
        dest="accounts_command", required=True)
    p = accounts.add_parser("add", help="provision an account; from a prompt or stdin, one "
                                        "per line, never argv: its account number, card "
                                        "last-4, PIN, then caller numbers (E.164) until an "
                                        "empty line; weak PINs are refused")
    p.add_argument("--account", required=True, help="the label read back to callers")
    p.add_argument("--balance", required=True)
    p.set_defaults(func=_add, dev_identity="ivr-backend")
    p = accounts.add_parser("update", help="change an account: --set-account-number reads "
                                           "it from a prompt or stdin (ends the account's "
                                           "card-only lookup)")
    p.add_argument("--account", required=True)
    p.add_argument("--set-account-number", action="store_true")
    p.set_defaults(func=_update, dev_identity="ivr-backend")
    p = accounts.add_parser("unlock", help="forget an account's wrong PINs and lift its "
                                           "lock; as the key-admin (operator) identity")
    p.add_argument("--account", required=True)
    p.set_defaults(func=_unlock, dev_identity="ivr-keyadmin")
    p = accounts.add_parser("seed-demo", help="development only: provision the demo account "
                                              "(card 1234, PIN 4321) with the backend's "
                                              "identity, unless the store has it")
    p.set_defaults(func=_seed_demo, dev_identity="ivr-backend")
    p = accounts.add_parser("check-keys", help="check that this Vault reproduces the store's "
                                               "ivr-lookup canaries (as the backend does)")
    p.add_argument("--adopt", action="store_true",
                   help="record this Vault's canaries for verifier versions that have none "
                        "(a store made before canaries); only if this Vault made them")
    p.set_defaults(func=_check_keys, dev_identity="ivr-backend")
