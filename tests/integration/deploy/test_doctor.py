"""``ivr-vault doctor`` on a real stack (OpenBao, backend and webhook processes, the store),
healthy and then with one piece broken at a time: each case must fail exactly the rows of
what it broke, with a fix, and pass the others. The Vault is private to this module: the
cases seal it, widen a policy and retire key versions (each puts things back)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from service.devtools.devstack import DevVault, free_port
from service.doctor.report import Report
from service.doctor.run import Options, run_doctor
from service.settings import Settings
from service.store.migrations import LATEST
from service.vault.bootstrap import RoleCredentials, issue_credentials, layout_dir
from service.vault.client import VaultClient
from tests.support.keys import private_vault
from tests.support.stack import ROLES, Stack, make_stack

IDENTITY_ROWS = {f"identity {role}" for role in ROLES}
KEY_ROWS = {"key rotation", "key retirement"}
CANARY = "store canary (ivr-lookup)"
CUT_OFF = "caller numbers cut off"
STEP_ROW = "step age vs backend memory"


@dataclass
class Doctored:
    vault: DevVault
    admin: VaultClient
    stack: Stack

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "VAULT_ADDR": self.vault.addr,
            "STORE_PATH": str(self.stack.store_path),
            "BACKEND_URL": self.stack.backend.url,
            "PUBLIC_BASE_URL": self.stack.webhook.url,
            **extra,
        }

    def credentials(self) -> dict[str, Path]:
        return {role: self.stack.dir / role for role in ROLES}

    def run(
        self,
        *,
        credentials: dict[str, Path] | None = None,
        webhook_url: str | None = None,
        backend_url: str | None = None,
        **env: str,
    ) -> Report:
        settings = Settings.from_environ(self.env(**env))
        return run_doctor(
            settings,
            Options(
                credentials=self.credentials() if credentials is None else credentials,
                webhook_url=webhook_url or self.stack.webhook.url,
                backend_url=backend_url,
            ),
        )

    def cli(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        creds = [f"--credentials={role}={path}" for role, path in self.credentials().items()]
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "service",
                "doctor",
                *creds,
                "--webhook-url",
                self.stack.webhook.url,
                *args,
            ],
            cwd=self.stack.dir,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={
                "PATH": os.environ.get("PATH", ""),
                "HOME": str(self.stack.dir),
                **self.env(**env),
            },
        )


@pytest.fixture(scope="module")
def doctored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Doctored]:
    root = tmp_path_factory.mktemp("doctor")
    with private_vault(root) as pv:
        (root / "stack").mkdir()
        stack = make_stack(pv.vault, pv.credentials, root / "stack")
        try:
            pv.credentials["ivr-keyadmin"].write(stack.dir / "ivr-keyadmin")
            yield Doctored(pv.vault, pv.admin, stack)
        finally:
            stack.stop()


def failed(report: Report) -> dict[str, str]:
    """Failed row → its fix (every one has a fix)."""
    rows = {check.name: check.fix for check in report.failed}
    assert all(rows.values()), rows
    return {name: str(fix) for name, fix in rows.items()}


def detail(report: Report, name: str) -> str:
    return next(check.detail for check in report.checks if check.name == name)


def test_a_healthy_stack_passes_every_check(doctored: Doctored) -> None:
    done = doctored.cli()
    assert done.returncode == 0, done.stdout + done.stderr
    table = done.stdout.splitlines()
    assert table[-1] == "all checks passed"
    marks = [line[0] for line in table[:-1] if not line.startswith(" ")]
    assert marks.count("✗") == 0 and marks.count("!") == 1  # the PCI Mode reminder
    assert len(marks) == 15
    for name in (
        "settings",
        f"vault {doctored.vault.addr}",
        *sorted(IDENTITY_ROWS),
        *sorted(KEY_ROWS),
        "store schema",
        CANARY,
        CUT_OFF,
        "backend /readyz",
        "webhook /readyz",
        STEP_ROW,
        "public URL",
    ):
        assert any(line.startswith(f"✓ {name} ") for line in table), name
    assert done.stderr == ""  # quiet: no log line, no "using the dev Vault" (VAULT_ADDR set)

    answer = json.loads(doctored.cli("--json").stdout)
    assert answer["ok"] is True
    statuses = {row["name"]: row["status"] for row in answer["checks"]}
    assert statuses.pop("Twilio PCI Mode") == "reminder"
    assert set(statuses.values()) == {"pass"}
    row = next(r for r in answer["checks"] if r["name"] == "identity ivr-webhook")
    assert "may encrypt with ivr-dtmf" in row["detail"]
    assert "denied decrypt with ivr-dtmf, HMAC with ivr-lookup" in row["detail"]
    for role in ("ivr-webhook", "ivr-backend", "ivr-keyadmin"):  # only ivr-backup signs
        row = next(r for r in answer["checks"] if r["name"] == f"identity {role}")
        assert row["detail"].endswith(", sign with ivr-backup-sign"), row["detail"]


def test_invalid_settings(doctored: Doctored) -> None:
    done = doctored.cli(VAULT_TIMEOUT="soon")
    assert done.returncode == 1
    assert done.stdout.splitlines()[0].startswith("✗ settings  invalid: VAULT_TIMEOUT")
    assert "fix: correct it" in done.stdout
    assert "soon" not in done.stdout  # the setting is named, its value never shown


def test_vault_unreachable(doctored: Doctored) -> None:
    addr = f"http://127.0.0.1:{free_port()}"
    report = doctored.run(VAULT_ADDR=addr)
    assert set(failed(report)) == {f"vault {addr}", *IDENTITY_ROWS, *KEY_ROWS, CANARY}
    assert "unreachable" in detail(report, f"vault {addr}")


def test_sealed_vault(doctored: Doctored) -> None:
    doctored.vault.seal()
    try:
        report = doctored.run()
    finally:
        doctored.vault.unseal()
    node = f"vault {doctored.vault.addr}"
    rows = failed(report)
    assert set(rows) == {
        node,
        *IDENTITY_ROWS,
        *KEY_ROWS,
        CANARY,
        "backend /readyz",
        "webhook /readyz",
    }
    assert detail(report, node).startswith("sealed")
    assert "unseal" in rows[node]


def test_wrong_secret_id(doctored: Doctored, tmp_path: Path) -> None:
    bad = tmp_path / "ivr-webhook"
    bad.mkdir()
    shutil.copy(doctored.stack.dir / "ivr-webhook" / "role_id", bad / "role_id")
    (bad / "secret_id").write_text(secrets.token_hex(16))
    report = doctored.run(credentials={**doctored.credentials(), "ivr-webhook": bad})
    rows = failed(report)
    assert set(rows) == {"identity ivr-webhook"}
    assert "login refused" in detail(report, "identity ivr-webhook")
    assert "bootstrap --credentials ivr-webhook=DIR" in rows["identity ivr-webhook"]


def test_widened_policy(doctored: Doctored) -> None:
    policy = (layout_dir() / "policies" / "ivr-webhook.hcl").read_text()
    widened = policy + '\npath "transit/decrypt/ivr-dtmf" {\n  capabilities = ["update"]\n}\n'
    doctored.admin.write("sys/policies/acl/ivr-webhook", "widen", {"policy": widened})
    try:
        report = doctored.run()
    finally:
        doctored.admin.write("sys/policies/acl/ivr-webhook", "restore", {"policy": policy})
    rows = failed(report)
    assert set(rows) == {"identity ivr-webhook"}
    assert "can decrypt with ivr-dtmf" in detail(report, "identity ivr-webhook")
    assert "policies/ivr-webhook.hcl" in rows["identity ivr-webhook"]


def test_missing_identity(doctored: Doctored) -> None:
    creds = {k: v for k, v in doctored.credentials().items() if k != "ivr-keyadmin"}
    report = doctored.run(credentials=creds)
    assert set(failed(report)) == {"identity ivr-keyadmin", *KEY_ROWS}


def test_retired_key_version_too_new(doctored: Doctored) -> None:
    admin = doctored.admin
    admin.write("transit/keys/ivr-dtmf/rotate", "rotate")
    latest = int(admin.read("transit/keys/ivr-dtmf", "read")["data"]["latest_version"])
    admin.write("transit/keys/ivr-dtmf/config", "retire", {"min_decryption_version": latest})
    try:
        report = doctored.run()
    finally:
        admin.write("transit/keys/ivr-dtmf/config", "restore", {"min_decryption_version": 1})
    rows = failed(report)
    assert set(rows) == {"key retirement"}
    assert f"ivr-dtmf: v{latest - 1} is retired but v{latest}" in detail(report, "key retirement")
    assert "CALL_MAX_AGE" in detail(report, "key retirement")
    assert "min_decryption_version=" in rows["key retirement"]


def test_auto_rotation_off(doctored: Doctored) -> None:
    doctored.admin.write("transit/keys/ivr-dtmf/config", "off", {"auto_rotate_period": "0"})
    try:
        report = doctored.run()
    finally:
        doctored.admin.write("transit/keys/ivr-dtmf/config", "on", {"auto_rotate_period": "720h"})
    assert set(failed(report)) == {"key rotation"}
    assert "ivr-dtmf: auto-rotation is off" in detail(report, "key rotation")


def test_no_store(doctored: Doctored, tmp_path: Path) -> None:
    report = doctored.run(STORE_PATH=str(tmp_path / "none.sqlite3"))
    assert set(failed(report)) == {"store schema", CANARY}
    assert "no store there" in detail(report, "store schema")
    assert not (tmp_path / "none.sqlite3").exists()  # doctor created nothing


def store_copy(
    doctored: Doctored, tmp_path: Path, change: Callable[[sqlite3.Connection], object]
) -> Path:
    copy = tmp_path / "copy.sqlite3"
    with sqlite3.connect(doctored.stack.store_path) as source, sqlite3.connect(copy) as target:
        source.backup(target)
        change(target)
    return copy


def test_store_missing_a_table(doctored: Doctored, tmp_path: Path) -> None:
    copy = store_copy(doctored, tmp_path, lambda db: db.execute("DROP TABLE caller_failures"))
    report = doctored.run(STORE_PATH=str(copy))
    assert set(failed(report)) == {"store schema", CANARY}
    assert "tables missing: caller_failures" in detail(report, "store schema")
    assert "restore the store" in failed(report)["store schema"]
    tables = {
        row[0]
        for row in sqlite3.connect(copy).execute(
            "SELECT name FROM sqlite_master WHERE type='table'"
        )
    }
    assert "caller_failures" not in tables  # doctor looked, and changed nothing


def test_store_schema_behind_this_release(doctored: Doctored, tmp_path: Path) -> None:
    copy = store_copy(
        doctored,
        tmp_path,
        lambda db: db.execute(
            "DELETE FROM schema_migrations WHERE version = (SELECT MAX(version)"
            " FROM schema_migrations)"
        ),
    )
    report = doctored.run(STORE_PATH=str(copy))
    assert "store schema" in failed(report)
    assert f"needs {LATEST}" in detail(report, "store schema")
    assert "ivr-vault store migrate" in failed(report)["store schema"]


def test_store_canary_from_another_vault(doctored: Doctored, tmp_path: Path) -> None:
    copy = store_copy(
        doctored,
        tmp_path,
        lambda db: db.execute(
            "UPDATE lookup_canaries SET hmac = 'vault:v1:' || hex(randomblob(32))"
        ),
    )
    report = doctored.run(STORE_PATH=str(copy))
    rows = failed(report)
    assert set(rows) == {CANARY}
    assert "cannot reproduce the account store's canary" in detail(report, CANARY)
    assert "docs/backup.md#restore" in rows[CANARY]


def test_numbers_cut_off_now_are_counted_with_the_way_out(
    doctored: Doctored, tmp_path: Path
) -> None:
    """Two numbers at CALLER_FAILURE_LIMIT (10) failed lookups within the window, one
    below it, one whose failures have aged out: "2 now", a reminder, never a failure."""

    def spray(db: sqlite3.Connection) -> None:
        now = time.time()
        for caller, count, at in (
            ("vault:v1:YQ==", 10, now),
            ("vault:v1:Yg==", 12, now),
            ("vault:v1:Yw==", 9, now),
            ("vault:v1:ZA==", 10, now - 2 * 86_400),
        ):
            db.executemany(
                "INSERT INTO caller_failures(caller, at) VALUES (?, ?)",
                [(caller, at - n) for n in range(count)],
            )

    report = doctored.run(STORE_PATH=str(store_copy(doctored, tmp_path, spray)))
    row = next(check for check in report.checks if check.name == CUT_OFF)
    assert (row.status, row.detail.split(" (")[0]) == ("reminder", "2 now")
    assert "`ivr-vault callers reset`" in row.detail
    assert report.ok


def test_backend_down(doctored: Doctored) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    report = doctored.run(backend_url=nowhere)
    rows = failed(report)
    assert set(rows) == {"backend /readyz"}
    assert detail(report, "backend /readyz").startswith(f"{nowhere}/readyz: no answer")
    assert "start the backend" in rows["backend /readyz"]
    assert detail(report, STEP_ROW) == f"cannot tell: no limits in the /readyz of {nowhere}"


def test_a_backend_that_forgets_steps_the_webhook_accepts(
    doctored: Doctored, tmp_path: Path
) -> None:
    """docs/security.md, "step age at the backend": the webhook accepts a PIN step for STEP_MAX_AGE
    (5 min), a backend
    told CALL_MAX_AGE=3s remembers a call's answers for 3 s. It refuses older steps now
    (tests/integration/calls/test_request_replays.py); doctor names the mismatch."""
    assert detail(doctored.run(), STEP_ROW) == (
        "STEP_MAX_AGE 300 s ≤ CALL_MAX_AGE 14400 s of 1 backend(s)"
    )
    credentials = {
        role: RoleCredentials(
            role,
            *(  # the module's own: issuing anew
                (doctored.stack.dir / role / name).read_text().strip()  # would destroy them
                for name in ("role_id", "secret_id")
            ),
        )
        for role in ROLES
    }
    short = make_stack(doctored.vault, credentials, tmp_path, backend_env={"CALL_MAX_AGE": "3s"})
    try:
        rows = failed(doctored.run(backend_url=short.backend.url))
    finally:
        short.stop()
    assert STEP_ROW in rows and "CALL_MAX_AGE" in rows[STEP_ROW]


def test_http_public_url(doctored: Doctored) -> None:
    report = doctored.run(PUBLIC_BASE_URL="http://ivr.example.com")
    rows = failed(report)
    assert set(rows) == {"public URL"}
    assert "https://" in rows["public URL"]
    assert doctored.run(PUBLIC_BASE_URL="https://ivr.example.com").ok


def test_the_backup_identity_is_checked_when_its_credentials_are_given(
    doctored: Doctored, tmp_path: Path
) -> None:
    """Its own row: it logs in, may take a Raft snapshot and sign with the backup key (what
    ``ivr-vault backup`` does) and is denied every other Transit operation. Without its
    credentials there is no row, and no failure: a deployment may back up from elsewhere."""
    issue_credentials(doctored.admin, ["ivr-backup"])["ivr-backup"].write(tmp_path / "backup")
    report = doctored.run(credentials={**doctored.credentials(), "ivr-backup": tmp_path / "backup"})
    row = next(check for check in report.checks if check.name == "identity ivr-backup")
    assert row.ok, row.detail
    assert (
        "may take a Raft snapshot, sign with ivr-backup-sign; denied encrypt with ivr-dtmf, "
        "decrypt with ivr-dtmf, HMAC with ivr-lookup, read ivr-dtmf's metadata" in row.detail
    )
    assert "identity ivr-backup" not in {check.name for check in doctored.run().checks}
