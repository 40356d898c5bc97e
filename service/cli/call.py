"""``ivr-vault call``: play Twilio against a running webhook and print what the caller hears.

The digits given here are a simulator's test digits, as ``--card`` and ``--pin`` always
were; a real caller's never pass through a command line."""

from __future__ import annotations

import argparse
import os
import sys

import httpx

from service.cli.dev import DEV_DIR
from service.cli.devenv import UntrustedDevDir, cannot_tell, read_cluster, read_private
from service.errors import ConfigError
from service.settings import Settings

DEFAULT_FROM = "+15005550006"  # Twilio's test number; registered on the demo account


def _auth_token(settings: Settings) -> str:
    if settings.twilio_auth_token is not None:
        return settings.twilio_auth_token.reveal()
    try:  # only from a .dev/ that is this user's alone (service/cli/devenv.py)
        text = read_private(DEV_DIR, "twilio-auth-token")
    except UntrustedDevDir as exc:
        raise ConfigError(
            f"TWILIO_AUTH_TOKEN: not set, and {DEV_DIR}/ is not used: {exc}"
        ) from None
    if text is not None:
        return text.strip()
    raise ConfigError(
        "TWILIO_AUTH_TOKEN: not set, and no .dev/twilio-auth-token "
        "(is `make run` running in this directory?)"
    )


def _stack_url(settings: Settings) -> str:
    """Where to call without --url: PUBLIC_BASE_URL when set; else the stack running in
    this directory (.dev/cluster.json: make run-ha's proxy, make run's webhook), not
    whatever has the default port; outside a make run directory, the default."""
    if os.environ.get("PUBLIC_BASE_URL") and settings.public_base_url:
        return settings.public_base_url
    cluster = read_cluster()
    if cluster is not None:
        for url in (*cluster.get("proxy", []), *cluster.get("webhook", [])):
            return url
    if DEV_DIR.is_dir():
        raise ConfigError(f"{cannot_tell('webhook')}; or give --url")
    return settings.public_base_url or "http://127.0.0.1:8080"


def _call(args: argparse.Namespace, settings: Settings) -> int:
    from service.devtools.caller import REGISTERED, Caller

    url = args.url or _stack_url(settings)
    entries = [args.card, args.pin]
    with httpx.Client(timeout=20, verify=args.cacert or True) as client:
        caller = Caller(
            url,
            _auth_token(settings),
            client,
            show_voice=True,
            caller=args.from_,
            identify=args.account_number or REGISTERED,
        )
        try:
            result = caller.play([e for e in entries if e is not None], to=args.to, lang=args.lang)
        except httpx.HTTPError as exc:
            print(
                f"ivr-vault: call: no answer from the webhook at {url} "
                f"({type(exc).__name__}); is it running?",
                file=sys.stderr,
            )
            return 1
    return 0 if result.completed else 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("call", help="play Twilio against a running webhook")
    p.add_argument(
        "--from",
        dest="from_",
        default=DEFAULT_FROM,
        metavar="NUMBER",
        help=f"the caller's number, Twilio's From (default {DEFAULT_FROM}, the "
        "number registered on the demo account)",
    )
    who = p.add_mutually_exclusive_group()
    who.add_argument(
        "--account-number",
        metavar="DIGITS",
        help="keys to type at the account-number prompt (test digits)",
    )
    who.add_argument(
        "--registered",
        action="store_true",
        help="press star at the account-number prompt: the registered-phone "
        "path (what the caller does without --account-number)",
    )
    p.add_argument("--card", help="keys to press at the card prompt")
    p.add_argument("--pin", help="keys to press at the PIN prompt")
    p.add_argument(
        "--to",
        help="the number called, whose locale the caller hears "
        "(default: Twilio's test number +15005550001)",
    )
    p.add_argument("--lang", help="the language to choose in a language menu (ja-JP, en-US)")
    p.add_argument(
        "--url",
        help="webhook base URL (default: PUBLIC_BASE_URL when set, else "
        "the stack in .dev/cluster.json)",
    )
    p.add_argument("--cacert", help="CA bundle for an https URL")
    p.set_defaults(func=_call)
