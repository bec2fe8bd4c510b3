"""The webhook's self-signed certificate is usable by the API server for the configured host."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509

from skillwarden_operator.webhook_tls import from_directory, self_signed

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def test_self_signed_names_ip_and_dns_hosts(tmp_path: Path) -> None:
    files = self_signed(tmp_path, ["127.0.0.1", "skillwarden-operator.skillwarden-system.svc"], NOW)
    certificate = x509.load_pem_x509_certificate(files.certfile.read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert names.get_values_for_type(x509.DNSName) == ["skillwarden-operator.skillwarden-system.svc"]
    assert certificate.not_valid_before_utc <= NOW < certificate.not_valid_after_utc
    assert files.cafile == files.certfile  # self-signed: the caBundle is the certificate itself
    assert files.pkeyfile.stat().st_mode & 0o077 == 0
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files.certfile, files.pkeyfile)  # a usable server key pair


def test_mounted_directory(tmp_path: Path) -> None:
    self_signed(tmp_path, ["127.0.0.1"], NOW)
    assert from_directory(tmp_path).cafile == tmp_path / "tls.crt"
    (tmp_path / "ca.crt").write_bytes((tmp_path / "tls.crt").read_bytes())
    assert from_directory(tmp_path).cafile == tmp_path / "ca.crt"
