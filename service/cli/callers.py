"""``ivr-vault callers reset``: let a caller number that was cut off call again.

The number comes from a prompt or stdin, never argv (a shell history is a log). It runs
with the backend's identity, the one that may HMAC with ``ivr-lookup`` (as ``accounts
add`` does): the store knows a number only by that HMAC.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from service.settings import Settings


def _read_number() -> str:
    from service.backend.callers import caller_number

    prompt = "caller number (E.164, e.g. +15005550006; or anonymous): "
    text = getpass.getpass(prompt) if sys.stdin.isatty() else sys.stdin.readline()
    return caller_number(text.strip())


def _reset(args: argparse.Namespace, settings: Settings) -> int:
    from service.backend.callers import reset_caller

    done = reset_caller(settings, _read_number())
    was = "it was cut off" if done.was_cut_off else "it was not cut off"
    print(
        f"ivr-vault: caller {done.caller_fp} reset: {done.forgotten} failed lookups "
        f"forgotten ({was}); caller_fp is how the backend's log lines name it"
    )
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    callers = sub.add_parser(
        "callers", help="caller numbers cut off after failed lookups"
    ).add_subparsers(dest="callers_command", required=True)
    p = callers.add_parser(
        "reset",
        help="forget one caller number's failed lookups (it may "
        "call again); the number from a prompt or stdin, "
        "never argv; as the backend's identity",
    )
    p.set_defaults(func=_reset, dev_identity="ivr-backend")
