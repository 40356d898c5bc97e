"""Sealed backups against a real OpenBao and the real CLI (docs/backup.md, docs/security.md
"backups sealed and signed"): one made by ``ivr-vault backup`` as the ``ivr-backup``
identity restores whole into either store engine; a backup that was altered, encrypted to
another identity, signed by another key or not signed at all is refused in one line, exit
2, with nothing touched: the store file byte for byte, no copy aside, and Vault's data
(a key made after the backup is still there, which a restored snapshot would remove).

The attacker here knows the operator's age public key (it is no secret) and may write
the backup store; what it lacks is a token that may sign with ``ivr-backup-sign``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pyrage import x25519

from service.backup.transfer import import_from_sqlite
from service.errors import VaultNotFound
from service.settings import StoreUrl
from service.store.accounts import Store
from service.store.migrations import TABLES
from service.vault.client import VaultClient
from tests.support.backups import (
    OperatorKeys,
    flip_a_payload_byte,
    opened,
    plain_backup,
    sealed_backup,
)
from tests.support.demo import ACCOUNT
from tests.support.keys import PrivateVault, private_vault
from tests.support.postgres import ENGINES, pg_store_url
from tests.support.stack import ROLES, make_stack
from tests.support.store import query

FORGED_BALANCE = "999999.00"


@dataclass
class Lab:
    pv: PrivateVault
    keys: OperatorKeys
    backup: Path  # made by `ivr-vault backup` as ivr-backup
    store: Path  # the store it was made from (the demo account)
    home: Path

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """``ivr-vault ARGS`` with only ``env``."""
        return self.python("-m", "service", *args, **env)

    def python(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """``python ARGS`` with only ``env``."""
        return subprocess.run(
            [sys.executable, *args],
            cwd=self.home,
            env={"PATH": os.environ.get("PATH", ""), "HOME": str(self.home), **env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def restore(
        self, backup: Path, store_env: dict[str, str], *flags: str, identity: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self.run(
            "restore",
            "--from",
            str(backup),
            "--identity",
            str(identity or self.keys.identity),
            *flags,
            VAULT_ADDR=self.pv.vault.addr,
            VAULT_TOKEN=self.pv.vault.root_token.reveal(),
            **store_env,
        )

    def marker(self) -> str:
        """A Transit key made now, after the backup: a restored snapshot removes it."""
        name = f"after-backup-{uuid.uuid4().hex[:8]}"
        self.pv.admin.write(f"transit/keys/{name}", "create marker", {"type": "aes256-gcm96"})
        return name

    def has_key(self, name: str) -> bool:
        try:
            self.pv.admin.read(f"transit/keys/{name}", "read marker")
        except VaultNotFound:
            return False
        return True


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    home = tmp_path_factory.mktemp("sealed")
    with private_vault(home, [*ROLES, "ivr-backup"]) as pv:
        stack = make_stack(pv.vault, pv.credentials, home / "stack", start=False)  # the demo
        keys = OperatorKeys.make(home / "operator", pv.admin)
        role = pv.credentials["ivr-backup"]
        lab = Lab(pv, keys, home / "backup.tar.gz.age", stack.store_path, home)
        made = lab.run(
            "backup",
            "--out",
            str(lab.backup),
            VAULT_ADDR=pv.vault.addr,
            VAULT_ROLE_ID=role.role_id,
            VAULT_SECRET_ID=role.secret_id,
            STORE_PATH=str(stack.store_path),
            BACKUP_RECIPIENTS=keys.recipient,
        )
        assert made.returncode == 0, made.stderr
        assert "encrypted to 1 age recipient(s) and signed by the backup identity" in made.stdout
        yield lab


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("engine", ENGINES)
def test_a_sealed_backup_restores_whole(
    lab: Lab, engine: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    marker = lab.marker()
    if engine == "sqlite":
        target = StoreUrl.sqlite(str(tmp_path / "accounts.sqlite3"))
        store_env = {"STORE_PATH": target.path}
    else:  # a restore replaces tables: the migration role's URL (docs/backup.md)
        target = pg_store_url(request.getfixturevalue("postgres"), "sealed", owner=True)
        assert target.conninfo is not None
        store_env = {"STORE_URL": target.conninfo.reveal()}
    done = lab.restore(lab.backup, store_env)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "same cluster; still unsealed" in done.stdout
    assert (
        f"ivr-vault: {lab.backup}: made 20" in done.stdout
        and f"from Vault cluster {cluster_of(lab)}; decrypted, its "
        "signature and every member checked"
        in done.stdout
    )
    assert "warning" not in done.stderr
    assert not lab.has_key(marker)  # Vault's data is the backup's again
    restored = Store(target)
    try:
        assert restored.has_account(ACCOUNT)
    finally:
        restored.close()


@dataclass(frozen=True)
class Forged:
    """The genuine backup's members and cluster, with the attacker's balance in the store."""

    snapshot: bytes
    store: bytes
    cluster_id: str

    @classmethod
    def make(cls, lab: Lab, directory: Path) -> Forged:
        with opened(lab.backup, lab.keys.identity) as genuine:
            snapshot, cluster = genuine.snapshot.read_bytes(), genuine.manifest.cluster_id
            shutil.copy(genuine.store, directory / "forged.sqlite3")
        with closing(sqlite3.connect(directory / "forged.sqlite3")) as db, db:
            db.execute("UPDATE accounts SET balance = ?", (FORGED_BALANCE,))
        return cls(snapshot, (directory / "forged.sqlite3").read_bytes(), cluster)


ATTACKS = {
    "tampered": "cannot be decrypted with --identity {identity} (not encrypted to it, or "
    "altered since: decryption error); nothing restored",
    "wrong identity": "cannot be decrypted with --identity {identity} (not encrypted to it, "
    "or altered since: No matching keys found); nothing restored",
    "forged signature": "its signature does not verify against --verify-key {verify}: not "
    "made by this deployment's backup identity, or altered; nothing restored",
    "unsigned": "not signed (no manifest.sig): nothing proves the backup identity made it; "
    "nothing restored",
}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("attack", list(ATTACKS))
def test_a_backup_failing_a_check_is_refused_with_nothing_touched(
    lab: Lab, attack: str, engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    attacker = tmp_path / "attacker"
    attacker.mkdir()
    to = x25519.Recipient.from_str(lab.keys.recipient)  # the operator's key is public
    identity = lab.keys.identity
    if attack == "tampered":  # the genuine backup, one byte changed in transit
        path = attacker / "backup.tar.gz.age"
        shutil.copy(lab.backup, path)
        flip_a_payload_byte(path)
    elif attack == "wrong identity":  # the genuine backup, opened with another identity
        path = lab.backup
        identity = attacker / "identity.txt"
        identity.write_text(f"{x25519.Identity.generate()}\n")
        shutil.copy(lab.keys.verify_key, attacker)
    else:  # the attacker's store, encrypted to the operator, signed by its own key or not
        forged = Forged.make(lab, attacker)
        path = sealed_backup(
            attacker / "backup.tar.gz.age",
            to,
            forged.snapshot,
            forged.store,
            signer=Ed25519PrivateKey.generate() if attack == "forged signature" else None,
            cluster_id=forged.cluster_id,
        )
    target = target_store(lab, engine, tmp_path, request)

    done = lab.restore(path, target.env, identity=identity)

    says = ATTACKS[attack].format(identity=identity, verify=lab.keys.verify_key)
    assert (done.returncode, done.stderr, done.stdout) == (
        2,
        f"ivr-vault: bad input: --from: {path}: {says}\n",
        "",
    )
    assert_untouched(lab, target)


@dataclass
class Target:
    """A store to restore into (holding what the backed-up one holds) as it was before the
    restore, and a marker key made in Vault after the backup."""

    env: dict[str, str]
    fingerprint: Callable[[], object]
    before: object
    marker: str
    home: list[str]  # the working directory's files (a PostgreSQL store's copy aside goes there)


def target_store(lab: Lab, engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> Target:
    if engine == "sqlite":
        path = tmp_path / "accounts.sqlite3"
        shutil.copy(lab.store, path)
        env = {"STORE_PATH": str(path)}

        def fingerprint() -> object:  # byte for byte, and nothing beside it
            return digest(path), sorted(p.name for p in tmp_path.glob("accounts.sqlite3*"))

    else:  # the migration role's URL, as a restore needs (docs/backup.md)
        url = pg_store_url(request.getfixturevalue("postgres"), "attacked", owner=True)
        import_from_sqlite(lab.store, url)
        assert url.conninfo is not None
        env = {"STORE_URL": url.conninfo.reveal()}

        def fingerprint() -> object:  # every row of every table
            store = Store(url)
            try:
                return [query(store, f"SELECT * FROM {table} ORDER BY 1") for table, _ in TABLES]
            finally:
                store.close()

    return Target(env, fingerprint, fingerprint(), lab.marker(), sorted(os.listdir(lab.home)))


def assert_untouched(lab: Lab, target: Target) -> None:
    assert target.fingerprint() == target.before  # the store
    assert sorted(os.listdir(lab.home)) == target.home  # no copy aside
    assert lab.has_key(target.marker)  # Vault's data: no snapshot went in
    assert not VaultClient(lab.pv.vault.addr, lab.pv.vault.root_token, timeout=5).health()["sealed"]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_forged_plain_backup_is_refused_without_the_flag(
    lab: Lab, engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The attack on the release before: a plain tarball with the attacker's store and
    digests that match it (the manifest sat inside the same file) was restored; on that
    code this restore answered 0 and the demo account's balance became FORGED_BALANCE."""
    attacker = tmp_path / "attacker"
    attacker.mkdir()
    forged = Forged.make(lab, attacker)
    path = plain_backup(
        attacker / "backup.tar.gz", forged.snapshot, forged.store, forged.cluster_id
    )
    target = target_store(lab, engine, tmp_path, request)

    done = lab.run(
        "restore",
        "--from",
        str(path),
        VAULT_ADDR=lab.pv.vault.addr,
        VAULT_TOKEN=lab.pv.vault.root_token.reveal(),
        **target.env,
    )

    assert (done.returncode, done.stderr) == (
        2,
        f"ivr-vault: bad input: --from: {path} is a plain backup (from before backups "
        "were sealed): neither encrypted nor signed, nothing proves who made it; restore "
        "it only if you know where it came from, with --allow-unsealed\n",
    )
    assert_untouched(lab, target)


# The CLI under resource.getrusage: its own peak RSS (KiB) printed last on stderr.
# The peak is /proc's VmHWM, this process's own since its exec: ru_maxrss would carry the
# parent's across fork and exec (Linux keeps the larger in the signal struct), and pytest
# itself held 428 MiB in a whole run, which this test once reported as both peaks.
MEASURED = (
    "import atexit, runpy, sys\n"
    "def peak():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM:'):\n"
    "            print('peak_rss_kib', line.split()[1], file=sys.stderr)\n"
    "atexit.register(peak)\n"
    "sys.argv = ['ivr-vault', *sys.argv[1:]]\n"
    "runpy.run_module('service', run_name='__main__')\n"
)
LARGE_ROWS = 160_000  # x ~1.1 KB of random text: a store of ~190 MB
RSS_BOUND_MIB = 160


def fill(store: Path, rows: int) -> None:
    """``rows`` remembered answers of random text: incompressible bulk, like a big store's."""
    with closing(sqlite3.connect(store)) as db, db:
        db.executemany(
            "INSERT INTO call_answers (call_sid, request_key, status, body, at) "
            "VALUES (?, ?, 200, ?, 0)",
            ((f"CA{i:032x}", f"k{i}", os.urandom(512).hex()) for i in range(rows)),
        )


def test_a_large_store_is_backed_up_and_restored_in_bounded_memory(
    lab: Lab, tmp_path: Path
) -> None:
    """Streamed both ways: the store is larger than the bound, so a version holding it
    whole (the release before read the store and the tarball's members into memory) would
    not fit under it."""
    big = tmp_path / "big.sqlite3"
    shutil.copy(lab.store, big)
    fill(big, LARGE_ROWS)
    size_mib = big.stat().st_size / (1 << 20)
    assert size_mib > RSS_BOUND_MIB + 20, size_mib
    role = lab.pv.credentials["ivr-backup"]
    out = tmp_path / "big.tar.gz.age"

    def measured(*args: str, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
        done = lab.python("-c", MEASURED, *args, **env)
        peak = float(done.stderr.strip().splitlines()[-1].split()[-1]) / 1024
        return done, peak

    made, backup_peak = measured(
        "backup",
        "--out",
        str(out),
        VAULT_ADDR=lab.pv.vault.addr,
        VAULT_ROLE_ID=role.role_id,
        VAULT_SECRET_ID=role.secret_id,
        STORE_PATH=str(big),
        BACKUP_RECIPIENTS=lab.keys.recipient,
    )
    assert made.returncode == 0, made.stderr
    target = tmp_path / "restored.sqlite3"
    done, restore_peak = measured(
        "restore",
        "--from",
        str(out),
        "--identity",
        str(lab.keys.identity),
        VAULT_ADDR=lab.pv.vault.addr,
        VAULT_TOKEN=lab.pv.vault.root_token.reveal(),
        STORE_PATH=str(target),
    )
    assert done.returncode == 0, done.stderr
    print(
        f"store {size_mib:.0f} MiB, backup {out.stat().st_size / (1 << 20):.0f} MiB; "
        f"peak RSS: backup {backup_peak:.0f} MiB, restore {restore_peak:.0f} MiB"
    )
    assert backup_peak < RSS_BOUND_MIB and restore_peak < RSS_BOUND_MIB
    with closing(sqlite3.connect(target)) as db:
        assert db.execute("SELECT COUNT(*) FROM call_answers").fetchone()[0] >= LARGE_ROWS


def cluster_of(lab: Lab) -> str:
    return str(lab.pv.admin.read("sys/seal-status", "seal status")["cluster_id"])
