"""Vault's TLS certificate for docker-compose.prod.yml: a private CA and a server
certificate, made by the ``vault-tls`` step unless the operator supplied them.

Three places, three audiences: ``ca.crt`` and ``server.crt`` are public (every service
mounts them, and verifies Vault with ``VAULT_CACERT=ca.crt``); ``server.key`` is for the
Vault container alone (mode 0640; Vault reads it through ``group_add``); ``ca.key`` stays
with this step (mode 0600), so that a renewed server certificate chains to the CA the
services already trust. ECDSA P-256, from ``cryptography``.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from service.files import write_private

CA_DAYS = 3650
SERVER_DAYS = 397  # what public CAs may issue at most; renewed when 30 days are left
RENEW_BEFORE = datetime.timedelta(days=30)

CA_CERT, SERVER_CERT, SERVER_KEY, CA_KEY = "ca.crt", "server.crt", "server.key", "ca.key"


def _write(path: Path, data: bytes, mode: int) -> None:
    write_private(path, data, mode=mode)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _subject_names(names: Sequence[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for name in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def _load_ca(public: Path, ca_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    now = datetime.datetime.now(datetime.UTC)
    if (public / CA_CERT).exists() and (ca_dir / CA_KEY).exists():
        cert = x509.load_pem_x509_certificate((public / CA_CERT).read_bytes())
        key = serialization.load_pem_private_key((ca_dir / CA_KEY).read_bytes(), None)
        if isinstance(key, ec.EllipticCurvePrivateKey) and cert.not_valid_after_utc > now:
            return cert, key
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ivr-vault private CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write(ca_dir / CA_KEY, _pem_key(key), 0o600)
    _write(public / CA_CERT, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert, key


def ensure_server_certificate(
    public: Path, key_dir: Path, ca_dir: Path, *, names: Sequence[str]
) -> str:
    """Keep a server certificate and key that are there and valid for another 30 days
    (ours or the operator's); else make them, signed by our CA. Returns what it did."""
    now = datetime.datetime.now(datetime.UTC)
    cert_path, key_path = public / SERVER_CERT, key_dir / SERVER_KEY
    if cert_path.exists() and key_path.exists():
        current = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if current.not_valid_after_utc - now > RENEW_BEFORE:
            return f"Vault's TLS certificate in {cert_path} is valid; kept"
    ca_cert, ca_key = _load_ca(public, ca_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SERVER_DAYS))
        .add_extension(x509.SubjectAlternativeName(_subject_names(names)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(key_path, _pem_key(key), 0o640)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return (
        f"made Vault's TLS certificate {cert_path} for {', '.join(names)}, signed by "
        f"the private CA {public / CA_CERT}"
    )
