"""Service-account login (VAULT_AUTH=jwt) against a real OpenBao: bootstrap configures the
JWT method and a role per identity (service/vault/jwt_auth.py), and the client logs in with
a token file (service/vault/jwt_login.py), as a pod does with its projected token. The
signing key pair is the test's own (tests/support/service_account.py); the policy matrix
for these identities is tests/integration/vault/test_policy_matrix.py's ``jwt`` half."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from service.devtools.devstack import DevVault
from service.errors import VaultAuthError, VaultPermissionDenied
from service.settings import Settings
from service.vault.bootstrap import Layout, bootstrap
from service.vault.client import VaultClient, choose_credentials
from service.vault.jwt_auth import JwtAuth, configure_jwt
from service.vault.jwt_login import JwtCredentials
from tests.support.service_account import Issuer

NAMESPACE = "ivr"
AUDIENCE = "ivr-vault"
ACCOUNTS = {"ivr-webhook": "ivr-vault-webhook", "ivr-backend": "ivr-vault-backend"}
CONTEXT = base64.b64encode(b"CA0123456789abcdef0123456789abcdef:card_last4").decode()
PLAINTEXT = base64.b64encode(b"1234").decode()


@dataclass
class Lab:
    vault: DevVault
    root: VaultClient
    issuer: Issuer
    layout: Layout


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    vault = DevVault.start(Path(tmp_path_factory.mktemp("jwt-vault")))
    root = VaultClient(vault.addr, vault.root_token, timeout=10)
    issuer = Issuer.make()
    try:
        layout = bootstrap(root)
        configure_jwt(
            root, layout, JwtAuth(AUDIENCE, NAMESPACE, ACCOUNTS, pubkeys=(issuer.public_pem,))
        )
        yield Lab(vault, root, issuer, layout)
    finally:
        root.close()
        vault.stop()


def client(lab: Lab, role: str, token_file: Path, **kwargs: object) -> VaultClient:
    return VaultClient(lab.vault.addr, JwtCredentials(role, token_file), timeout=5, **kwargs)  # type: ignore[arg-type]


def test_the_webhooks_token_logs_in_as_the_webhook(lab: Lab, tmp_path: Path) -> None:
    token = lab.issuer.write(
        tmp_path / "token", NAMESPACE, ACCOUNTS["ivr-webhook"], audience=AUDIENCE
    )
    webhook = client(lab, "ivr-webhook", token)
    try:
        me = webhook.read("auth/token/lookup-self", "lookup")["data"]
        assert me["policies"] == ["ivr-webhook"]
        assert me["meta"]["role"] == "ivr-webhook"
        assert me["renewable"] is True and 0 < me["ttl"] <= 3600
        made = webhook.write(
            "transit/encrypt/ivr-dtmf", "encrypt", {"plaintext": PLAINTEXT, "context": CONTEXT}
        )
        assert made["data"]["ciphertext"].startswith("vault:v")
        with pytest.raises(VaultPermissionDenied):
            webhook.write(
                "transit/decrypt/ivr-dtmf",
                "decrypt",
                {"ciphertext": made["data"]["ciphertext"], "context": CONTEXT},
            )
    finally:
        webhook.revoke_self()
        webhook.close()


def test_the_settings_choose_the_token_file_and_role(lab: Lab, tmp_path: Path) -> None:
    token = lab.issuer.write(
        tmp_path / "token", NAMESPACE, ACCOUNTS["ivr-backend"], audience=AUDIENCE
    )
    settings = Settings.from_environ(
        {
            "VAULT_ADDR": lab.vault.addr,
            "VAULT_AUTH": "jwt",
            "VAULT_JWT_ROLE": "ivr-backend",
            "VAULT_JWT_TOKEN_PATH": str(token),
            "BACKEND_TOKEN": "x" * 32,
        }
    )
    settings.require("backend")  # no VAULT_ROLE_ID / VAULT_SECRET_ID needed
    assert choose_credentials(settings) == JwtCredentials("ivr-backend", token, "jwt")
    backend = VaultClient.from_settings(settings)
    try:
        answer = backend.write("transit/hmac/ivr-lookup", "hmac", {"input": PLAINTEXT})
        assert answer["data"]["hmac"].startswith("vault:v")
    finally:
        backend.close()


REFUSED = [
    ("another service account", ACCOUNTS["ivr-backend"], AUDIENCE, None, 600),
    ("another namespace's webhook", ACCOUNTS["ivr-webhook"], AUDIENCE, None, 600),
    ("the wrong audience", ACCOUNTS["ivr-webhook"], "https://kubernetes.default.svc", None, 600),
    # Expired an hour ago: far past OpenBao's default 150 s expiration leeway + 60 s skew.
    ("expired", ACCOUNTS["ivr-webhook"], AUDIENCE, time.time() - 4200, 600),
]


@pytest.mark.parametrize(
    ("why", "account", "audience", "issued", "lifetime"), REFUSED, ids=[case[0] for case in REFUSED]
)
def test_a_token_for_anyone_else_is_refused(
    lab: Lab,
    tmp_path: Path,
    why: str,
    account: str,
    audience: str,
    issued: float | None,
    lifetime: float,
) -> None:
    namespace = "other" if why.startswith("another namespace") else NAMESPACE
    token = lab.issuer.write(
        tmp_path / "token", namespace, account, audience=audience, issued=issued, lifetime=lifetime
    )
    webhook = client(lab, "ivr-webhook", token)
    try:
        with pytest.raises(VaultAuthError, match="jwt login: service-account token refused"):
            webhook.ensure_login()
    finally:
        webhook.close()


def test_a_token_signed_by_another_key_is_refused(lab: Lab, tmp_path: Path) -> None:
    token = Issuer.make().write(
        tmp_path / "token", NAMESPACE, ACCOUNTS["ivr-webhook"], audience=AUDIENCE
    )
    webhook = client(lab, "ivr-webhook", token)
    try:
        with pytest.raises(VaultAuthError):
            webhook.ensure_login()
    finally:
        webhook.close()


def test_a_missing_token_file_is_one_plain_error(lab: Lab, tmp_path: Path) -> None:
    webhook = client(lab, "ivr-webhook", tmp_path / "absent")
    try:
        with pytest.raises(VaultAuthError, match="cannot read the service-account token file"):
            webhook.ensure_login()
    finally:
        webhook.close()


def test_renewal_then_a_fresh_login_with_the_kubelets_new_token(lab: Lab, tmp_path: Path) -> None:
    """As for AppRole: renewed when a third of the TTL is left, and past expiry a new
    login that reads the token file again (the kubelet has replaced it meanwhile)."""
    now = [1000.0]
    token = lab.issuer.write(
        tmp_path / "token", NAMESPACE, ACCOUNTS["ivr-webhook"], audience=AUDIENCE
    )
    webhook = client(lab, "ivr-webhook", token, clock=lambda: now[0])
    try:
        webhook.ensure_login()
        assert (webhook.logins, webhook.renewals) == (1, 0)
        now[0] += 3600 * 0.8  # a fifth of the 1 h TTL left: renew
        webhook.ensure_login()
        assert (webhook.logins, webhook.renewals) == (1, 1)
        # The kubelet's next token: the old one is gone from the file.
        lab.issuer.write(token, NAMESPACE, ACCOUNTS["ivr-webhook"], audience=AUDIENCE)
        now[0] += 7200  # past the renewed token's life: log in again
        webhook.ensure_login()
        assert (webhook.logins, webhook.renewals) == (2, 1)
        webhook.write(
            "transit/encrypt/ivr-dtmf", "encrypt", {"plaintext": PLAINTEXT, "context": CONTEXT}
        )
        # Re-login reads the file each time: a file the kubelet left empty is an error
        # then, not a cached token quietly reused.
        token.write_text("", encoding="utf-8")
        webhook.tokens.forget()
        with pytest.raises(VaultAuthError, match="is empty"):
            webhook.ensure_login()
    finally:
        webhook.close()


def test_bootstrap_is_idempotent_and_copies_the_approle_policies(lab: Lab) -> None:
    auth = JwtAuth(AUDIENCE, NAMESPACE, ACCOUNTS, pubkeys=(lab.issuer.public_pem,))
    configure_jwt(lab.root, lab.layout, auth)
    for role, account in ACCOUNTS.items():
        jwt_role = lab.root.read(f"auth/jwt/role/{role}", "read role")["data"]
        approle = lab.root.read(f"auth/approle/role/{role}", "read role")["data"]
        assert jwt_role["bound_subject"] == f"system:serviceaccount:{NAMESPACE}:{account}"
        assert jwt_role["bound_audiences"] == [AUDIENCE]
        for field in (
            "token_policies",
            "token_ttl",
            "token_max_ttl",
            "token_type",
            "token_no_default_policy",
        ):
            assert jwt_role[field] == approle[field], field


def test_the_charts_bootstrap_args_then_a_backend_process_logs_in_by_jwt(tmp_path: Path) -> None:
    """End to end on a fresh OpenBao: `ivr-vault bootstrap` with the arguments the chart's
    hook Job renders (its OIDC discovery flags swapped for a public key file: there is no
    API server here), then `ivr-vault serve backend` with the Deployment's VAULT_* settings
    and a token file: /readyz 200 is a Vault login by service account, in a real process."""
    from service.devtools.devstack import ServiceProcess, free_port, wait_http
    from tests.support.helm import NAMESPACE, by_kind, render

    vault = DevVault.start(tmp_path / "vault")
    issuer = Issuer.make()
    backend: ServiceProcess | None = None
    try:
        objects = render({})
        job = by_kind(objects, "Job")["ivr-vault-bootstrap"]
        args = [
            a
            for a in job["spec"]["template"]["spec"]["containers"][0]["args"]
            if not a.startswith(("--jwt-discovery", "--jwt-issuer"))
        ]
        (tmp_path / "sa.pem").write_text(issuer.public_pem, encoding="utf-8")
        (tmp_path / "root-token").write_text(vault.root_token.reveal(), encoding="utf-8")
        base = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "VAULT_ADDR": vault.addr}
        done = subprocess.run(
            [sys.executable, "-m", "service", *args, f"--jwt-pubkey-file={tmp_path / 'sa.pem'}"],
            env={**base, "VAULT_TOKEN_FILE": str(tmp_path / "root-token")},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        assert f"ivr-backend=system:serviceaccount:{NAMESPACE}:ivr-vault-backend" in done.stdout

        deployment = by_kind(objects, "Deployment")["ivr-vault-backend"]
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        env = {
            e["name"]: e["value"]
            for e in container["env"]
            if e["name"].startswith("VAULT_")
            and e["name"] not in ("VAULT_ADDR", "VAULT_CACERT", "VAULT_JWT_TOKEN_PATH")
        }
        account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        token = issuer.write(tmp_path / "token", NAMESPACE, account, audience=AUDIENCE)
        port = free_port()
        backend = ServiceProcess(
            "backend",
            port,
            {
                **base,
                **env,
                "VAULT_JWT_TOKEN_PATH": str(token),
                "BACKEND_PORT": str(port),
                "BACKEND_TOKEN": "b" * 32,
                "STORE_URL": f"sqlite:///{tmp_path / 'store.db'}",
            },
            tmp_path / "logs",
        ).start()
        wait_http(f"{backend.url}/readyz", timeout=30, process=backend.process)
    finally:
        if backend is not None:
            backend.stop()
        vault.stop()
