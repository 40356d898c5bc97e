"""Reading a backup file (service/backup/archive.py): a damaged one is called damaged, in
the one line ``ivr-vault restore`` prints, exit 2, before anything is touched. Files only:
writing and restoring with a real Vault is tests/integration/store/test_backup.py."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from service.backup.archive import FORMAT, MANIFEST, SNAPSHOT, STORE, read_backup
from service.cli import main
from service.errors import BadInput


def a_backup(path: Path) -> Path:
    """A well-formed backup file (as write_backup makes one) with made-up contents."""
    parts = {SNAPSHOT: b"raft snapshot " * 500, STORE: b"sqlite store " * 500}
    manifest = {
        "format": FORMAT,
        "created": 1.0,
        "cluster_id": "c",
        "vault_version": "v",
        "sha256": {n: hashlib.sha256(d).hexdigest() for n, d in parts.items()},
    }
    with tarfile.open(path, mode="w:gz") as tar:
        for name, data in {MANIFEST: json.dumps(manifest).encode(), **parts}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_a_whole_backup_reads(tmp_path: Path) -> None:
    assert read_backup(a_backup(tmp_path / "b.tar.gz")).snapshot.startswith(b"raft")


@pytest.mark.parametrize("damage", ["truncated", "flipped", "empty"])
def test_a_damaged_backup_is_called_damaged(tmp_path: Path, damage: str) -> None:
    path = a_backup(tmp_path / "b.tar.gz")
    data = path.read_bytes()
    if damage == "truncated":  # a copy cut short: gzip's "Compressed file ended"
        data = data[: len(data) // 2]
    elif damage == "flipped":  # a byte changed in the compressed stream
        middle = len(data) // 2
        data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]
    else:
        data = b""
    path.write_bytes(data)
    with pytest.raises(BadInput) as caught:
        read_backup(path)
    assert str(caught.value).startswith(f"--from: {path}: ")
    assert "the backup is damaged" in str(caught.value)


def test_restore_of_a_truncated_backup_is_one_line_exit_2(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    pipeline: io.StringIO,
) -> None:
    monkeypatch.chdir(tmp_path)
    path = a_backup(tmp_path / "b.tar.gz")
    path.write_bytes(path.read_bytes()[:-200])
    assert main(["restore", "--from", str(path), "--dev"]) == 2
    assert capsys.readouterr().err == (
        f"ivr-vault: bad input: --from: {path}: the backup is damaged (truncated or "
        "corrupted: EOFError)\n"
    )


def test_a_missing_backup_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="no such file"):
        read_backup(tmp_path / "nowhere.tar.gz")


def test_backup_out_into_a_missing_directory_is_bad_input(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    pipeline: io.StringIO,
) -> None:
    """Said before any Vault is asked (the address below answers nothing)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VAULT_ADDR", "http://127.0.0.1:9")
    monkeypatch.setenv("VAULT_TOKEN", "t")
    out = tmp_path / "nowhere" / "b.tar.gz"
    assert main(["backup", "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"ivr-vault: bad input: --out: no directory {out.parent}/ to write b.tar.gz into\n"
    )
    assert main(["backup", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"ivr-vault: bad input: --out: {tmp_path} is a directory; name the file to write\n"
    )
