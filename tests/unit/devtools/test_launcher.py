"""make run's port check, before it starts anything (service/devtools/launcher.py)."""

from __future__ import annotations

import socket

import pytest

from service.devtools.launcher import check_ports, listeners
from service.errors import ConfigError
from service.settings import Settings


def test_a_taken_port_is_named_with_the_setting_that_moves_it() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))  # bound, not listening: taken all the same
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError) as caught:
            check_ports([("WEBHOOK_PORT", "127.0.0.1", port)])
    assert str(caught.value).startswith(f"port {port} on 127.0.0.1 is taken")
    assert "set WEBHOOK_PORT to another port" in str(caught.value)


def test_free_ports_pass() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    check_ports([("BACKEND_PORT", "127.0.0.1", port)])


def test_what_make_run_listens_on() -> None:
    env = {"WEBHOOK_PORT": "18080", "BACKEND_PORT": "18081", "DEV_VAULT_PORT": "18200"}
    assert listeners(Settings.from_environ(env), env) == [
        ("WEBHOOK_PORT", "127.0.0.1", 18080),
        ("BACKEND_PORT", "127.0.0.1", 18081),
        ("DEV_VAULT_PORT", "127.0.0.1", 18200),
    ]
    external = {**env, "VAULT_ADDR": "http://127.0.0.1:8200", "VAULT_TOKEN": "t"}
    assert [s for s, _, _ in listeners(Settings.from_environ(external), external)] == [
        "WEBHOOK_PORT",
        "BACKEND_PORT",
    ]  # another Vault: its port is not ours to check
