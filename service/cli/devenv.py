"""Finding ``make run``'s Vault: an operator command run in a ``make run`` directory with
no ``VAULT_ADDR`` uses the dev Vault, as the identity that command is meant to run as.

``make run`` writes ``.dev/vault.env`` (``export VAULT_ADDR=…`` lines, mode 0600) and each
role's AppRole credentials into ``.dev/ivr-<role>/``. When ``VAULT_ADDR`` is unset and that
file exists, the command's environment gains ``VAULT_ADDR`` from it and, unless the
environment names credentials of its own (``VAULT_ROLE_ID``/``VAULT_SECRET_ID``,
``VAULT_TOKEN``, or their ``_FILE`` forms), the command's identity from ``.dev/``: the
key-admin AppRole for ``keys``, the backend's for ``accounts add``, the dev root token only
for ``bootstrap``. One line on stderr says which Vault and which identity. After ``make
run-ha``, ``VAULT_ADDR`` names its three nodes, and its store (``STORE_URL``) comes along
unless the environment names a store of its own.

With ``VAULT_ADDR`` set, ``.dev/`` is never read: the dev credentials must not be offered to
another Vault (a secret-id sent to a server is a secret-id that server's operator holds).

The other way round, too (docs/security.md, "a planted .dev/"): an address from ``.dev/`` is never
paired with
credentials from the environment. A ``.dev/vault.env`` planted in a shared directory
naming ``http://127.0.0.1:18999`` received the operator's ``VAULT_TOKEN`` (a
``lookup-self``) and an AppRole login with the real role and secret IDs. With credentials
in the environment and no ``VAULT_ADDR``, the command stops with one line (exit 2). And
``.dev/`` counts only when it is a directory (not a link) that belongs to the current user
and that nobody else may write to, holding a ``vault.env`` of the same kind; otherwise one
line says why it was not used, and the command goes on as if it were not there.
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from service.cli.dev import DEV_DIR
from service.cluster import CLUSTER_JSON
from service.errors import ConfigError

ROOT = "root"  # the identity of `bootstrap`: the dev Vault's root token (dev only)
ANY = "any"  # the address only; the command finds each identity itself (doctor)

# A variable naming credentials: when one is set, the environment has chosen who to be.
_CREDENTIALS = ("VAULT_ROLE_ID", "VAULT_SECRET_ID", "VAULT_TOKEN")
_EXPORT = re.compile(r"^export (\w+)=(\S+)$", re.MULTILINE)


@dataclass(frozen=True)
class DevEnv:
    """What ``.dev/vault.env`` says: the dev Vault's address and root token."""

    dir: Path
    addr: str
    root_token: str | None
    store_url: str | None = None  # make run-ha's PostgreSQL (no password: a passfile)

    def approle_dir(self, role: str) -> Path | None:
        """``.dev/<role>/`` when it holds both credential files."""
        path = self.dir / role
        return path if all((path / n).is_file() for n in ("role_id", "secret_id")) else None


def find_dev_env(environ: Mapping[str, str], dev_dir: Path = DEV_DIR) -> DevEnv | None:
    """The dev Vault of ``make run`` in this directory, or None: when ``VAULT_ADDR`` is
    set (then ``.dev/`` is not even looked at), when there is no readable ``vault.env``,
    or when ``.dev/`` is not the current user's alone (said on stderr). Raises
    :class:`ConfigError` when the environment names credentials but no ``VAULT_ADDR``."""
    if environ.get("VAULT_ADDR"):
        return None
    try:
        text = read_private(dev_dir, "vault.env")
    except UntrustedDevDir as exc:
        print(f"ivr-vault: {dev_dir}/ not used: {exc}", file=sys.stderr, flush=True)
        return None
    if text is None:
        return None
    values = dict(_EXPORT.findall(text))
    addr = values.get("VAULT_ADDR") or values.get("BAO_ADDR")
    if not addr:
        return None
    named = [
        spelling
        for name in _CREDENTIALS
        for spelling in (name, f"{name}_FILE")
        if environ.get(spelling)
    ]
    if named:
        raise ConfigError(
            f"VAULT_ADDR is not set, and the environment names credentials ({', '.join(named)}):"
            f" they are never sent to the address in {dev_dir}/vault.env; set VAULT_ADDR, "
            f"or unset them to use the identities in {dev_dir}/"
        )
    return DevEnv(
        dev_dir, addr, values.get("VAULT_TOKEN") or values.get("BAO_TOKEN"), values.get("STORE_URL")
    )


# What ``source .dev/vault.env`` puts in a shell.
_SOURCED = ("VAULT_ADDR", "VAULT_TOKEN", "BAO_ADDR", "BAO_TOKEN")


def unsourced(
    environ: Mapping[str, str],
    dev_dir: Path = DEV_DIR,
) -> tuple[dict[str, str], str | None]:
    """``environ`` as if ``.dev/vault.env`` had never been sourced into it: when its
    ``VAULT_ADDR`` is that file's and its token is that file's root token (or none), they
    are dropped, so that a command runs as its own identity, not as root, and ``make run``
    starts its own Vault again instead of asking a Vault that stopped with the last one. A
    token of another value was chosen by someone: then nothing is dropped. The second
    value says what was dropped, in one line, or None."""
    addr = environ.get("VAULT_ADDR") or environ.get("BAO_ADDR")
    try:
        text = (dev_dir / "vault.env").read_text(encoding="utf-8") if addr else ""
    except (OSError, UnicodeDecodeError):
        text = ""
    values = dict(_EXPORT.findall(text))
    token = values.get("VAULT_TOKEN")
    tokens = {environ[name] for name in ("VAULT_TOKEN", "BAO_TOKEN") if environ.get(name)}
    if not addr or addr != values.get("VAULT_ADDR", values.get("BAO_ADDR")) or (tokens - {token}):
        return dict(environ), None
    dropped = [name for name in _SOURCED if name in environ]
    env = {name: value for name, value in environ.items() if name not in dropped}
    verb = "comes" if len(dropped) == 1 else "come"
    return env, (
        f"{', '.join(dropped)} {verb} from {dev_dir / 'vault.env'} (sourced "
        "earlier): not used; nothing needs sourcing"
    )


def names_credentials(environ: Mapping[str, str]) -> bool:
    return any(environ.get(name) or environ.get(f"{name}_FILE") for name in _CREDENTIALS)


class UntrustedDevDir(Exception):
    """``.dev/`` (or a file in it) is not the current user's alone: why, in words."""


def read_private(dev_dir: Path, name: str) -> str | None:
    """The text of ``dev_dir/name``, or None when either is missing or unreadable. Raises
    :class:`UntrustedDevDir` when ``dev_dir`` is a link, belongs to another user or may be
    written by others, or when the file does (checked on the opened descriptors, so the
    directory cannot be swapped between the check and the read)."""
    try:
        dir_fd = os.open(dev_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if os.path.islink(dev_dir):
            raise UntrustedDevDir("it is a symbolic link") from None
        raise UntrustedDevDir(f"cannot open it ({exc.strerror})") from None
    try:
        _check_owned(os.fstat(dir_fd), "it")
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise UntrustedDevDir(f"cannot open its {name} ({exc.strerror})") from None
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise UntrustedDevDir(f"its {name} is not a regular file")
            _check_owned(info, f"its {name}")
            try:
                return handle.read().decode("utf-8")
            except UnicodeDecodeError:
                return None
    finally:
        os.close(dir_fd)


def _check_owned(info: os.stat_result, what: str) -> None:
    if info.st_uid != os.geteuid():
        raise UntrustedDevDir(
            f"{what} belongs to uid {info.st_uid}, not to this user ({os.geteuid()})"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UntrustedDevDir(f"others may write to {what} (mode {stat.S_IMODE(info.st_mode):04o})")


def dev_environment(
    environ: Mapping[str, str], identity: str, dev: DevEnv
) -> tuple[dict[str, str], str]:
    """``environ`` with the dev Vault's address and ``identity``'s credentials from
    ``.dev/`` (:func:`find_dev_env` found none in the environment); and the line that says
    so."""
    env = {**environ, "VAULT_ADDR": dev.addr}
    said = f"using the dev Vault at {dev.addr} ({dev.dir / 'vault.env'})"
    if dev.store_url and not any(
        environ.get(name) for name in ("STORE_URL", "STORE_URL_FILE", "STORE_PATH")
    ):
        env["STORE_URL"] = dev.store_url  # make run-ha's store goes with its Vault
    if identity == ANY:
        return env, said
    if identity == ROOT:
        if dev.root_token:
            env["VAULT_TOKEN"] = dev.root_token
            said += ", with its root token (dev only)"
        return env, said
    found = dev.approle_dir(identity)
    if found is not None:
        env["VAULT_ROLE_ID_FILE"] = str(found / "role_id")
        env["VAULT_SECRET_ID_FILE"] = str(found / "secret_id")
        said += f", as {identity} ({found}/)"
    return env, said


def read_cluster(dev_dir: Path = DEV_DIR) -> dict[str, list[str]] | None:
    """``.dev/cluster.json`` (``make run``, ``make run-ha``): each role's URLs, or None
    when there is none (no stack runs here), it is unreadable, or ``.dev/`` is not this
    user's alone (said on stderr)."""
    try:
        text = read_private(dev_dir, CLUSTER_JSON)
    except UntrustedDevDir as exc:
        print(f"ivr-vault: {dev_dir}/ not used: {exc}", file=sys.stderr, flush=True)
        return None
    try:
        processes = json.loads(text)["processes"] if text is not None else None
        urls: dict[str, list[str]] = {}
        for process in processes or ():
            urls.setdefault(str(process["role"]), []).append(str(process["url"]))
    except (ValueError, KeyError, TypeError):
        return None
    return urls or None


def cannot_tell(what: str, dev_dir: Path = DEV_DIR) -> str:
    """Why the stack in this directory is unknown: the one line doctor and call say."""
    return (
        f"cannot tell which {what} runs here: {dev_dir}/ has no {CLUSTER_JSON} "
        f"(is `make run` running in this directory?)"
    )
