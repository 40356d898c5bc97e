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
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from service.cli.dev import DEV_DIR

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
    set (then ``.dev/`` is not even looked at) or there is no readable ``vault.env``."""
    if environ.get("VAULT_ADDR"):
        return None
    try:
        text = (dev_dir / "vault.env").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    values = dict(_EXPORT.findall(text))
    addr = values.get("VAULT_ADDR") or values.get("BAO_ADDR")
    if not addr:
        return None
    return DevEnv(dev_dir, addr, values.get("VAULT_TOKEN") or values.get("BAO_TOKEN"),
                  values.get("STORE_URL"))


# What ``source .dev/vault.env`` puts in a shell.
_SOURCED = ("VAULT_ADDR", "VAULT_TOKEN", "BAO_ADDR", "BAO_TOKEN")


def unsourced(environ: Mapping[str, str], dev_dir: Path = DEV_DIR,
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
    if not addr or addr != values.get("VAULT_ADDR", values.get("BAO_ADDR")) or (
            tokens - {token}):
        return dict(environ), None
    dropped = [name for name in _SOURCED if name in environ]
    env = {name: value for name, value in environ.items() if name not in dropped}
    verb = "comes" if len(dropped) == 1 else "come"
    return env, (f"{', '.join(dropped)} {verb} from {dev_dir / 'vault.env'} (sourced "
                 "earlier): not used; nothing needs sourcing")


def names_credentials(environ: Mapping[str, str]) -> bool:
    return any(environ.get(name) or environ.get(f"{name}_FILE") for name in _CREDENTIALS)


def dev_environment(environ: Mapping[str, str], identity: str,
                    dev: DevEnv) -> tuple[dict[str, str], str]:
    """``environ`` with the dev Vault's address and, when the environment names no
    credentials, ``identity``'s from ``.dev/``; and the line that says so."""
    env = {**environ, "VAULT_ADDR": dev.addr}
    said = f"using the dev Vault at {dev.addr} ({dev.dir / 'vault.env'})"
    if dev.store_url and not any(environ.get(name) for name in (
            "STORE_URL", "STORE_URL_FILE", "STORE_PATH")):
        env["STORE_URL"] = dev.store_url  # make run-ha's store goes with its Vault
    if names_credentials(environ) or identity == ANY:
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
