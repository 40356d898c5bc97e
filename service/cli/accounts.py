"""``ivr-vault accounts add|seed-demo``: provision accounts with the backend's identity.

The card and PIN digits come from a prompt or stdin, never argv.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from service.errors import ConfigError
from service.settings import Settings
from service.vault.formats import is_four_digits


def _read_secret_digits(label: str) -> str:
    """From a prompt on a terminal, else one line of stdin; never from argv."""
    value = getpass.getpass(f"{label}: ") if sys.stdin.isatty() else sys.stdin.readline().strip()
    if not is_four_digits(value):
        raise ConfigError(f"{label}: expected exactly 4 digits")
    return value


def _add(args: argparse.Namespace, settings: Settings) -> int:
    from service.backend.enrolment import add_account

    card = _read_secret_digits("card last 4 digits")
    pin = _read_secret_digits("PIN")
    add_account(settings, account=args.account, balance=args.balance, last4=card, pin=pin)
    print(f"ivr-vault: account {args.account} provisioned")
    return 0


def _seed_demo(args: argparse.Namespace, settings: Settings) -> int:
    """The tutorial's test account (card 1234, PIN 4321), for docker compose's init step,
    which runs on every ``up``: only when the store does not have it yet."""
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
                                        "or stdin, never argv")
    p.add_argument("--account", required=True)
    p.add_argument("--balance", required=True)
    p.set_defaults(func=_add)
    p = accounts.add_parser("seed-demo", help="provision the demo account (card 1234, PIN "
                                              "4321) with the backend's identity, unless "
                                              "the store has it")
    p.set_defaults(func=_seed_demo)
    p = accounts.add_parser("check-keys", help="check that this Vault reproduces the store's "
                                               "ivr-lookup canaries (as the backend does)")
    p.add_argument("--adopt", action="store_true",
                   help="record this Vault's canaries for verifier versions that have none "
                        "(a store made before canaries); only if this Vault made them")
    p.set_defaults(func=_check_keys)
