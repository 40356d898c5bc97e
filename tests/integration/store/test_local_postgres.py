"""``LocalPostgres`` (service/devtools/postgres.py), the PostgreSQL that ``make test``
starts and ``make run-ha`` will: TCP on loopback with SCRAM passwords as in production, a
URL with no password in it, data kept across a restart when given a directory, removed
with a temporary one, and no server outliving its stop."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from service.devtools.postgres import LocalPostgres
from service.errors import ConfigError
from tests.support.postgres import password_of, pg_store_url
from tests.support.repo import ROOT


def test_scram_over_tcp_and_a_url_without_its_password(postgres: LocalPostgres) -> None:
    url = postgres.url
    assert url.startswith(f"postgresql://ivr_backend@127.0.0.1:{postgres.port}/ivr?passfile=")
    assert password_of(postgres, "ivr_backend") not in url
    assert stat.S_IMODE(postgres.passfile.stat().st_mode) == 0o600
    psycopg.connect(url).close()  # the runtime role logs in with the passfile
    with psycopg.connect(postgres.url_for("ivr")) as db:  # the admin reads the server's rules
        method = db.execute(
            "SELECT auth_method FROM pg_hba_file_rules WHERE type = 'host' LIMIT 1"
        ).fetchone()
        assert method == ("scram-sha-256",)
        assert db.execute("SELECT current_setting('listen_addresses')").fetchone() == ("127.0.0.1",)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(f"postgresql://ivr:wrong@127.0.0.1:{postgres.port}/ivr").close()


def test_a_kept_cluster_keeps_its_data_and_a_temporary_one_goes() -> None:
    state = Path(tempfile.mkdtemp(prefix="ivr-pg-kept-"))
    os.chmod(state, 0o711)  # the postgres user must reach it when this runs as root
    try:
        kept = LocalPostgres(state)
        kept.start()
        with psycopg.connect(kept.owner_url, autocommit=True) as db:
            db.execute("CREATE TABLE kept (n INTEGER)")
            db.execute("INSERT INTO kept VALUES (7)")
        pid = kept.process.pid if kept.process else 0
        kept.stop()
        assert not Path(f"/proc/{pid}").exists()
        again = LocalPostgres(state)  # another port, the same data and password
        again.start()
        with psycopg.connect(again.owner_url) as db:
            assert db.execute("SELECT n FROM kept").fetchone() == (7,)
        again.stop()
    finally:
        shutil.rmtree(state, ignore_errors=True)
    temporary = LocalPostgres()
    temporary.start()
    temporary.stop()
    assert not temporary.base.exists()


def test_a_directory_the_server_user_cannot_reach_is_refused_in_one_line(tmp_path: Path) -> None:
    """As root the server runs as the postgres user; pytest's own tmp_path (mode 0700
    under /tmp/pytest-of-root) is out of its reach. As another user it is its own."""
    server = LocalPostgres(tmp_path / "pg")
    if os.geteuid() != 0:
        server.start()
        server.stop()
        return
    with pytest.raises(ConfigError, match=r"the postgres user .* cannot reach it"):
        server.start()


def test_a_killed_owner_leaves_no_server_behind(tmp_path: Path) -> None:
    """SIGKILL to the process that started it (no chance to stop it): the server gets
    SIGTERM from the kernel (PR_SET_PDEATHSIG, set after the switch to the postgres user)
    and shuts down."""
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from service.devtools.postgres import LocalPostgres\n"
            "server = LocalPostgres(); server.start()\n"
            "print(server.process.pid, server.base, flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert owner.stdout is not None
        pid, base = owner.stdout.readline().split()
        assert Path(f"/proc/{pid}").exists()
    finally:
        owner.kill()
        owner.wait()
    deadline = time.monotonic() + 15
    while running(int(pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not running(int(pid))
    shutil.rmtree(base, ignore_errors=True)  # nobody was left to remove it


def running(pid: int) -> bool:
    """Alive and not a zombie waiting for init to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


FORBIDDEN = {
    "CREATE": "CREATE TABLE planted (n INTEGER)",
    "CREATE SCHEMA": "CREATE SCHEMA planted",
    "ALTER": "ALTER TABLE accounts ADD COLUMN planted INTEGER",
    "DROP": "DROP TABLE call_answers",
    "TRUNCATE": "TRUNCATE card_lockout",
    "COPY TO PROGRAM": "COPY (SELECT 1) TO PROGRAM 'touch /tmp/ivr-planted'",
    "pg_read_file": "SELECT pg_read_file('PG_VERSION')",
    "CREATE ROLE": "CREATE ROLE planted LOGIN",
}


def test_the_runtime_role_reads_and_writes_rows_and_nothing_else(postgres: LocalPostgres) -> None:
    """docs/security.md, "PostgreSQL least privilege": the backends connected as the image's
    superuser, who may do all of
    FORBIDDEN (on the old code, ``ivr``). The runtime role they use now has the DML on
    every table the migrations made, granted by a rule (not a list), and nothing else."""
    url = pg_store_url(postgres, "runtime_role")
    assert url.conninfo is not None
    conninfo = url.conninfo.reveal()
    assert "ivr_backend@" in conninfo
    with psycopg.connect(conninfo, autocommit=True) as db:
        assert db.execute(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
        ).fetchone() == (False,)
        db.execute("INSERT INTO lookup_canaries(version, hmac, at) VALUES (99, 'h', 0)")
        db.execute("UPDATE lookup_canaries SET at = 1 WHERE version = 99")
        assert db.execute("SELECT at FROM lookup_canaries WHERE version = 99").fetchone() == (1.0,)
        db.execute("DELETE FROM lookup_canaries WHERE version = 99")
        tables = {
            row[0]
            for row in db.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        for table in tables:  # every table, whichever migration made it
            for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE"):
                assert db.execute(
                    "SELECT has_table_privilege(%s, %s)", (table, privilege)
                ).fetchone() == (True,), table
        refused = {}
        for name, statement in FORBIDDEN.items():
            try:
                db.execute(statement)
            except psycopg.errors.InsufficientPrivilege:
                refused[name] = True
            else:
                refused[name] = False
    assert refused == dict.fromkeys(FORBIDDEN, True)
    assert not Path("/tmp/ivr-planted").exists()
