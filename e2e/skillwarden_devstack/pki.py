"""Certificates, signing keys, static-token users and kubeconfigs for the local API server."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...]


# Who the tests and the demo act as. Groups double as OIDC-style groups in example policies.
USERS: tuple[User, ...] = (
    User("admin", ("system:masters",)),
    User("requester", ("skillwarden:requesters", "finance-analysts")),
    User("approver", ("skillwarden:approvers", "finance-leads")),
    User("approver2", ("skillwarden:approvers", "finance-leads")),
    User("outsider", ()),
)


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    sa_key: Path
    sa_pub: Path
    tokens_csv: Path


def _write_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def issue_ca(common_name: str, now: dt.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue_serving_cert(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, hosts: list[str],
                       now: dt.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    alt_names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def write_cert(cert: x509.Certificate, path: Path) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def create(directory: Path, now: dt.datetime) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = issue_ca("skillwarden-dev-ca", now)
    serving, serving_key = issue_serving_cert(ca, ca_key, ["127.0.0.1", "localhost"], now)
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pki = Pki(ca_cert=directory / "ca.crt", ca_key=directory / "ca.key",
              serving_cert=directory / "apiserver.crt", serving_key=directory / "apiserver.key",
              sa_key=directory / "sa.key", sa_pub=directory / "sa.pub", tokens_csv=directory / "tokens.csv")
    write_cert(ca, pki.ca_cert)
    _write_key(ca_key, pki.ca_key)
    write_cert(serving, pki.serving_cert)
    _write_key(serving_key, pki.serving_key)
    _write_key(sa_key, pki.sa_key)
    pki.sa_pub.write_bytes(sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    lines = []
    for user in USERS:
        groups = ",".join(user.groups)
        lines.append(f'{secrets.token_urlsafe(32)},{user.name},uid-{user.name},"{groups}"')
    pki.tokens_csv.write_text("\n".join(lines) + "\n")
    pki.tokens_csv.chmod(0o600)
    return pki


def tokens(pki: Pki) -> dict[str, str]:
    result = {}
    for line in pki.tokens_csv.read_text().splitlines():
        token, name = line.split(",")[:2]
        result[name] = token
    return result


def write_kubeconfig(path: Path, server: str, ca_cert: Path, user: str, token: str) -> None:
    config = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "skillwarden-dev", "cluster": {
            "server": server,
            "certificate-authority-data": base64.b64encode(ca_cert.read_bytes()).decode()}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": "skillwarden-dev", "user": user,
                                                "namespace": "default"}}],
        "current-context": user,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
