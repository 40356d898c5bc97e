"""The command line's own behaviour: how loud each command is, -v anywhere, one-line
errors, and finding make run's Vault (service/cli/devenv.py). No Vault is contacted."""

from __future__ import annotations

import argparse
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from service import cli
from service.cli import build_parser, log_level, main
from service.cli.devenv import ANY, ROOT, DevEnv, dev_environment, find_dev_env, unsourced
from service.errors import ConfigError


@pytest.mark.parametrize(
    ("command", "verbose", "configured", "level"),
    [
        ("keys", 0, "INFO", "WARNING"),
        ("keys", 1, "INFO", "INFO"),
        ("keys", 2, "INFO", "DEBUG"),
        ("accounts", 0, "ERROR", "ERROR"),
        ("doctor", 0, "DEBUG", "WARNING"),
        ("serve", 0, "DEBUG", "DEBUG"),
        ("serve", 2, "WARNING", "WARNING"),
        ("dev", 0, "INFO", "INFO"),
        ("operator", 0, "INFO", "INFO"),
    ],
)
def test_log_level(command: str, verbose: int, configured: str, level: str) -> None:
    assert log_level(command, verbose, configured) == level


@pytest.mark.parametrize(
    ("argv", "count"),
    [
        (["keys", "status"], 0),
        (["-v", "keys", "status"], 1),
        (["keys", "status", "-v"], 1),
        (["keys", "-vv", "status"], 2),
        (["--verbose", "doctor", "--json"], 1),
    ],
)
def test_verbose_before_or_after_the_command(argv: list[str], count: int) -> None:
    assert build_parser().parse_args(argv).verbose == count


@pytest.fixture
def clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pipeline: io.StringIO) -> Path:
    """No Vault settings, a fresh directory, and every logging global main() changes put
    back afterwards (the ``pipeline`` fixture)."""
    for name in list(os.environ):
        if name.startswith(("VAULT_", "BAO_", "LOG_", "STORE_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_configuration_error_is_one_line(
    clean: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["keys", "status"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ivr-vault: configuration error: VAULT_ROLE_ID")
    assert err.count("\n") == 1


def test_a_foreign_exception_is_one_masked_line_without_traceback(
    clean: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*_: object) -> int:
        raise RuntimeError("pin 4321\nsecond line")

    monkeypatch.setattr("service.cli.call._call", broken)
    assert main(["call"]) == 1
    err = capsys.readouterr().err
    assert err == (
        "ivr-vault: unexpected error: RuntimeError: pin **** second line (-v shows where)\n"
    )
    assert main(["-v", "call"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "pin ****" in err and "4321" not in err  # through the scrubber
    assert err.splitlines()[-1] == "ivr-vault: unexpected error: RuntimeError: pin **** second line"


def write_dev(directory: Path, *roles: str) -> DevEnv:
    dev = directory / ".dev"
    dev.mkdir()
    (dev / "vault.env").write_text(
        "# DEV ONLY\nexport VAULT_ADDR=http://127.0.0.1:18200\n"
        "export VAULT_TOKEN=s.root\nexport BAO_ADDR=x\n"
    )
    for role in roles:
        (dev / role).mkdir()
        (dev / role / "role_id").write_text("r\n")
        (dev / role / "secret_id").write_text("s\n")
    found = find_dev_env({}, dev)
    assert found is not None
    return found


def test_dev_vault_only_without_vault_addr(tmp_path: Path) -> None:
    dev = write_dev(tmp_path)
    assert dev.addr == "http://127.0.0.1:18200" and dev.root_token == "s.root"
    assert find_dev_env({"VAULT_ADDR": "https://vault.example"}, dev.dir) is None
    assert find_dev_env({}, tmp_path / "elsewhere") is None


def test_dev_environment_per_identity(tmp_path: Path) -> None:
    dev = write_dev(tmp_path, "ivr-keyadmin")
    env, said = dev_environment({"PATH": "/bin"}, "ivr-keyadmin", dev)
    assert env["VAULT_ADDR"] == dev.addr
    assert env["VAULT_ROLE_ID_FILE"] == str(dev.dir / "ivr-keyadmin" / "role_id")
    assert said == (
        f"using the dev Vault at {dev.addr} ({dev.dir}/vault.env), as "
        f"ivr-keyadmin ({dev.dir}/ivr-keyadmin/)"
    )
    assert "VAULT_TOKEN" not in env  # never the root token for a key-admin command
    env, said = dev_environment({}, ROOT, dev)
    assert env["VAULT_TOKEN"] == "s.root" and said.endswith("with its root token (dev only)")
    env, _ = dev_environment({}, ANY, dev)
    assert set(env) == {"VAULT_ADDR"}
    env, _ = dev_environment({}, "ivr-backend", dev)  # no credentials there: address only
    assert set(env) == {"VAULT_ADDR"}


@pytest.mark.parametrize(
    "given",
    [
        {"VAULT_TOKEN": "t"},
        {"VAULT_ROLE_ID_FILE": "/x"},
        {"VAULT_SECRET_ID": "y"},
        {"VAULT_TOKEN_FILE": "/t"},
    ],
)
def test_credentials_in_the_environment_never_go_to_the_dev_address(
    tmp_path: Path, given: dict[str, str]
) -> None:
    dev = write_dev(tmp_path, "ivr-keyadmin")
    with pytest.raises(ConfigError, match=f"names credentials \\({next(iter(given))}\\)"):
        find_dev_env(given, dev.dir)
    assert find_dev_env({**given, "VAULT_ADDR": "https://vault.example"}, dev.dir) is None


def test_a_dev_dir_that_others_may_write_to_is_not_used(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dev = write_dev(tmp_path)
    dev.dir.chmod(0o777)
    assert find_dev_env({}, dev.dir) is None
    assert "not used: others may write to it (mode 0777)" in capsys.readouterr().err
    dev.dir.chmod(0o755)
    (dev.dir / "vault.env").chmod(0o666)
    assert find_dev_env({}, dev.dir) is None
    assert "others may write to its vault.env" in capsys.readouterr().err
    (dev.dir / "vault.env").chmod(0o600)
    assert find_dev_env({}, dev.dir) is not None


def test_a_linked_dev_dir_or_vault_env_is_not_used(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "real").mkdir()
    real = write_dev(tmp_path / "real")
    (tmp_path / "link").mkdir()
    (tmp_path / "link" / ".dev").symlink_to(real.dir)
    assert find_dev_env({}, tmp_path / "link" / ".dev") is None
    assert "not used: it is a symbolic link" in capsys.readouterr().err
    planted = tmp_path / "planted" / ".dev"
    planted.mkdir(parents=True)
    (planted / "vault.env").symlink_to(real.dir / "vault.env")
    assert find_dev_env({}, planted) is None
    assert "cannot open its vault.env" in capsys.readouterr().err


def test_every_command_that_uses_vault_says_who_it_is_there() -> None:
    parser = build_parser()
    identities = {}
    for argv in (
        ["keys", "status"],
        ["keys", "rotate"],
        ["legacy", "convert"],
        ["accounts", "add", "--account", "a", "--balance", "1"],
        ["accounts", "unlock", "--account", "a"],
        ["accounts", "check-keys"],
        ["backup", "--out", "f"],
        ["bootstrap"],
        ["doctor"],
        ["serve", "backend"],
        ["dev"],
        ["call"],
    ):
        identities[
            argv[0] + " " + argv[1] if len(argv) > 1 and not argv[1].startswith("-") else argv[0]
        ] = getattr(parser.parse_args(argv), "dev_identity", None)
    assert identities == {
        "keys status": "ivr-keyadmin",
        "keys rotate": "ivr-keyadmin",
        "legacy convert": "ivr-keyadmin",
        "accounts add": "ivr-backend",
        "accounts unlock": "ivr-keyadmin",
        "accounts check-keys": "ivr-backend",
        "backup": "ivr-backup",
        "bootstrap": ROOT,
        "doctor": ANY,
        "serve backend": None,
        "dev": None,
        "call": None,
    }
    assert {"serve", "dev", "operator"} == cli.SERVICE_COMMANDS


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _parsers(child)


def test_help_is_plain_text_for_users() -> None:
    """No reStructuredText markup, no source paths: ``ivr-vault ... --help`` is read by an
    operator, not a developer."""
    parsers = list(_parsers(build_parser()))
    assert len(parsers) > 20  # every command and subcommand
    for parser in parsers:
        text = parser.format_help()
        for markup in ("``", ":func:", ":class:", ":mod:", "service/", ".py"):
            assert markup not in text, (parser.prog, markup)


@pytest.mark.parametrize(
    ("argv", "stdin", "said"),
    [
        (
            ["doctor", "--credentials", "nobody=/tmp"],
            "",
            "--credentials: expected ROLE=DIR with ROLE one of ",
        ),
        (
            ["accounts", "add", "--account", "AC1", "--balance", "1.00"],
            "12ab\n",
            "account number: expected exactly 8 digits",
        ),
        (
            ["callers", "reset"],
            "0044 20 7946 0000\n",
            "caller number: expected E.164 (+ and up to 15 digits), client:NAME, sip:URI or "
            "anonymous",
        ),
    ],
)
def test_bad_input_is_called_bad_input_with_exit_2(
    clean: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    stdin: str,
    said: str,
) -> None:
    """What an operator typed is not a configuration error: one line, "bad input", exit 2,
    nothing echoed (the digits typed are not in it), before any Vault is asked."""
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ivr-vault: bad input: {said}") and err.count("\n") == 1
    assert "12ab" not in err and "7946" not in err


def test_unsourced_drops_only_what_source_dev_vault_env_put_there(tmp_path: Path) -> None:
    dev = tmp_path / ".dev"
    write_dev(tmp_path)
    sourced = {
        "VAULT_ADDR": "http://127.0.0.1:18200",
        "VAULT_TOKEN": "s.root",
        "BAO_ADDR": "x",
        "PATH": "/bin",
    }
    env, said = unsourced(sourced, dev)
    assert env == {"PATH": "/bin"}
    assert said == (
        f"VAULT_ADDR, VAULT_TOKEN, BAO_ADDR come from {dev}/vault.env (sourced "
        "earlier): not used; nothing needs sourcing"
    )
    # The address alone (no token): dropped too, or the command would have no identity.
    assert unsourced({"VAULT_ADDR": "http://127.0.0.1:18200"}, dev)[0] == {}
    # A token someone chose: nothing is dropped (that address with that token is meant).
    chosen = {**sourced, "VAULT_TOKEN": "s.keyadmin"}
    assert unsourced(chosen, dev) == (chosen, None)
    other = {**sourced, "VAULT_ADDR": "https://vault.example:8200"}
    assert unsourced(other, dev) == (other, None)
    assert unsourced({"PATH": "/bin"}, dev) == ({"PATH": "/bin"}, None)
