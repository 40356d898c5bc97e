"""Can each service identity log in, and do exactly what its policy says?

A few probe operations per identity, each expected to succeed or to be denied (403). The
probes touch no real data: the webhook encrypts a fixed label under a probe context, the
backend HMACs a fixed label and decrypts that probe ciphertext, and the denials are asked
with a dummy ciphertext that decrypts to nothing. A denial probe passes only on 403: a 400
means the policy let the request through and Transit refused its content.

Credentials: ``--credentials ROLE=DIR`` (``role_id`` and ``secret_id`` files, as bootstrap
writes them); else ``.dev/ROLE/`` in a ``make run`` directory (no VAULT_ADDR); else the
environment's VAULT_ROLE_ID/VAULT_SECRET_ID (or ``*_FILE``) for the identity whose policy
that AppRole's token carries. Each identity logs in once (a counted secret-id, as
production's key-admin one, loses one use) and its token is revoked at the end.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.backup.signing import SIGNING_KEY
from service.doctor.report import Check
from service.errors import (
    VaultAuthError,
    VaultError,
    VaultPermissionDenied,
    VaultRequestError,
)
from service.settings import Secret, Settings
from service.vault.client import AppRoleCredentials, VaultClient

IDENTITIES = ("ivr-webhook", "ivr-backend", "ivr-keyadmin")
# Checked when its credentials are at hand (``--credentials ivr-backup=DIR``, or
# ``.dev/ivr-backup/`` in a make run directory); a deployment that backs up from elsewhere
# gives doctor none, and that is no failure.
OPTIONAL_IDENTITIES = ("ivr-backup",)

PROBE_PLAINTEXT = b"ivr-vault doctor probe"  # a fixed label, never caller data
PROBE_CONTEXT = b"doctor:probe"
# Well-formed, decrypts to nothing: asked only of identities that must be refused.
DUMMY_CIPHERTEXT = "vault:v1:" + base64.b64encode(bytes(44)).decode()

REISSUE_FIX = (
    "issue new credentials: `ivr-vault bootstrap --credentials {role}=DIR` "
    "with an administrative VAULT_TOKEN (make run: restart it)"
)
POLICY_FIX = (
    "write policies/{role}.hcl back: `ivr-vault bootstrap` with an "
    "administrative VAULT_TOKEN (it rewrites every policy)"
)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass(frozen=True)
class Source:
    """Where one identity's credentials were found (never the credentials themselves in
    anything printed)."""

    role: str
    credentials: AppRoleCredentials
    where: str


def read_approle_dir(directory: Path) -> AppRoleCredentials | None:
    try:
        return AppRoleCredentials(
            Secret((directory / "role_id").read_text(encoding="utf-8").strip()),
            Secret((directory / "secret_id").read_text(encoding="utf-8").strip()),
        )
    except (OSError, UnicodeDecodeError):
        return None


def find_sources(given: Mapping[str, Path], dev_dirs: Mapping[str, Path]) -> dict[str, Source]:
    """Each identity's credentials from ``--credentials`` first, then ``.dev/``."""
    found: dict[str, Source] = {}
    for role in (*IDENTITIES, *OPTIONAL_IDENTITIES):
        for directory, label in (
            (given.get(role), "--credentials"),
            (dev_dirs.get(role), "make run"),
        ):
            if directory is None:
                continue
            creds = read_approle_dir(directory)
            if creds is not None:
                found[role] = Source(role, creds, f"{label} {directory}/")
                break
    return found


def environment_source(
    settings: Settings, connect: Callable[[AppRoleCredentials], VaultClient]
) -> Source | None:
    """VAULT_ROLE_ID/VAULT_SECRET_ID of the environment, as the identity whose policy its
    token carries; None when unset, refused, or not one of ours."""
    if not (settings.vault_role_id and settings.vault_secret_id):
        return None
    creds = AppRoleCredentials(settings.vault_role_id, settings.vault_secret_id)
    client = connect(creds)
    try:
        data = client.read("auth/token/lookup-self", "token lookup").get("data") or {}
    except VaultError:
        return None
    finally:
        client.revoke_self()
        client.close()
    roles = [r for r in IDENTITIES if r in (data.get("policies") or ())]
    if len(roles) != 1:
        return None
    return Source(roles[0], creds, "VAULT_ROLE_ID/VAULT_SECRET_ID")


@dataclass(frozen=True)
class Probe:
    says: str  # what was asked, for the row: "encrypt with ivr-dtmf"
    method: str
    path: str
    payload: Mapping[str, Any] | None
    allowed: bool
    binary: bool = False  # the answer is not JSON (a Raft snapshot)


def probes(role: str, settings: Settings, ciphertext: str | None) -> list[Probe]:
    mount, dtmf, lookup = settings.transit_mount, settings.dtmf_key, settings.lookup_key
    encrypt = Probe(
        f"encrypt with {dtmf}",
        "POST",
        f"{mount}/encrypt/{dtmf}",
        {"plaintext": _b64(PROBE_PLAINTEXT), "context": _b64(PROBE_CONTEXT)},
        allowed=role == "ivr-webhook",
    )
    hmac_ = Probe(
        f"HMAC with {lookup}",
        "POST",
        f"{mount}/hmac/{lookup}",
        {"input": _b64(PROBE_PLAINTEXT)},
        allowed=role == "ivr-backend",
    )
    decrypt = Probe(
        f"decrypt with {dtmf}",
        "POST",
        f"{mount}/decrypt/{dtmf}",
        {
            "ciphertext": ciphertext if role == "ivr-backend" and ciphertext else DUMMY_CIPHERTEXT,
            "context": _b64(PROBE_CONTEXT),
        },
        allowed=role == "ivr-backend",
    )
    read_key = Probe(
        f"read {dtmf}'s metadata",
        "GET",
        f"{mount}/keys/{dtmf}",
        None,
        allowed=role == "ivr-keyadmin",
    )
    export = Probe(
        f"export {dtmf}", "GET", f"{mount}/export/encryption-key/{dtmf}", None, allowed=False
    )
    backup = Probe(f"back up {dtmf}", "GET", f"{mount}/backup/{dtmf}", None, allowed=False)
    # What `ivr-vault backup` does: a whole snapshot, read and dropped (sealed under the
    # barrier: it opens only with the unseal keys, which this identity never sees).
    snapshot = Probe(
        "take a Raft snapshot",
        "GET",
        "sys/storage/raft/snapshot",
        None,
        allowed=role == "ivr-backup",
        binary=True,
    )
    # What `ivr-vault backup` signs its manifest with; a fixed label here. Only the backup
    # identity may: a service that could would forge backups an operator trusts.
    sign = Probe(
        f"sign with {SIGNING_KEY}",
        "POST",
        f"{mount}/sign/{SIGNING_KEY}",
        {"input": _b64(PROBE_PLAINTEXT)},
        allowed=role == "ivr-backup",
    )
    return {
        "ivr-webhook": [encrypt, decrypt, hmac_, read_key, sign],
        "ivr-backend": [hmac_, decrypt, encrypt, read_key, sign],
        "ivr-keyadmin": [read_key, decrypt, export, backup, hmac_, sign],
        "ivr-backup": [snapshot, sign, encrypt, decrypt, hmac_, read_key],
    }[role]


@dataclass
class Outcome:
    problems: list[str]
    allowed: list[str]
    denied: list[str]
    answers: dict[str, Any]


def run_probe(client: VaultClient, probe: Probe, outcome: Outcome) -> None:
    try:
        if probe.binary:
            client.download(probe.path, f"doctor: {probe.says}")
            answer: dict[str, Any] = {}
        else:
            answer = client.request(
                probe.method, probe.path, f"doctor: {probe.says}", probe.payload, retry_denied=False
            )
    except VaultPermissionDenied:
        if probe.allowed:
            outcome.problems.append(f"cannot {probe.says} (denied; its policy should allow it)")
        else:
            outcome.denied.append(probe.says)
        return
    except VaultRequestError:
        if (
            probe.allowed
            and probe.says.startswith("decrypt")
            and probe.payload
            and probe.payload.get("ciphertext") == DUMMY_CIPHERTEXT
        ):
            outcome.allowed.append(f"{probe.says} (policy; Transit refused the dummy)")
        elif probe.allowed:
            outcome.problems.append(f"{probe.says}: Transit refused the probe")
        else:
            outcome.problems.append(
                f"can {probe.says}: the policy let it through (Transit "
                "refused only the probe's content)"
            )
        return
    except VaultError as exc:
        outcome.problems.append(f"could not check {probe.says} ({exc.kind})")
        return
    if probe.allowed:
        outcome.allowed.append(probe.says)
        outcome.answers[probe.says] = answer.get("data") or {}
    else:
        outcome.problems.append(f"can {probe.says} (its policy must not allow it)")


@contextmanager
def logged_in(
    connect: Callable[[AppRoleCredentials], VaultClient], source: Source
) -> Iterator[VaultClient]:
    client = connect(source.credentials)
    try:
        yield client
    finally:
        client.revoke_self()
        client.close()


def identity_check(
    client: VaultClient, source: Source, settings: Settings, ciphertext: str | None
) -> tuple[Check, str | None]:
    """One identity's row, and the probe ciphertext when this identity made one."""
    name = f"identity {source.role}"
    try:
        client.ensure_login()
    except VaultAuthError:
        return Check.failed(
            name,
            f"login refused ({source.where}): role-id or secret-id "
            "wrong, expired, used up, or bound to other addresses",
            REISSUE_FIX.format(role=source.role),
        ), None
    except VaultError as exc:
        return Check.failed(
            name, f"could not log in ({exc.kind})", "see the vault row; Vault must answer first"
        ), None
    outcome = Outcome([], [], [], {})
    for probe in probes(source.role, settings, ciphertext):
        run_probe(client, probe, outcome)
    made = outcome.answers.get(f"encrypt with {settings.dtmf_key}", {}).get("ciphertext")
    decrypted = outcome.answers.get(f"decrypt with {settings.dtmf_key}", {}).get("plaintext")
    if decrypted is not None and decrypted != _b64(PROBE_PLAINTEXT):
        outcome.problems.append("decrypting the probe gave back something else")
    if outcome.problems:
        return Check.failed(
            name, "; ".join(outcome.problems), POLICY_FIX.format(role=source.role)
        ), made
    return Check.passed(
        name,
        f"logs in ({source.where}); may {', '.join(outcome.allowed)}; "
        f"denied {', '.join(outcome.denied)}",
    ), made


def missing_check(role: str) -> Check:
    return Check.failed(
        f"identity {role}",
        "no credentials to check it with",
        f"give doctor --credentials {role}=DIR (role_id and secret_id "
        "files), or run it in a make run directory without VAULT_ADDR",
    )
