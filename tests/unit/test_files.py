"""service/files.py: the one writer of private files."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.files import create_private, private_dir, private_writer, write_private


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The most permissive umask: modes must not depend on the caller's."""
    old = os.umask(0)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.mark.usefixtures("open_umask")
def test_a_new_file_is_0600_and_whole(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "token"
    write_private(target, "s3cret\n")
    assert target.read_text() == "s3cret\n" and mode(target) == 0o600
    assert os.listdir(target.parent) == ["token"]  # no temporary file left


def test_an_existing_file_is_replaced_and_its_mode_narrowed(tmp_path: Path) -> None:
    target = tmp_path / "token"
    target.write_text("old")
    target.chmod(0o644)
    write_private(target, b"new")
    assert target.read_bytes() == b"new" and mode(target) == 0o600


def test_links_at_the_target_or_the_old_partial_name_are_never_written_through(
    tmp_path: Path,
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    out = tmp_path / "out.tgz"
    (tmp_path / "out.tgz.partial").symlink_to(victim)
    out.symlink_to(victim)
    write_private(out, b"backup")
    assert victim.read_text() == "mine"
    assert not out.is_symlink() and out.read_bytes() == b"backup"


def test_a_failure_midway_keeps_the_old_file_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "backup"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), private_writer(target) as handle:
        handle.write(b"half")
        raise RuntimeError
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["backup"]


@pytest.mark.usefixtures("open_umask")
def test_another_mode_is_set_before_the_file_appears(tmp_path: Path) -> None:
    cert = tmp_path / "server.crt"
    write_private(cert, b"pem", mode=0o644)
    assert mode(cert) == 0o644


@pytest.mark.usefixtures("open_umask")
def test_create_private_makes_an_empty_0600_file_and_keeps_an_existing_one(tmp_path: Path) -> None:
    store = tmp_path / "accounts.sqlite3"
    create_private(store)
    assert store.read_bytes() == b"" and mode(store) == 0o600
    store.write_bytes(b"data")
    create_private(store)
    assert store.read_bytes() == b"data"


@pytest.mark.usefixtures("open_umask")
def test_private_dir_creates_or_narrows_to_0700(tmp_path: Path) -> None:
    made = private_dir(tmp_path / "ivr-backend")
    assert mode(made) == 0o700
    old = tmp_path / "ivr-webhook"
    old.mkdir(mode=0o755)
    assert mode(private_dir(old)) == 0o700
