"""Logging in with a Kubernetes service-account token (``VAULT_AUTH=jwt``).

A pod's projected, audience-bound token is a JWT the kubelet writes to a file and replaces
before it expires (by default at 80 % of its life). OpenBao's JWT auth method checks its
signature, audience and subject (``system:serviceaccount:NAMESPACE:NAME``) against the role
named at login, which :mod:`service.vault.jwt_auth` configures. The file is read again at
every login, never cached: a re-login after the token's max TTL must present the kubelet's
current token, not the one the pod started with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from service.errors import VaultAuthError


@dataclass(frozen=True)
class JwtCredentials:
    """Who to be: ``role`` at the JWT method mounted at ``mount``, proven by the token in
    ``token_path``. Holds no secret itself."""

    role: str
    token_path: Path
    mount: str = "jwt"

    def read_token(self) -> str:
        try:
            token = self.token_path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise VaultAuthError(
                f"jwt login: cannot read the service-account token file "
                f"{self.token_path} ({exc.strerror})"
            ) from None
        except UnicodeDecodeError:
            raise VaultAuthError(
                f"jwt login: the service-account token file {self.token_path} is not text"
            ) from None
        if not token:
            raise VaultAuthError(
                f"jwt login: the service-account token file {self.token_path} is empty"
            )
        return token
