"""``ivr-vault accounts add|unlock|seed-demo``: provision accounts, lift locks.

The card and PIN digits come from a prompt or stdin, never argv. ``add`` refuses a weak PIN
(``service/backend/pin_rules.py``) with one line on stderr and exit status 2, never echoing
it. ``seed-demo`` is for development only: the demo PIN is weak by design.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time

import structlog

from service.errors import BadInput, EnrolmentRefused
from service.formats import is_four_digits
from service.settings import Settings

log = structlog.get_logger("ivr.accounts")


def _read_secret_digits(label: str) -> str:
    """From a prompt on a terminal, else one line of stdin; never from argv."""
    value = getpass.getpass(f"{label}: ") if sys.stdin.isatty() else sys.stdin.readline().strip()
    if not is_four_digits(value):
        raise BadInput(f"{label}: expected exactly 4 digits")
    return value


def _add(args: argparse.Namespace, settings: Settings) -> int:
    from service.backend.enrolment import add_account

    card = _read_secret_digits("card last 4 digits")
    pin = _read_secret_digits("PIN")
    try:
        add_account(settings, account=args.account, balance=args.balance, last4=card, pin=pin)
    except EnrolmentRefused as exc:
        print(f"ivr-vault: {exc}", file=sys.stderr)
        return 2
    print(f"ivr-vault: account {args.account} provisioned")
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
    finally:
        store.close()
    if before is None:
        print(f"ivr-vault: no account {args.account}", file=sys.stderr)
        return 1
    state = ("hard-locked" if before.hard else "locked" if before.locked(time.time())
             else "not locked")
    log.warning("account unlocked by an operator", account=args.account, operator=operator,
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
    p = accounts.add_parser("add", help="provision an account; card and PIN from a prompt "
                                        "or stdin, never argv; weak PINs are refused")
    p.add_argument("--account", required=True)
    p.add_argument("--balance", required=True)
    p.set_defaults(func=_add, dev_identity="ivr-backend")
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
