"""Fixtures that start real parts: one OpenBao server for the session (with the file
audit device), bootstrapped as ``make run`` does, AppRole credentials, a running
backend + webhook pair (``python -m service serve ...`` processes), and one PostgreSQL
server for the session, started when a test first asks for it.

Every test collected under this directory is marked ``integration`` here, by path, so a new
module cannot forget it: ``pytest -m "not integration"`` runs the fast tests alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from service.devtools.devstack import DevVault
from service.devtools.postgres import LocalPostgres
from service.settings import StoreUrl
from service.vault.bootstrap import Layout, RoleCredentials, bootstrap, issue_credentials
from service.vault.client import VaultClient
from tests.support.devrun import DevRun, start_dev, stop_dev
from tests.support.postgres import ENGINES, engine_store_url, start_postgres
from tests.support.stack import ROLES, Stack, Stacks, make_stack

HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def dev_vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevVault]:
    vault = DevVault.start(tmp_path_factory.mktemp("vault"))
    yield vault
    vault.stop()


@pytest.fixture(scope="session")
def admin(dev_vault: DevVault) -> VaultClient:
    return VaultClient(dev_vault.addr, dev_vault.root_token, timeout=10)


@pytest.fixture(scope="session")
def layout(admin: VaultClient) -> Layout:
    return bootstrap(admin)


@pytest.fixture(scope="session")
def credentials(admin: VaultClient, layout: Layout) -> dict[str, RoleCredentials]:
    return issue_credentials(admin, ROLES)


@pytest.fixture(scope="session")
def stack(
    dev_vault: DevVault,
    credentials: dict[str, RoleCredentials],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    running = make_stack(dev_vault, credentials, tmp_path_factory.mktemp("stack"))
    yield running
    running.stop()


@pytest.fixture
def new_stack(
    dev_vault: DevVault,
    credentials: dict[str, RoleCredentials],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stacks]:
    """Stacks of this test's own on the session's Vault (``new_stack("name", webhook_env=...,
    backend_env=...)``), each stopped when the test ends."""
    stacks = Stacks(dev_vault, credentials, tmp_path_factory.mktemp)
    yield stacks
    stacks.stop_all()


@pytest.fixture(scope="module")
def module_stack(
    dev_vault: DevVault,
    credentials: dict[str, RoleCredentials],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stacks]:
    """Stacks of this module's own on the session's Vault, each stopped when the module
    ends: for a module whose tests change what the session stack serves (lock cards,
    count failures) or need other settings."""
    stacks = Stacks(dev_vault, credentials, tmp_path_factory.mktemp)
    yield stacks
    stacks.stop_all()


@pytest.fixture(name="start_dev")
def start_dev_fixture(tmp_path: Path) -> Iterator[Callable[..., DevRun]]:
    """``make run`` in ``tmp_path`` (tests/support/devrun.py); every run started is
    stopped at the end, even when the test failed."""
    runs: list[DevRun] = []

    def start(**kwargs: Any) -> DevRun:
        runs.append(start_dev(tmp_path, **kwargs))
        return runs[-1]

    yield start
    for run in runs:
        stop_dev(run)


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    """Debian's PostgreSQL, TCP and SCRAM on a free port (0.5-1.2 s to start here); a
    missing PostgreSQL fails the tests that need it, never skips them."""
    server = start_postgres()
    yield server
    server.stop()


@pytest.fixture(params=ENGINES)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> StoreUrl:
    """A new, empty, migrated store on each engine in turn."""
    return engine_store_url(request.param, request, tmp_path)
