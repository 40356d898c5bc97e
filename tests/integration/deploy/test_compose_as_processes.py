"""docker-compose.yml, and with docker-compose.prod.yml, run as local processes without a
Docker engine (tests/support/compose_processes.py): each service's own command as a local
process, with its environment, volumes and secrets; a real OpenBao 2.7.2 in server mode
with Raft storage.

Dev: vault-unseal initialises and unseals, vault-init bootstraps, a signed call hears the
demo account; `docker compose restart vault` (the process stopped and started: it comes
back sealed, vault-unseal opens it, nobody reruns init) and `down` then `up` keep every
account. Production: vault-tls makes the certificate, Vault listens with TLS and every
service verifies it; the operator initialises with Shamir shares and unseals by hand; the
bootstrap revokes its root token; the services' AppRoles work only from the internal
network's addresses; no demo account. HA (docker-compose.ha.yml): three OpenBao nodes form
one cluster through vault-unseal, PostgreSQL gets its password from db-secret, two backends
share it, and a call survives the leader's and a backend's death. (The files' structure and
schema: tests/unit/deploy/test_compose.py, test_compose_ha.py.)
"""

from __future__ import annotations

import json
import os
import ssl
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from service.devtools.devstack import find_vault_binary, free_port, wait_http
from service.settings import Secret
from service.vault.operator_init import LISTENING, VaultServer
from tests.support.compose import HA, PROD, load
from tests.support.compose_processes import BIN, LocalCompose
from tests.support.demo import FOUND
from tests.support.repo import ROOT
from tests.support.waiting import wait_until

NOT_FOUND = "We were not able to locate you in our system. Goodbye."


def ports() -> dict[str, dict[int, int]]:
    return {
        "vault": {8200: free_port(), 8201: free_port()},
        "backend": {8081: free_port()},
        "webhook": {8080: free_port()},
    }


@pytest.fixture
def local_compose(tmp_path: Path) -> Iterator[Callable[..., LocalCompose]]:
    made: list[LocalCompose] = []

    def make(
        files: tuple[str, ...] = ("docker-compose.yml",),
        listen: dict[str, dict[int, int]] | None = None,
        **env: str,
    ) -> LocalCompose:
        twilio = "twilio-" + os.urandom(8).hex()
        compose = load({"TWILIO_AUTH_TOKEN": twilio, **env}, files)
        local = LocalCompose(compose, tmp_path, listen or ports(), {"TWILIO_AUTH_TOKEN": twilio})
        made.append(local)
        return local

    yield make
    for local in made:
        local.down()


def secrets_in(local: LocalCompose, *texts: str) -> list[str]:
    """The dev Vault's root token or unseal key, wherever they appear in ``texts``."""
    root = (local.volume("vault-root") / "token").read_text().strip()
    keyring = (local.volume("vault-root") / "vault-keys.dev-only").read_text()
    unseal = [
        line.split("=", 1)[1] for line in keyring.splitlines() if line.startswith("unseal_key=")
    ]
    return [s for s in (root, *unseal) for text in texts if s in text]


def test_dev_up_restart_vault_and_down_up_keep_every_account(
    local_compose: Callable[..., LocalCompose],
) -> None:
    local = local_compose()
    local.start("vault")
    local.start("vault-unseal")
    wait_until(lambda: local.healthy("vault"), timeout=60, what="vault healthy")

    init = local.run("vault-init")
    assert init.returncode == 0, init.stderr
    assert "demo account AC12345678 provisioned" in init.stdout
    volumes = local.tmp / "volumes"
    keyring = volumes / "vault-root" / "vault-keys.dev-only"
    assert stat.S_IMODE(keyring.stat().st_mode) == 0o600
    assert "DEV ONLY" in keyring.read_text()
    for role in ("webhook", "backend"):
        files = sorted(p.name for p in (volumes / f"{role}-creds").iterdir())
        assert files == ["backend_token", "role_id", "secret_id"], role
        for path in (volumes / f"{role}-creds").iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
            assert not secrets_in(local, path.read_text())
    assert (volumes / "webhook-creds" / "role_id").read_text() != (
        volumes / "backend-creds" / "role_id"
    ).read_text()
    # The audit device of compose-server.hcl is live: the bootstrap is on record.
    assert "transit/keys/ivr-dtmf" in (volumes / "vault-logs" / "audit.log").read_text()

    for name in ("backend", "webhook"):
        local.start(name)
        assert local.healthy(name), name
    assert local.call()[-1] == FOUND

    # `docker compose restart vault`: the same data, sealed; vault-unseal opens it again
    # and the running services carry on with their tokens. No init step reruns.
    local.stop("vault")
    local.start("vault")
    took = wait_until(lambda: local.healthy("vault"), timeout=30, what="unsealed again")
    wait_until(
        lambda: local.healthy("backend") and local.healthy("webhook"),
        timeout=30,
        what="services ready again",
    )
    assert local.call()[-1] == FOUND
    assert "vault unsealed" in local.log("vault-unseal").read_text()
    print(f"vault restart: unsealed and healthy {took:.1f} s after the start")

    # `docker compose down` then `up` (volumes kept): everything starts again, init reruns.
    secret_before = (volumes / "backend-creds" / "secret_id").read_text()
    local.down()
    local.start("vault")
    local.start("vault-unseal")
    wait_until(lambda: local.healthy("vault"), timeout=60, what="vault healthy again")
    again = local.run("vault-init")
    assert again.returncode == 0, again.stderr
    assert "demo account AC12345678 already in the store; not seeded again" in again.stdout
    assert again.stdout.count("valid; kept") == 2
    assert (volumes / "backend-creds" / "secret_id").read_text() == secret_before
    for name in ("backend", "webhook"):
        local.start(name)
    assert local.call()[-1] == FOUND

    # Nothing printed the root token or the unseal key: not Vault, nor a step around it.
    logs = [local.log(n).read_text() for n in ("vault", "vault-unseal")]
    assert not secrets_in(local, init.stdout + init.stderr, again.stdout + again.stderr, *logs)


def test_prod_tls_manual_unseal_bootstrap_once_no_demo(
    local_compose: Callable[..., LocalCompose], tmp_path: Path
) -> None:
    # The services' AppRoles are bound to the internal network: here one address.
    local = local_compose(PROD, IVR_INTERNAL_SUBNET="127.0.0.1/32")
    made = local.run("vault-tls")
    assert made.returncode == 0, made.stderr
    volumes = local.tmp / "volumes"
    assert stat.S_IMODE((volumes / "vault-tls-key" / "server.key").stat().st_mode) == 0o640
    assert stat.S_IMODE((volumes / "vault-ca" / "ca.key").stat().st_mode) == 0o600
    assert not (volumes / "vault-tls" / "server.key").exists()
    assert "kept" in local.run("vault-tls").stdout  # a second `up` keeps it

    local.start("vault")
    vault = local.environment("vault")
    addr, cacert = vault["BAO_ADDR"], vault["BAO_CACERT"]
    assert addr.startswith("https://")
    tls = ssl.create_default_context(cafile=cacert)
    wait_http(f"{addr}/v1/sys/health", timeout=30, ok=LISTENING, verify=cacert)
    with pytest.raises(httpx.ConnectError):  # TLS only, and only with our CA
        httpx.get(f"{addr}/v1/sys/health", timeout=5)
    assert not local.healthy("vault")  # uninitialised: unhealthy until a human acts

    # The operator, in the vault container (`docker compose exec vault bao operator init`):
    # five shares, three to unseal, printed once to the terminal.
    init = subprocess.run(
        [
            find_vault_binary(),
            "operator",
            "init",
            "-key-shares=5",
            "-key-threshold=3",
            "-format=json",
        ],
        env=vault,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert init.returncode == 0, init.stderr
    answer = json.loads(init.stdout)
    shares, root = [Secret(k) for k in answer["unseal_keys_b64"]], answer["root_token"]
    server = VaultServer(addr, verify=cacert)
    try:
        assert server.try_unseal(shares[1:4])  # any three
        server.wait_active()
    finally:
        server.close()
    assert local.healthy("vault")

    nothing = local.run("vault-init")  # a plain `up` before the bootstrap
    assert nothing.returncode == 1 and "bootstrap first" in nothing.stderr
    boot = local.run("vault-init", VAULT_TOKEN=root)  # `run --rm -e VAULT_TOKEN vault-init`
    assert boot.returncode == 0, boot.stderr
    assert "bootstrap token revoked" in boot.stdout
    assert root not in boot.stdout + boot.stderr
    revoked = httpx.get(
        f"{addr}/v1/auth/token/lookup-self", verify=tls, timeout=10, headers={"X-Vault-Token": root}
    )
    assert revoked.status_code == 403
    plain = local.run("vault-init")  # every later `up`
    assert plain.returncode == 0 and "in place" in plain.stdout

    # No demo account: the operator provisions one with the backend's identity
    # (`docker compose run --rm -T backend accounts add ...`), digits on stdin.
    added = subprocess.run(
        [
            str(BIN / "ivr-vault"),
            "accounts",
            "add",
            "--account",
            "AC12345678",
            "--balance",
            "12.55",
        ],
        input="31415926\n1234\n7351\n+15005550006\n",
        env=local.environment("backend"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert added.returncode == 0, added.stderr

    for name in ("backend", "webhook"):
        local.start(name)
        assert local.healthy(name), name
    assert local.call(pin="7351")[-1] == FOUND
    assert local.call("5678", "0000")[-1] == NOT_FOUND  # and nobody else

    # The webhook's AppRole works from the bound address only.
    creds = volumes / "webhook-creds"
    login = {
        "role_id": (creds / "role_id").read_text().strip(),
        "secret_id": (creds / "secret_id").read_text().strip(),
    }
    for source, status in (("127.0.0.1", 200), ("127.0.0.2", 400)):
        with httpx.Client(
            transport=httpx.HTTPTransport(local_address=source, verify=tls)
        ) as client:
            assert (
                client.post(f"{addr}/v1/auth/approle/login", json=login, timeout=10).status_code
                == status
            ), source

    # A restart comes back sealed and stays so until the share holders unseal it.
    local.stop("vault")
    local.start("vault")
    wait_http(f"{addr}/v1/sys/health", timeout=30, ok=LISTENING, verify=cacert)
    assert not local.healthy("vault")
    server = VaultServer(addr, verify=cacert)
    try:
        assert server.try_unseal([shares[0], shares[2], shares[4]])
        server.wait_active()
    finally:
        server.close()
    wait_until(
        lambda: local.healthy("backend") and local.healthy("webhook"),
        timeout=30,
        what="services ready after the unseal",
    )
    assert local.call(pin="7351")[-1] == FOUND


def test_probe_fails_when_no_service_answers(tmp_path: Path) -> None:
    dead = str(free_port())
    result = subprocess.run(
        ["python", "-m", "service.web.probe", "--ready"],
        env={"PATH": f"{BIN}:/usr/bin:/bin", "WEBHOOK_PORT": dead, "BACKEND_PORT": dead},
        cwd=ROOT,
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 1


NODES = ("vault", "vault-2", "vault-3")


def test_ha_one_cluster_postgres_and_two_backends(
    local_compose: Callable[..., LocalCompose],
) -> None:
    listen = {
        **{node: {8200: free_port(), 8201: free_port()} for node in NODES},
        "postgres": {5432: free_port()},
        "backend": {8081: free_port()},
        "backend-2": {8081: free_port()},
        "webhook": {8080: free_port()},
    }
    local = local_compose(HA, listen)
    for node in NODES:
        local.start(node)
    local.start("vault-unseal")  # initialises one node, the others join with its key
    wait_until(
        lambda: all(local.healthy(n) for n in NODES), timeout=90, what="three nodes unsealed"
    )

    made = local.run("db-secret")
    assert made.returncode == 0, made.stderr
    secret = local.volume("db-secret")
    names = ("password", "owner-password", "backend-password")
    for name in (*names, "pgpass"):
        assert stat.S_IMODE((secret / name).stat().st_mode) == 0o600, name
    passwords = [(secret / name).read_text().strip() for name in names]
    assert len(set(passwords)) == 3
    # The services' passfile: the migration role's and the runtime role's, not the
    # superuser's (postgres/roles.sh makes the roles).
    assert (secret / "pgpass").read_text() == (
        f"*:*:*:ivr_owner:{passwords[1]}\n*:*:*:ivr_backend:{passwords[2]}\n"
    )
    again = local.run("db-secret")  # a second `up` keeps the passwords
    assert again.returncode == 0
    assert [(secret / name).read_text().strip() for name in names] == passwords
    local.start("postgres")
    wait_until(lambda: local.healthy("postgres"), timeout=60, what="postgres healthy")

    init = local.run("vault-init")  # store migrate, bootstrap, credentials, demo account
    assert init.returncode == 0, init.stderr
    assert "postgresql://ivr_owner@" in init.stdout
    assert not any(p in init.stdout + init.stderr for p in passwords)
    for name in ("backend", "backend-2", "webhook"):
        local.start(name)
        assert local.healthy(name), name
    assert local.call()[-1] == FOUND
    # Every node answers for the one cluster: the leader (200) and two standbys (429).
    health = [
        httpx.get(f"http://127.0.0.1:{listen[n][8200]}/v1/sys/health", timeout=5).status_code
        for n in NODES
    ]
    assert sorted(health) == [200, 429, 429], health

    # The leader dies: the services go to the other nodes; started again, it is unsealed
    # by vault-unseal (no one reruns init) and is back in the cluster.
    leader = NODES[health.index(200)]
    local.stop(leader)
    assert [local.call()[-1] for _ in range(3)] == [FOUND] * 3
    local.start(leader)
    wait_until(lambda: local.healthy(leader), timeout=60, what="the old leader back")
    # A backend dies: the webhook's lookups go to the other.
    local.stop("backend")
    assert [local.call()[-1] for _ in range(3)] == [FOUND] * 3
