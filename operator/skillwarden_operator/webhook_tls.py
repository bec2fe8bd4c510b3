"""TLS for the admission webhook server.

kopf's own self-signed certificates need the optional `certbuilder` package; we make the
certificate with `cryptography` instead (already a dependency). For local stacks and tests the
operator creates a fresh self-signed certificate for the webhook host at start and hands it to
kopf as the caBundle of the managed webhook configuration. In a cluster, mount a certificate
(cert-manager or the chart) and pass --webhook-cert-dir.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class TlsFiles:
    certfile: Path
    pkeyfile: Path
    cafile: Path


def self_signed(directory: Path, hosts: list[str], now: dt.datetime, days: int = 365) -> TlsFiles:
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"skillwarden-operator {hosts[0]}")])
    certificate = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    key_path.touch(mode=0o600)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return TlsFiles(certfile=cert_path, pkeyfile=key_path, cafile=cert_path)


def from_directory(directory: Path) -> TlsFiles:
    ca = directory / "ca.crt"
    return TlsFiles(certfile=directory / "tls.crt", pkeyfile=directory / "tls.key",
                    cafile=ca if ca.is_file() else directory / "tls.crt")
