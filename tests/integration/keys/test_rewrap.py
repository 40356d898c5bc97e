"""``ivr-vault keys rewrap`` over the store's sealed_records, as the key-admin identity, on a
private real OpenBao: every record reaches the latest version with its plaintext intact,
in batches under the per-call limit, and a run killed mid-way is finished by a rerun."""

from __future__ import annotations

import base64
import json
import os
import pty
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing

import pytest

from service.store.sealed import SealedStore
from tests.support.keys import PrivateVault, private_vault

CONTEXT = base64.b64encode(b"CA" + b"e" * 32 + b":card_last4").decode()


@pytest.fixture(scope="module")
def pv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateVault]:
    with private_vault(tmp_path_factory.mktemp("rewrap")) as vault:
        vault.admin.write("transit/keys/ivr-legacy", "create key", {"type": "aes256-gcm96"})
        yield vault


def seal(
    pv: PrivateVault,
    key: str,
    plaintexts: list[str],
    context: str | None = None,
) -> list[int]:
    """Encrypt as the admin (the test's own power, not the operator's) and store."""
    cts: list[str] = []
    for start in range(0, len(plaintexts), 100):
        batch = [
            {
                "plaintext": base64.b64encode(p.encode()).decode(),
                **({"context": context} if context else {}),
            }
            for p in plaintexts[start : start + 100]
        ]
        data = pv.admin.write(f"transit/encrypt/{key}", "encrypt", {"batch_input": batch})
        cts += [r["ciphertext"] for r in data["data"]["batch_results"]]
    return SealedStore(pv.store_path).add(key, cts, context=context)


def opened(pv: PrivateVault, key: str, ids: list[int]) -> list[str]:
    store = SealedStore(pv.store_path)
    records = [store.get(i) for i in ids]
    out: list[str] = []
    for start in range(0, len(records), 100):
        batch = [
            {"ciphertext": r.ciphertext, **({"context": r.context} if r.context else {})}
            for r in records[start : start + 100]
            if r is not None
        ]
        data = pv.admin.write(f"transit/decrypt/{key}", "decrypt", {"batch_input": batch})
        out += [base64.b64decode(r["plaintext"]).decode() for r in data["data"]["batch_results"]]
    return out


def rewrap_calls(pv: PrivateVault, key: str) -> int:
    needle = f'"path":"transit/rewrap/{key}"'
    return sum(
        1
        for line in pv.vault.audit_log.read_text().splitlines()
        if needle in line.replace(" ", "") and '"type":"request"' in line.replace(" ", "")
    )


def test_rewrap_moves_every_record_to_latest_with_plaintext_intact(pv: PrivateVault) -> None:
    legacy_pts = [f"legacy-{i}" for i in range(300)]
    dtmf_pts = [f"{i:04d}" for i in range(40)]
    legacy_ids = seal(pv, "ivr-legacy", legacy_pts)
    dtmf_ids = seal(pv, "ivr-dtmf", dtmf_pts, context=CONTEXT)
    for key in ("ivr-legacy", "ivr-legacy", "ivr-dtmf"):
        assert pv.cli("keys", "rotate", "--key", key).returncode == 0

    status = json.loads(pv.cli("keys", "status", "--json").stdout)
    assert status["ivr-legacy"]["stored_records"] == {"1": 300}
    assert status["ivr-dtmf"]["stored_records"] == {"1": 40}
    time.sleep(2.1)
    refused = pv.cli(
        "keys",
        "retire",
        "--key",
        "ivr-legacy",
        "--older-than",
        "1s",
        env=pv.cli_env(CALL_MAX_AGE="1s"),
    )
    assert refused.returncode == 1 and "rewrap" in refused.stderr

    calls_before = rewrap_calls(pv, "ivr-legacy")
    result = pv.cli("keys", "rewrap", "--batch-size", "64")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "ivr-dtmf: rewrapped 40 records to v2 in 1 batches",
        "ivr-legacy: rewrapped 300 records to v3 in 5 batches",
    ]
    assert rewrap_calls(pv, "ivr-legacy") - calls_before == 5  # 300 items, <= 64 per call
    store = SealedStore(pv.store_path)
    assert store.version_counts("ivr-legacy") == {3: 300}
    assert store.version_counts("ivr-dtmf") == {2: 40}
    assert opened(pv, "ivr-legacy", legacy_ids) == legacy_pts
    assert opened(pv, "ivr-dtmf", dtmf_ids) == dtmf_pts

    again = pv.cli("keys", "rewrap")
    assert "ivr-legacy: rewrapped 0 records to v3 in 0 batches" in again.stdout
    retired = pv.cli(
        "keys",
        "retire",
        "--key",
        "ivr-legacy",
        "--older-than",
        "1s",
        env=pv.cli_env(CALL_MAX_AGE="1s"),
    )
    assert retired.returncode == 0, retired.stderr
    assert pv.key("ivr-legacy")["min_decryption_version"] == 3
    assert opened(pv, "ivr-legacy", legacy_ids[:5]) == legacy_pts[:5]


def test_rewrap_killed_midway_is_finished_by_a_rerun(pv: PrivateVault) -> None:
    plaintexts = [f"bulk-{i}" for i in range(3000)]
    ids = seal(pv, "ivr-legacy", plaintexts)
    assert pv.cli("keys", "rotate", "--key", "ivr-legacy").returncode == 0
    latest = int(str(pv.key("ivr-legacy")["latest_version"]))
    store = SealedStore(pv.store_path)
    total = store.count_below("ivr-legacy", latest)
    assert total == 3300

    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service",
            "keys",
            "rewrap",
            "--key",
            "ivr-legacy",
            "--batch-size",
            "5",
        ],
        env=pv.cli_env(),
        cwd=pv.dir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while store.version_counts("ivr-legacy").get(latest, 0) < 50:
            assert process.poll() is None, "rewrap finished before it could be interrupted"
            assert time.monotonic() < deadline
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)  # a crash: no cleanup, no final summary
    finally:
        process.wait(timeout=10)
    moved = store.version_counts("ivr-legacy").get(latest, 0)
    assert 50 <= moved < total
    assert moved % 5 == 0  # each batch committed whole or not at all

    # The rerun on a terminal: progress bar on stderr, summary line on stdout.
    controller, terminal = pty.openpty()
    try:
        rerun = subprocess.run(
            [
                sys.executable,
                "-m",
                "service",
                "keys",
                "rewrap",
                "--key",
                "ivr-legacy",
                "--batch-size",
                "100",
            ],
            env=pv.cli_env(),
            cwd=pv.dir,
            stdout=subprocess.PIPE,
            stderr=terminal,
            text=True,
            timeout=60,
            check=False,
        )
        os.close(terminal)
        drawn = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(controller)
    assert rerun.returncode == 0
    assert rerun.stdout.strip() == (
        f"ivr-legacy: rewrapped {total - moved} records to v{latest} in "
        f"{-(-(total - moved) // 100)} batches"
    )
    bar = drawn.decode()
    assert "\r" in bar and re.search(rf"\[#{{30}}\] {total - moved}/{total - moved}", bar)
    assert store.version_counts("ivr-legacy") == {latest: total}
    sample = ids[::97]
    assert opened(pv, "ivr-legacy", sample) == plaintexts[::97]


def test_rewrap_reports_records_transit_refuses_and_moves_the_rest(pv: PrivateVault) -> None:
    good = seal(pv, "ivr-dtmf", ["1111", "2222", "3333"], context=CONTEXT)
    other = base64.b64encode(b"CA" + b"f" * 32 + b":pin").decode()
    (bad,) = seal(pv, "ivr-dtmf", ["4444"], context=other)
    store = SealedStore(pv.store_path)
    with closing(sqlite3.connect(pv.store_path, isolation_level=None)) as db:
        # a row whose stored context was damaged
        db.execute("UPDATE sealed_records SET context=? WHERE id=?", (CONTEXT, bad))
    assert pv.cli("keys", "rotate", "--key", "ivr-dtmf").returncode == 0
    latest = int(str(pv.key("ivr-dtmf")["latest_version"]))

    result = pv.cli("keys", "rewrap", "--key", "ivr-dtmf", "--batch-size", "2")
    assert result.returncode == 1
    assert f"1 refused by Transit (retired version or damaged), record ids {bad}" in result.stdout
    assert all(store.get(i).key_version == latest for i in good)  # type: ignore[union-attr]
    assert store.get(bad).key_version == latest - 1  # type: ignore[union-attr]
    assert opened(pv, "ivr-dtmf", good) == ["1111", "2222", "3333"]
