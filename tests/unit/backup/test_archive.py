"""Reading a backup file (service/backup/archive.py): a damaged, forged or unsealed one is
refused in the one line ``ivr-vault restore`` prints, exit 2, before anything is touched.
Files only: writing and restoring with a real Vault is tests/integration/store/test_backup.py."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pyrage import x25519

from service.backup.archive import Backup, Unlock, open_backup
from service.cli import main
from service.errors import BadInput
from tests.support.backups import (
    flip_a_payload_byte,
    plain_backup,
    public_pem,
    sealed_backup,
)

SNAP, STORE = b"raft snapshot " * 500, b"sqlite store " * 500


def a_backup(path: Path) -> Path:
    """A well-formed plain backup (format 1, as releases before the sealing wrote it)."""
    return plain_backup(path, SNAP, STORE)


def read_plain(path: Path) -> Backup:
    with open_backup(path, Unlock(None, None), allow_unsealed=True) as backup:
        assert backup.snapshot.read_bytes() == SNAP  # checked while the files exist
        return backup


class Keys:
    def __init__(self) -> None:
        self.identity = x25519.Identity.generate()
        self.signer = Ed25519PrivateKey.generate()
        self.unlock = Unlock(
            [self.identity], [self.signer.public_key()], Path("id.txt"), Path("v.pem")
        )


@pytest.fixture
def keys() -> Keys:
    return Keys()


def check(path: Path, unlock: Unlock) -> None:
    with open_backup(path, unlock, allow_unsealed=False):
        pass


def test_a_whole_plain_backup_reads_with_the_flag(tmp_path: Path) -> None:
    assert not read_plain(a_backup(tmp_path / "b.tar.gz")).sealed


def test_a_plain_backup_is_refused_without_the_flag(tmp_path: Path) -> None:
    path = a_backup(tmp_path / "b.tar.gz")
    with pytest.raises(BadInput, match=r"is a plain backup .* with --allow-unsealed"):
        check(path, Unlock(None, None))


def test_a_sealed_backup_reads_back_whole(tmp_path: Path, keys: Keys) -> None:
    path = sealed_backup(
        tmp_path / "b.age", keys.identity.to_public(), SNAP, STORE, signer=keys.signer
    )
    with open_backup(path, keys.unlock, allow_unsealed=False) as backup:
        assert backup.sealed
        assert (backup.snapshot.read_bytes(), backup.store.read_bytes()) == (SNAP, STORE)
    assert not backup.store.exists()  # the temporary files go with the block


@pytest.mark.parametrize(
    ("attack", "says"),
    [
        ("forged", "its signature does not verify against --verify-key v.pem"),
        ("unsigned", "not signed (no manifest.sig)"),
        (
            "tampered",
            "cannot be decrypted with --identity id.txt (not encrypted to it, or "
            "altered since: decryption error)",
        ),
        (
            "wrong identity",
            "cannot be decrypted with --identity id.txt (not encrypted to it, "
            "or altered since: No matching keys found)",
        ),
    ],
)
def test_a_sealed_backup_that_fails_a_check_is_refused(
    tmp_path: Path, keys: Keys, attack: str, says: str
) -> None:
    to = keys.identity.to_public()
    signer: Ed25519PrivateKey | None = keys.signer
    if attack == "forged":
        signer = Ed25519PrivateKey.generate()  # encrypted to the right key, another signer
    elif attack == "unsigned":
        signer = None
    elif attack == "wrong identity":
        to = x25519.Identity.generate().to_public()
    path = sealed_backup(tmp_path / "b.age", to, SNAP, STORE * 20, signer=signer)
    if attack == "tampered":
        flip_a_payload_byte(path)
    with pytest.raises(BadInput) as caught:
        check(path, keys.unlock)
    assert str(caught.value).startswith(f"--from: {path}: {says}")
    assert "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == [path]  # nothing written beside it


@pytest.mark.parametrize("damage", ["truncated", "flipped", "empty"])
def test_a_damaged_plain_backup_is_called_damaged(tmp_path: Path, damage: str) -> None:
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
        read_plain(path)
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
    assert main(["restore", "--from", str(path), "--dev", "--allow-unsealed"]) == 2
    assert capsys.readouterr().err == (
        f"ivr-vault: bad input: --from: {path}: the backup is damaged (truncated or "
        "corrupted: ReadError)\n"
    )


def test_a_sealed_backup_without_an_identity_is_one_line_exit_2(
    tmp_path: Path,
    keys: Keys,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    pipeline: io.StringIO,
) -> None:
    monkeypatch.chdir(tmp_path)
    path = sealed_backup(
        tmp_path / "b.age", keys.identity.to_public(), SNAP, STORE, signer=keys.signer
    )
    assert main(["restore", "--from", str(path), "--dev"]) == 2
    assert capsys.readouterr().err == (
        f"ivr-vault: bad input: --identity: {path} is encrypted: name the age identity "
        "it was encrypted to\n"
    )
    (tmp_path / "id.txt").write_text(f"{keys.identity}\n")
    assert main(["restore", "--from", str(path), "--dev", "--identity", "id.txt"]) == 2
    assert capsys.readouterr().err.startswith(
        "ivr-vault: bad input: --verify-key: no such file: ivr-backup-verify.pem (export it"
    )
    (tmp_path / "ivr-backup-verify.pem").write_text(public_pem(keys.signer))
    (tmp_path / "id.txt").write_text("AGE-SECRET-KEY-1NOTAKEY\n")
    assert main(["restore", "--from", str(path), "--dev", "--identity", "id.txt"]) == 2
    assert capsys.readouterr().err == (
        "ivr-vault: bad input: --identity: id.txt holds a line that is not an age identity "
        "(AGE-SECRET-KEY-1…)\n"
    )


def test_a_missing_backup_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="no such file"):
        read_plain(tmp_path / "nowhere.tar.gz")


@pytest.fixture
def no_vault(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pipeline: io.StringIO) -> None:
    """Refusals said before any Vault is asked: the address answers nothing."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VAULT_ADDR", "http://127.0.0.1:9")
    monkeypatch.setenv("VAULT_TOKEN", "t")


def test_backup_needs_a_recipient_and_refuses_a_bad_one(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_vault: None,
) -> None:
    assert main(["backup", "--out", str(tmp_path / "b.age")]) == 2
    assert capsys.readouterr().err == (
        "ivr-vault: bad input: --recipient: no age public key (nor BACKUP_RECIPIENTS): a "
        "backup is encrypted to its operators' keys (docs/backup.md)\n"
    )
    monkeypatch.setenv("BACKUP_RECIPIENTS", f"{x25519.Identity.generate().to_public()},age1nope")
    assert main(["backup", "--out", str(tmp_path / "b.age")]) == 2
    assert capsys.readouterr().err == (
        "ivr-vault: bad input: --recipient/BACKUP_RECIPIENTS: recipient 2 is not an age "
        "public key (age1…, as `age-keygen -y` or `ivr-vault backup-identity` prints it)\n"
    )


def test_backup_out_into_a_missing_directory_or_dev_is_bad_input(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_vault: None,
) -> None:
    monkeypatch.setenv("BACKUP_RECIPIENTS", str(x25519.Identity.generate().to_public()))
    out = tmp_path / "nowhere" / "b.tar.gz"
    assert main(["backup", "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"ivr-vault: bad input: --out: no directory {out.parent}/ to write b.tar.gz into\n"
    )
    assert main(["backup", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"ivr-vault: bad input: --out: {tmp_path} is a directory; name the file to write\n"
    )
    (tmp_path / ".dev").mkdir()
    assert main(["backup", "--out", ".dev/b.age"]) == 2
    assert capsys.readouterr().err == (
        "ivr-vault: bad input: --out: not in .dev/, which holds the dev Vault's unseal "
        "keys; keep backups apart from them\n"
    )


def test_backup_identity_makes_a_private_key_once_and_prints_its_recipient(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pipeline: io.StringIO
) -> None:
    path = tmp_path / "identity.txt"
    assert main(["backup-identity", str(path)]) == 0
    first = capsys.readouterr().out.strip()
    assert first.startswith("age1") and path.stat().st_mode & 0o777 == 0o600
    assert main(["backup-identity", str(path)]) == 0  # kept, not replaced
    assert capsys.readouterr().out.strip() == first
    (identity,) = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    assert str(x25519.Identity.from_str(identity).to_public()) == first
