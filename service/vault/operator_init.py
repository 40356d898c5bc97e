"""Initialise and unseal an OpenBao/Vault server in server mode (integrated Raft storage).

One piece of code for every Vault this project starts itself: ``make run``'s (through
:class:`~service.devtools.devstack.DevVault`, which the tests use too), docker compose's
``vault-unseal`` step (``ivr-vault operator unseal``) and ``ivr-vault restore``, which must
unseal a Vault that a snapshot has just replaced.

A Vault in server mode starts sealed, every time. Here it is opened with the keys kept in a
:class:`DevKeyring` file: **for development only**. A production Vault's unseal shares go to
people (docs/deployment.md#production), never into a file next to the data they open.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
import requests
import structlog

from service.errors import VaultError, VaultRequestError, VaultSealed, VaultUnavailable
from service.files import write_private
from service.settings import Secret
from service.vault.client import translate_errors

log = structlog.get_logger("ivr.vault.init")

# What to wait for: facts measured on this machine (OpenBao 2.7.2, one-node Raft,
# performance_multiplier = 1): init 1.5-2 s, unseal to active 0.1-0.3 s. Generous
# deadlines, because two cores are shared with other work.
REQUEST_TIMEOUT_S = 30.0  # init is the slow one: 2 s measured, more on a busy machine
ACTIVE_TIMEOUT_S = 30.0
_POLL_S = 0.05

# sys/health answers these while the server listens: 200 active, 429 standby, 472/473
# performance or DR standby, 501 not initialised, 503 sealed.
LISTENING = (200, 429, 472, 473, 501, 503)


@dataclass(frozen=True)
class InitKeys:
    """What ``sys/init`` hands out once: the unseal key(s) and the initial root token."""

    unseal_keys: tuple[Secret, ...]
    root_token: Secret

    def __repr__(self) -> str:
        return f"InitKeys({len(self.unseal_keys)} unseal keys, root_token=...)"


class DevKeyring:
    """The unseal keys and root tokens of the development Vaults initialised in one place,
    newest first, in one file of mode 0600. DEV ONLY: whoever reads it owns the Vault.

    Format (text, one ``name=value`` per line; ``#`` starts a comment; a blank line ends a
    Vault's block)::

        # DEV ONLY ...
        unseal_key=<base64>
        root_token=<token>

        unseal_key=<base64 of an older Vault, e.g. one whose data was lost>
        root_token=<token>

    Older blocks are kept on purpose: after ``ivr-vault restore`` replaces a Vault's data
    with a snapshot, the Vault opens only with the keys of the Vault the snapshot came
    from (measured: the new keys are refused with "failed to decrypt keys from storage").
    """

    HEADER = (
        "# DEV ONLY - unseal keys and root tokens of the local development OpenBao (make run,\n"
        "# docker compose without the production override). Anyone who can read this file\n"
        "# owns that Vault. A production Vault's unseal shares are never kept in a file:\n"
        "# docs/deployment.md#production. One block per Vault initialised here, newest first.\n"
    )

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> list[InitKeys]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        found: list[InitKeys] = []
        for block in _blocks(text):
            keys = tuple(Secret(v) for k, v in block if k == "unseal_key")
            roots = [Secret(v) for k, v in block if k == "root_token"]
            if keys and roots:
                found.append(InitKeys(keys, roots[0]))
        return found

    def write(self, keyring: Sequence[InitKeys]) -> None:
        """Replace the file atomically (a crash never leaves half a key), mode 0600."""
        body = "\n".join(
            "".join(f"unseal_key={key.reveal()}\n" for key in keys.unseal_keys)
            + f"root_token={keys.root_token.reveal()}\n"
            for keys in keyring
        )
        write_private(self.path, self.HEADER + "\n" + body)

    def add(self, keys: InitKeys) -> None:
        self.write([keys, *self.read()])

    def promote(self, keys: InitKeys) -> None:
        """Put the block that opened the Vault first: it is the one in use now."""
        rest = [k for k in self.read() if k != keys]
        self.write([keys, *rest])


def _blocks(text: str) -> Iterator[list[tuple[str, str]]]:
    block: list[tuple[str, str]] = []
    for raw in [*text.splitlines(), ""]:
        line = raw.strip()
        if not line:
            if block:
                yield block
            block = []
        elif not line.startswith("#") and "=" in line:
            name, _, value = line.partition("=")
            block.append((name.strip(), value.strip()))


class VaultServer:
    """The endpoints of one server that need no token (init, seal status, unseal,
    health), and the one routine that makes a dev Vault usable: :meth:`open`."""

    def __init__(
        self, addr: str, *, verify: str | bool = True, timeout: float = REQUEST_TIMEOUT_S
    ) -> None:
        self.addr = addr
        self.verify = verify
        session = requests.Session()
        session.trust_env = False  # no proxy or netrc surprises on loopback
        session.verify = verify  # hvac uses the session's, not its own verify=
        self._hvac = hvac.Client(url=addr, verify=verify, timeout=timeout, session=session)

    def close(self) -> None:
        self._hvac.adapter.close()

    def seal_status(self) -> dict[str, Any]:
        with translate_errors("seal status", self.addr):
            status: dict[str, Any] = self._hvac.sys.read_seal_status()
            return status

    def health_status(self) -> int:
        """The HTTP status of ``sys/health`` (see :data:`LISTENING`)."""
        with translate_errors("health", self.addr):
            response = self._hvac.adapter.request("GET", "/v1/sys/health", raise_exception=False)
            return 200 if isinstance(response, dict) else int(response.status_code)

    def initialise(self, *, shares: int = 1, threshold: int = 1) -> InitKeys:
        with translate_errors("init", self.addr):
            answer = self._hvac.sys.initialize(secret_shares=shares, secret_threshold=threshold)
            return InitKeys(
                tuple(Secret(k) for k in answer["keys_base64"]), Secret(answer["root_token"])
            )

    def try_unseal(self, keys: Sequence[Secret]) -> bool:
        """Submit one Vault's keys; False when they are not this Vault's. Progress left by
        an earlier attempt is reset first, so a wrong share never mixes with right ones."""
        try:
            with translate_errors("unseal", self.addr):
                self._hvac.sys.submit_unseal_key(reset=True)
                for key in keys:
                    status = self._hvac.sys.submit_unseal_key(key=key.reveal())
                    if not status.get("sealed", True):
                        return True
                return False
        except VaultRequestError:
            return False  # "failed to decrypt keys from storage": another Vault's key

    def accepts_token(self, token: Secret) -> bool:
        try:
            with translate_errors("token lookup", self.addr):
                self._hvac.adapter.request(
                    "GET", "/v1/auth/token/lookup-self", headers={"X-Vault-Token": token.reveal()}
                )
            return True
        except VaultError:
            return False

    def wait_listening(self, *, timeout: float = 30.0) -> None:
        _wait_until(lambda: self.health_status() in LISTENING, timeout=timeout, what="reachable")

    def wait_active(self, *, timeout: float = ACTIVE_TIMEOUT_S) -> None:
        _wait_until(lambda: self.health_status() == 200, timeout=timeout, what="active")

    def wait_sealed(self, *, timeout: float = ACTIVE_TIMEOUT_S) -> None:
        _wait_until(lambda: bool(self.seal_status()["sealed"]), timeout=timeout, what="sealed")

    def join(self, keys: InitKeys, *, timeout: float = ACTIVE_TIMEOUT_S) -> None:
        """A new node of a Raft cluster (its config has ``retry_join``) is given the
        cluster's unseal key: with it the node proves it may join, joins, and unseals
        itself (it reports sealed until it has). It refuses the key ("not initialized")
        until its retry_join has reached the active node: asked again until then."""

        def submitted() -> bool:
            try:
                with translate_errors("unseal", self.addr):
                    for key in keys.unseal_keys:
                        self._hvac.sys.submit_unseal_key(key=key.reveal())
            except VaultRequestError:
                return False
            return True

        _wait_until(submitted, timeout=timeout, what="joined")

    def open(self, keyring: DevKeyring, *, initialise_if_new: bool, wait: bool = True) -> InitKeys:
        """Make a (dev) Vault usable: :func:`open_cluster` of this one server."""
        return open_cluster([self], keyring, initialise_if_new=initialise_if_new, wait=wait)


def open_cluster(
    servers: Sequence[VaultServer],
    keyring: DevKeyring,
    *,
    initialise_if_new: bool,
    wait: bool = True,
) -> InitKeys:
    """Make a (dev) Vault usable, one server or the nodes of a Raft cluster: initialise
    the first node when none is (one key share: dev only), unseal every initialised node
    with the first keyring block that opens it, hand a new node (``retry_join`` in its
    config) the cluster's key so that it joins, and (``wait``) wait until a node is active
    and every node unsealed. Returns that block: its root token is valid for this data.

    Initialised nodes are unsealed before new ones join: a node joins through the leader,
    and a cluster restarted sealed elects one only once a quorum is unsealed."""
    statuses = [server.seal_status() for server in servers]
    if not any(status["initialized"] for status in statuses):
        if not initialise_if_new:
            raise VaultSealed("Vault is not initialised yet", addr=servers[0].addr)
        started = time.monotonic()
        keys = servers[0].initialise()
        keyring.add(keys)  # at once: these keys exist nowhere else
        log.info(
            "vault initialised",
            keyring=str(keyring.path),
            seconds=round(time.monotonic() - started, 2),
        )
        statuses[0] = servers[0].seal_status()
    blocks = keyring.read()
    opened: InitKeys | None = None
    for server, status in zip(servers, statuses, strict=True):
        if status["initialized"] and status["sealed"]:
            tried = [opened] if opened is not None else blocks
            opened = next((k for k in tried if server.try_unseal(k.unseal_keys)), None)
            if opened is None:
                raise VaultSealed(
                    f"none of the unseal keys in {keyring.path} opens this "
                    "Vault: restore the keys file that belongs to its data "
                    "(docs/backup.md)",
                    addr=server.addr,
                )
    if opened is None:  # every initialised node was open already: whose token is valid?
        active = _wait_for_active(servers)  # a token lookup needs an active node
        opened = next((k for k in blocks if active.accepts_token(k.root_token)), None)
        if opened is None:
            raise VaultSealed(
                f"no root token in {keyring.path} is valid for this Vault", addr=active.addr
            )
    joining = [s for s, status in zip(servers, statuses, strict=True) if not status["initialized"]]
    if joining:
        _wait_for_active(servers)  # a node joins through the active one
    for server in joining:
        server.join(opened)
    if blocks[:1] != [opened]:
        keyring.promote(opened)
    if wait:
        _wait_for_active(servers)
        _wait_until(
            lambda: not any(s.seal_status()["sealed"] for s in servers),
            timeout=ACTIVE_TIMEOUT_S,
            what="unsealed on every node",
        )
    return opened


def _wait_for_active(servers: Sequence[VaultServer]) -> VaultServer:
    """The node that is active, once one is (a node down meanwhile is no error)."""
    found: list[VaultServer] = []

    def one_active() -> bool:
        for server in servers:
            try:
                if server.health_status() == 200:
                    found.append(server)
                    return True
            except VaultUnavailable:
                continue
        return False

    _wait_until(one_active, timeout=ACTIVE_TIMEOUT_S, what="active")
    return found[0]


def _wait_until(check: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except VaultUnavailable:
            pass  # still starting, or stepping down after a snapshot restore
        if time.monotonic() >= deadline:
            raise VaultUnavailable(f"Vault did not become {what} within {timeout:.0f}s")
        time.sleep(_POLL_S)


def keep_unsealed(
    servers: Sequence[VaultServer],
    keyring: DevKeyring,
    *,
    initialise_if_new: bool,
    token_file: Path | None = None,
    interval: float | None = None,
) -> None:
    """docker compose's ``vault-unseal`` step (dev only): open the Vault (one server or
    the nodes of a cluster, :func:`open_cluster`), write its root token to ``token_file``
    for the init step, and with ``interval``, keep watching: a restarted node comes back
    sealed, and is unsealed again within ``interval`` seconds without a human. A node that
    does not answer yet is left for a later round. Never logs a key or a token."""
    state = ""  # "open" or "failing": each change of state is logged once
    while True:
        try:
            if len(servers) == 1:
                servers[0].wait_listening()
            up = [s for s in servers if _listening(s)]
            if not up:
                raise VaultUnavailable("no node answers")
            statuses = [s.seal_status() for s in up]
            closed = any(st["sealed"] or not st["initialized"] for st in statuses)
            if closed or state != "open":
                keys = open_cluster(up, keyring, initialise_if_new=initialise_if_new, wait=False)
                if token_file is not None:  # before Vault turns healthy: init may read it
                    _write_token(token_file, keys.root_token)
                _wait_for_active(up)
                log.info("vault unsealed" if closed else "vault is unsealed")
            state = "open"
        except VaultError as exc:
            if state != "failing":
                log.warning("vault not open yet; trying again", kind=exc.kind)
            state = "failing"
        if interval is None:
            if state != "open":
                raise VaultSealed("Vault could not be opened with the keys at hand")
            return
        time.sleep(interval)


def _listening(server: VaultServer) -> bool:
    try:
        return server.health_status() in LISTENING
    except VaultUnavailable:
        return False


def _write_token(path: Path, token: Secret) -> None:
    write_private(path, token.reveal() + "\n")
