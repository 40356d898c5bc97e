"""``ivr-vault keys status|rotate|retire|rewrap``: the operator's key lifecycle commands.

All run as the key-admin identity (:func:`service.keys.lifecycle.operator_vault`); none can
decrypt.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import closing
from typing import Any, TextIO

from service.errors import BadInput, RetireRefused
from service.keys import lifecycle as keys
from service.keys.rewrap import DEFAULT_BATCH, RewrapResult, rewrap_key
from service.settings import Settings, parse_duration
from service.store.sealed import SealedStore
from service.vault.transit import MAX_BATCH

BAR_WIDTH = 30


def _period(seconds: int) -> str:
    if seconds == 0:
        return "off"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def render_table(statuses: dict[str, keys.KeyStatus]) -> str:
    lines = []
    for name, key in statuses.items():
        lines.append(
            f"{name}  latest v{key.latest_version}  "
            f"min_decryption_version {key.min_decryption_version}  "
            f"min_encryption_version {key.min_encryption_version}  "
            f"auto_rotate_period {_period(key.auto_rotate_period)}"
        )
        lines.append(f"  {'version':<8} {'created (UTC)':<21} {'stored':>7}  state")
        for version, created in sorted(key.created.items()):
            state = (
                "retired"
                if version < key.min_decryption_version
                else ("latest" if version == key.latest_version else "decrypts")
            )
            stored = key.stored_records.get(version, 0)
            when = "unknown" if created is None else keys.iso(created)
            lines.append(f"  v{version:<7} {when:<21} {stored:>7}  {state}")
    return "\n".join(lines)


def _status(args: argparse.Namespace, settings: Settings) -> int:
    vault = keys.operator_vault(settings)
    statuses = keys.status(vault, settings)
    if args.json:
        print(json.dumps({name: s.as_json() for name, s in statuses.items()}, indent=2))
    else:
        print(render_table(statuses))
    return 0


def _rotate(args: argparse.Namespace, settings: Settings) -> int:
    vault = keys.operator_vault(settings)
    name = args.key or settings.dtmf_key
    keys.require_key(vault, settings, name)
    latest = keys.rotate(vault, settings, name)
    if keys.is_hmac_key(settings, name):
        print(
            f"{name}: rotated; new verifiers use v{latest} (each account's move to "
            f"v{latest} at its next successful lookup), older versions still verify "
            "until retired"
        )
    else:
        print(
            f"{name}: rotated; new encryptions use v{latest}, older versions still "
            "decrypt until retired"
        )
    return 0


def _retire(args: argparse.Namespace, settings: Settings) -> int:
    older_than = parse_duration(args.older_than, name="--older-than")
    name = args.key or settings.dtmf_key
    try:
        keys.check_window(older_than, settings.call_max_age)  # before any Vault call
        vault = keys.operator_vault(settings)
        keys.require_key(vault, settings, name)
        key = keys.KeyStatus.from_vault(
            name, keys.read_key(vault, settings, name), keys.stored_counts(settings, name)
        )
        plan = keys.plan_retirement(
            key, older_than, settings.call_max_age, verifiers=keys.is_hmac_key(settings, name)
        )
    except RetireRefused as exc:
        print(f"ivr-vault: refused: {exc}", file=sys.stderr)
        return 1
    if not plan.changes:
        print(
            f"{name}: nothing to retire (min_decryption_version stays {plan.current}; "
            f"v{plan.current + 1} is younger than {args.older_than})"
            if plan.current < key.latest_version
            else f"{name}: nothing to retire (only the latest version v{plan.current} decrypts)"
        )
        return 0
    retired = ", ".join(f"v{v}" for v in range(plan.current, plan.target))
    verb = "would retire" if args.dry_run else "retired"
    if not args.dry_run:
        keys.apply_retirement(vault, settings, plan)
    print(f"{name}: min_decryption_version {plan.current} -> {plan.target} ({verb} {retired})")
    return 0


class ProgressBar:
    """A one-line bar redrawn in place on a terminal."""

    def __init__(self, key: str, stream: TextIO) -> None:
        self.key = key
        self.stream = stream

    def __call__(self, done: int, total: int) -> None:
        filled = BAR_WIDTH if total == 0 else BAR_WIDTH * done // total
        self.stream.write(
            f"\r{self.key} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{total}"
        )
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


def summary(result: RewrapResult) -> str:
    line = (
        f"{result.key}: rewrapped {result.rewrapped} records to v{result.latest} "
        f"in {result.batches} batches"
    )
    if result.failed:
        shown = ", ".join(str(i) for i in result.failed[:10])
        more = " ..." if len(result.failed) > 10 else ""
        line += (
            f"; {len(result.failed)} refused by Transit (retired version or damaged), "
            f"record ids {shown}{more}"
        )
    return line


def _rewrap(args: argparse.Namespace, settings: Settings) -> int:
    for name in args.key or ():
        if keys.is_hmac_key(settings, name):
            raise BadInput(
                f"--key {name}: an HMAC key has no ciphertexts to rewrap (its "
                "verifiers move to the latest version at each account's next "
                "successful lookup; docs/keys.md)"
            )
    with closing(SealedStore(settings.store)) as store:
        names = args.key or store.key_names()
        if not names:
            print("ivr-vault: no stored ciphertexts to rewrap")
            return 0
        vault = keys.operator_vault(settings)
        for name in args.key or ():
            keys.require_key(vault, settings, name)
        failed = False
        for name in names:
            bar: Any = ProgressBar(name, sys.stderr) if sys.stderr.isatty() else None
            result = rewrap_key(
                vault, settings, store, name, batch_size=args.batch_size, progress=bar
            )
            print(summary(result))
            failed = failed or not result.ok
    return 1 if failed else 0


def _batch_size(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_BATCH:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_BATCH}")
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser("keys", help="key lifecycle (as the key-admin identity)")
    group.set_defaults(dev_identity="ivr-keyadmin")
    cmds = group.add_subparsers(dest="keys_command", required=True)

    p = cmds.add_parser("status", help="versions, retirement and stored records per key")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_status)

    p = cmds.add_parser("rotate", help="rotate a key (default: DTMF_KEY)")
    p.add_argument("--key", help="Transit key name")
    p.set_defaults(func=_rotate)

    p = cmds.add_parser(
        "retire",
        help="raise min_decryption_version past versions that "
        "no call and no stored record can still use",
    )
    p.add_argument(
        "--older-than",
        required=True,
        metavar="DURATION",
        help="retire v when v+1 is older than this (at least CALL_MAX_AGE)",
    )
    p.add_argument("--key", help="Transit key name (default: DTMF_KEY)")
    p.add_argument("--dry-run", action="store_true", help="say what would change")
    p.set_defaults(func=_retire)

    p = cmds.add_parser(
        "rewrap", help="move every stored ciphertext to its key's latest version (resumable)"
    )
    p.add_argument("--key", action="append", help="only this key (repeatable)")
    p.add_argument(
        "--batch-size",
        type=_batch_size,
        default=DEFAULT_BATCH,
        help=f"items per Transit call (1-{MAX_BATCH}, default {DEFAULT_BATCH})",
    )
    p.set_defaults(func=_rewrap)
