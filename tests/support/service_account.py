"""Kubernetes service-account tokens without a cluster: a signing key pair the test makes,
and JWTs shaped as the API server's projected tokens are (RS256; ``iss``, ``sub``
``system:serviceaccount:NS:NAME``, ``aud``, ``iat``/``nbf``/``exp``, the
``kubernetes.io`` claim). OpenBao's JWT method is given the public key
(``jwt_validation_pubkeys``), as an operator gives it the cluster's."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ISSUER = "https://kubernetes.default.svc.cluster.local"


@dataclass(frozen=True)
class Issuer:
    """The API server's token signer, as far as a test needs one."""

    key: rsa.RSAPrivateKey

    @classmethod
    def make(cls) -> Issuer:
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=2048))

    @property
    def public_pem(self) -> str:
        return (
            self.key.public_key()
            .public_bytes(
                serialization.Encoding.PEM,
                serialization.PublicFormat.SubjectPublicKeyInfo,
            )
            .decode()
        )

    def token(
        self,
        namespace: str,
        name: str,
        *,
        audience: str,
        lifetime: float = 600,
        issued: float | None = None,
    ) -> str:
        now = time.time() if issued is None else issued
        claims = {
            "iss": ISSUER,
            "sub": f"system:serviceaccount:{namespace}:{name}",
            "aud": [audience],
            "iat": int(now),
            "nbf": int(now),
            "exp": int(now + lifetime),
            "kubernetes.io": {
                "namespace": namespace,
                "serviceaccount": {"name": name, "uid": "0000"},
            },
        }
        return jwt.encode(claims, self.key, algorithm="RS256")

    def write(
        self,
        path: Path,
        namespace: str,
        name: str,
        *,
        audience: str,
        lifetime: float = 600,
        issued: float | None = None,
    ) -> Path:
        """The token in ``path``, as the kubelet writes a projected token."""
        path.write_text(
            self.token(namespace, name, audience=audience, lifetime=lifetime, issued=issued),
            encoding="utf-8",
        )
        return path
