"""``ivr-vault legacy import-key|convert``: bring the tutorial's key and ciphertexts into Transit.

The key comes from stdin or a no-echo prompt, never argv, and leaves this process only
wrapped for Transit's BYOK endpoint. Conversion is a change of notation: nothing is
decrypted, so the operator never sees a plaintext.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from contextlib import closing
from typing import Any

from service.errors import BadInput, LegacyFormatError, LegacyImportError, VaultNotFound
from service.keys.legacy import convert_ciphertext, import_key
from service.keys.lifecycle import LEGACY_KEY, operator_vault
from service.settings import Settings
from service.store.sealed import SealedStore
from service.vault.base import JSON
from service.vault.client import VaultClient


class _VaultAdapter:
    """The two calls :func:`service.legacy.import_key` makes, over our VaultClient, so the
    key-admin identity (AppRole login, error translation) is used as everywhere else."""

    def __init__(self, vault: VaultClient) -> None:
        self._vault = vault

    def read(self, path: str) -> JSON | None:
        try:
            return self._vault.read(path, "read")
        except VaultNotFound:
            return None

    def write_data(self, path: str, data: dict[str, Any]) -> JSON:
        return self._vault.write(path, "import key", data)


def _read_key_text() -> str:
    if sys.stdin.isatty():
        return getpass.getpass("tutorial AES_SECRET (64 hex characters, not echoed): ")
    return sys.stdin.readline()


def _import_key(args: argparse.Namespace, settings: Settings) -> int:
    from service.keys.legacy import parse_legacy_key

    try:
        key = parse_legacy_key(_read_key_text())
    except LegacyFormatError as exc:
        raise BadInput(str(exc)) from None
    vault = operator_vault(settings)
    try:
        import_key(_VaultAdapter(vault), args.name, key, mount_point=settings.transit_mount)
    except (LegacyImportError, LegacyFormatError) as exc:
        print(f"ivr-vault: refused: {exc}", file=sys.stderr)
        return 1
    print(
        f"{args.name}: tutorial key imported as v1 (not exportable, rotatable); convert "
        "the ciphertexts, then rotate, rewrap and retire v1 (docs/keys.md)"
    )
    return 0


def _convert(args: argparse.Namespace, settings: Settings) -> int:
    """Every line converted before anything is printed or stored, so a bad line leaves
    no half-done output or half-filled table behind."""
    converted: list[str] = []
    for number, line in enumerate(sys.stdin, start=1):
        if not line.strip():
            continue
        try:
            converted.append(convert_ciphertext(line))
        except LegacyFormatError as exc:
            raise BadInput(f"line {number}: {exc}; nothing converted") from None
    for ciphertext in converted:
        print(ciphertext)
    if args.store:
        with closing(SealedStore(settings.store)) as store:
            ids = store.add(args.name, converted)
        span = f" (ids {ids[0]}-{ids[-1]})" if ids else ""
        print(f"ivr-vault: stored {len(ids)} records under {args.name}{span}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser("legacy", help="migrate from the Twilio tutorial's AES_SECRET")
    group.set_defaults(dev_identity="ivr-keyadmin")
    cmds = group.add_subparsers(dest="legacy_command", required=True)

    p = cmds.add_parser(
        "import-key",
        help="import the tutorial key into Transit (BYOK); "
        "the key from stdin or a prompt, never argv",
    )
    p.add_argument("--name", default=LEGACY_KEY, help=f"Transit key name (default {LEGACY_KEY})")
    p.set_defaults(func=_import_key)

    p = cmds.add_parser(
        "convert",
        help="tutorial ciphertexts on stdin, one per line -> Transit ciphertexts on stdout",
    )
    p.add_argument("--name", default=LEGACY_KEY, help=f"Transit key name (default {LEGACY_KEY})")
    p.add_argument(
        "--store",
        action="store_true",
        help="also keep them in the store's sealed_records (for keys rewrap)",
    )
    p.set_defaults(func=_convert)
