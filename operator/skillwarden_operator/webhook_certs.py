"""Serving the admission webhooks: a guard in front of kopf, and certificates shared by replicas.

`GuardedServer` wraps whatever kopf webhook server the operator configured:

- AdmissionReviews are checked before kopf sees them; a malformed one (not an object, wrong
  kind, no `request.uid`, no `resource`, no `userInfo`, no object) gets a clear denial instead of
  a 500 or a traceback;
- the request's namespace is handed to handlers as the `X-Skillwarden-Request-Namespace`
  header: a Deployment's pods carry no namespace in the object (kopf issue #744);
- every review is answered within `deadline` seconds (below the configured `timeoutSeconds`),
  as a denial if the handler is stuck — the API server never waits for a hung webhook;
- with a `CertRotator`, the certificate is kept current while serving (see below).

Certificates, mode `secret` (the chart's default): one Secret (`ca.crt`, `tls.crt`, `tls.key`)
is shared by all replicas. Each replica reconciles it at start and then every `check_interval`:
missing -> created (create conflicts are lost gracefully: the winner's Secret is used);
serving certificate within `rotate_before` of expiry or not naming the service -> reissued from
the CA; CA near expiry -> a new CA, and `ca.crt` carries old + new CA until the old one expires,
so no replica's certificate is untrusted during the switch. Updates use the Secret's
resourceVersion (optimistic concurrency: two replicas rotating at once produce one winner and
one re-read). Every replica writes the files to a private directory (kopf reloads the server
when they change) and patches `caBundle` of every webhook in the named configurations.
Alternative: cert-manager (`certificates.mode=cert-manager` in the chart) — a `Certificate`
writes the Secret and cainjector fills `caBundle` via `cert-manager.io/inject-ca-from`; then
the operator only reads the mounted files. See docs/injection.md.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import ipaddress
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NAMESPACE_HEADER = "X-Skillwarden-Request-Namespace"
_ADMISSION_VERSIONS = {"admission.k8s.io/v1", "admission.k8s.io/v1beta1"}
log = logging.getLogger("skillwarden.webhook")

# --------------------------------------------------------------------------------------------
# The guard


def review_problem(review: Any) -> str | None:
    """Why this is not an AdmissionReview kopf can serve, or None."""
    if not isinstance(review, Mapping):
        return "the body is not a JSON object"
    if review.get("kind") != "AdmissionReview" or review.get("apiVersion") not in _ADMISSION_VERSIONS:
        return "kind/apiVersion must be AdmissionReview admission.k8s.io/v1"
    request = review.get("request")
    if not isinstance(request, Mapping):
        return "request is missing"
    if not isinstance(request.get("uid"), str) or not request["uid"]:
        return "request.uid is missing"
    resource = request.get("resource")
    if not isinstance(resource, Mapping) or not all(isinstance(resource.get(k), str)
                                                    for k in ("group", "version", "resource")):
        return "request.resource (group, version, resource) is missing"
    if not isinstance(request.get("operation"), str):
        return "request.operation is missing"
    if not isinstance(request.get("userInfo"), Mapping):
        return "request.userInfo is missing"
    if not isinstance(request.get("object"), Mapping) and not isinstance(request.get("oldObject"), Mapping):
        return "request.object is missing"
    namespace = request.get("namespace")
    if namespace is not None and not isinstance(namespace, str):
        return "request.namespace must be a string"
    return None


def denial(review: Any, message: str, code: int) -> dict[str, Any]:
    uid = ""
    if isinstance(review, Mapping) and isinstance(review.get("request"), Mapping):
        raw_uid = review["request"].get("uid")
        uid = raw_uid if isinstance(raw_uid, str) else ""
    api_version = review.get("apiVersion") if isinstance(review, Mapping) else None
    return {"apiVersion": api_version if api_version in _ADMISSION_VERSIONS else "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {"uid": uid, "allowed": False, "status": {"code": code, "message": message}}}


WebhookFn = Callable[..., Any]


def guard(fn: WebhookFn, deadline: float) -> WebhookFn:
    async def guarded(review: Any, *, headers: Mapping[str, str] | None = None, **kwargs: Any) -> Any:
        problem = review_problem(review)
        if problem is not None:
            return denial(review, f"skillwarden: malformed AdmissionReview: {problem}", 400)
        # Our header wins over anything a caller sent under the same name.
        headers = {k: v for k, v in (headers or {}).items() if k.lower() != NAMESPACE_HEADER.lower()}
        namespace = review["request"].get("namespace")
        if namespace:
            headers[NAMESPACE_HEADER] = namespace
        try:
            return await asyncio.wait_for(fn(review, headers=headers, **kwargs), timeout=deadline)
        except TimeoutError:
            log.error("admission review %s not answered within %.1fs", review["request"]["uid"], deadline)
            return denial(review, f"skillwarden: webhook did not answer within {deadline:.1f}s", 500)
        except Exception as error:
            # kopf raises for unknown resources / missing data; anything else is our bug. Either
            # way the API server gets an answer it can show, never a connection reset.
            log.exception("admission review %s failed", review["request"]["uid"])
            return denial(review, f"skillwarden: webhook error ({type(error).__name__}: {error})"[:500], 500)

    return guarded


class GuardedServer:
    """A kopf admission server (`settings.admission.server`) wrapping another one."""

    def __init__(self, inner: Any, deadline: float = 4.0, rotator: CertRotator | None = None) -> None:
        self.inner = inner
        self.deadline = deadline
        self.rotator = rotator
        self._entered: Any = None

    async def __aenter__(self) -> GuardedServer:
        enter = getattr(self.inner, "__aenter__", None)
        self._entered = await enter() if enter is not None else self.inner
        return self

    async def __aexit__(self, *exc: Any) -> None:
        leave = getattr(self.inner, "__aexit__", None)
        if leave is not None:
            await leave(*exc)

    async def __call__(self, fn: WebhookFn) -> AsyncIterator[Any]:
        server = self._entered if self._entered is not None else self.inner
        task = asyncio.create_task(self.rotator.run()) if self.rotator is not None else None
        try:
            async for client_config in server(guard(fn, self.deadline)):
                yield client_config
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


# --------------------------------------------------------------------------------------------
# Certificates (pure)


@dataclass(frozen=True)
class ServingMaterial:
    ca_bundle: bytes  # PEM, one or two CA certificates (two while a CA rotation overlaps)
    ca_key: bytes  # PEM of the newest CA's key
    cert: bytes
    key: bytes

    def as_secret_data(self) -> dict[str, str]:
        def encode(content: bytes) -> str:
            return base64.b64encode(content).decode()

        return {"ca.crt": encode(self.ca_bundle), "ca.key": encode(self.ca_key),
                "tls.crt": encode(self.cert), "tls.key": encode(self.key)}

    @staticmethod
    def from_secret_data(data: Mapping[str, str] | None) -> ServingMaterial | None:
        try:
            decoded = {k: base64.b64decode(data[k]) for k in ("ca.crt", "ca.key", "tls.crt", "tls.key")} \
                if data else None
        except (KeyError, ValueError):
            return None
        if decoded is None:
            return None
        return ServingMaterial(decoded["ca.crt"], decoded["ca.key"], decoded["tls.crt"], decoded["tls.key"])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _new_ca(now: dt.datetime, days: int) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"skillwarden-webhook-ca-{now:%Y%m%d%H%M%S}")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def _serving(ca_cert_pem: bytes, ca_key_pem: bytes, hosts: Sequence[str], now: dt.datetime,
             days: int) -> tuple[bytes, bytes]:
    ca = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key in the Secret is not an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    not_after = min(now + dt.timedelta(days=days), ca.not_valid_after_utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def _certs(bundle: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(bundle)


def _hosts_of(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(v) for v in san.get_values_for_type(x509.DNSName)} | {
        str(v) for v in san.get_values_for_type(x509.IPAddress)}


def plan_material(current: ServingMaterial | None, hosts: Sequence[str], now: dt.datetime,
                  validity_days: int = 365,
                  rotate_before_days: int = 30) -> tuple[ServingMaterial, str | None]:
    """What the Secret should hold now, and why it changed (None: keep `current` as it is)."""
    rotate_before = dt.timedelta(days=rotate_before_days)
    ca_days = validity_days * 5
    if current is None:
        ca_cert, ca_key = _new_ca(now, ca_days)
        cert, key = _serving(ca_cert, ca_key, hosts, now, validity_days)
        return ServingMaterial(ca_cert, ca_key, cert, key), "created"
    try:
        cas = [c for c in _certs(current.ca_bundle) if c.not_valid_after_utc > now]
        served = x509.load_pem_x509_certificate(current.cert)
    except ValueError:
        cas, served = [], None
    if not cas or served is None:
        return plan_material(None, hosts, now, validity_days, rotate_before_days)[0], "unreadable, recreated"
    newest = max(cas, key=lambda c: c.not_valid_after_utc)
    newest_pem = newest.public_bytes(serialization.Encoding.PEM)
    ca_key = current.ca_key
    reason = None
    if newest.not_valid_after_utc - now < rotate_before + dt.timedelta(days=validity_days):
        # Start the CA switch early enough that a full serving-cert lifetime fits under the old CA.
        newest_pem, ca_key = _new_ca(now, ca_days)
        reason = "CA rotated"
    bundle = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in cas
                      if c.public_bytes(serialization.Encoding.PEM) != newest_pem) + newest_pem
    signed_by_newest = served.issuer == x509.load_pem_x509_certificate(newest_pem).subject
    if reason is None and served.not_valid_after_utc - now < rotate_before:
        reason = "serving certificate expiring"
    if reason is None and not set(hosts) <= _hosts_of(served):
        reason = "service names changed"
    if reason is None and not signed_by_newest:
        reason = "serving certificate not from the current CA"
    if reason is None:
        return current, None
    cert, key = _serving(newest_pem, ca_key, hosts, now, validity_days)
    return ServingMaterial(bundle, ca_key, cert, key), reason


# --------------------------------------------------------------------------------------------
# The Secret and the webhook configurations (I/O; kubernetes client in a worker thread)


@dataclass
class CertRotator:
    api: Any  # kubernetes.client.ApiClient
    namespace: str
    secret_name: str
    hosts: tuple[str, ...]
    directory: Path
    configurations: tuple[tuple[str, str], ...] = ()  # ("mutating"|"validating", name)
    validity_days: int = 365
    rotate_before_days: int = 30
    check_interval: float = 3600.0
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)

    @property
    def certfile(self) -> Path:
        return self.directory / "tls.crt"

    @property
    def pkeyfile(self) -> Path:
        return self.directory / "tls.key"

    @property
    def cafile(self) -> Path:
        return self.directory / "ca.crt"

    def reconcile(self) -> str | None:
        """One pass; returns why the Secret changed (None: it did not)."""
        from kubernetes import client as k8s

        core: Any = k8s.CoreV1Api(self.api)
        reason: str | None = None
        for _attempt in range(5):
            try:
                secret = core.read_namespaced_secret(self.secret_name, self.namespace)
            except k8s.ApiException as error:
                if error.status != 404:
                    raise
                secret = None
            data: Any = secret.data if secret is not None else None
            current = ServingMaterial.from_secret_data(data)
            material, reason = plan_material(current, self.hosts, self.clock(), self.validity_days,
                                             self.rotate_before_days)
            if reason is None:
                break
            body: dict[str, Any] = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                    "metadata": {"name": self.secret_name, "namespace": self.namespace,
                                 "labels": {"app.kubernetes.io/managed-by": "skillwarden-operator"}},
                    "data": material.as_secret_data()}
            try:
                if secret is None:
                    core.create_namespaced_secret(self.namespace, body)
                else:
                    metadata: Any = secret.metadata
                    body["metadata"]["resourceVersion"] = metadata.resource_version
                    core.replace_namespaced_secret(self.secret_name, self.namespace, body)
            except k8s.ApiException as error:
                if error.status == 409:  # another replica won: read theirs and use it
                    continue
                raise
            log.info("webhook certificate Secret %s/%s: %s", self.namespace, self.secret_name, reason)
            break
        else:
            raise RuntimeError(f"Secret {self.namespace}/{self.secret_name}: too many update conflicts")
        self._write_files(material)
        self._patch_ca_bundles(material.ca_bundle)
        return reason

    def _write_files(self, material: ServingMaterial) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        files = ((self.pkeyfile, material.key, 0o600), (self.certfile, material.cert, 0o644),
                 (self.cafile, material.ca_bundle, 0o644))
        for path, content, mode in files:
            if path.exists() and path.read_bytes() == content:
                continue
            temporary = path.with_suffix(".tmp")
            temporary.write_bytes(b"")
            temporary.chmod(mode)
            temporary.write_bytes(content)
            os.replace(temporary, path)  # kopf never reads a half-written file

    def _patch_ca_bundles(self, ca_bundle: bytes) -> None:
        from kubernetes import client as k8s

        api = k8s.AdmissionregistrationV1Api(self.api)
        encoded = base64.b64encode(ca_bundle).decode()
        for kind, name in self.configurations:
            read = (api.read_mutating_webhook_configuration if kind == "mutating"
                    else api.read_validating_webhook_configuration)
            patch = (api.patch_mutating_webhook_configuration if kind == "mutating"
                     else api.patch_validating_webhook_configuration)
            try:
                configuration = read(name)
            except k8s.ApiException as error:
                if error.status == 404:
                    log.warning("webhook configuration %s/%s not found; caBundle not set", kind, name)
                    continue
                raise
            webhooks: list[Any] = list(configuration.webhooks or [])
            ops = [{"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": encoded}
                   for i, webhook in enumerate(webhooks) if webhook.client_config.ca_bundle != encoded]
            if ops:
                patch(name, ops, _content_type="application/json-patch+json")

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.check_interval)
            try:
                await asyncio.to_thread(self.reconcile)
            except Exception:  # keep serving with the current files; retry next interval
                log.exception("webhook certificate reconcile failed")


def rotator_from_env(environ: Mapping[str, str], api: Any, directory: Path) -> CertRotator:
    """The chart's settings (templates/deployment.yaml) for `certificates.mode=secret`."""
    configurations = []
    for entry in environ.get("SKILLWARDEN_WEBHOOK_CONFIGURATIONS", "").split(","):
        if entry.strip():
            kind, _, name = entry.strip().partition("/")
            if kind not in {"mutating", "validating"} or not name:
                raise ValueError(f"SKILLWARDEN_WEBHOOK_CONFIGURATIONS: {entry!r} is not mutating/<name> "
                                 "or validating/<name>")
            configurations.append((kind, name))
    service = environ.get("SKILLWARDEN_WEBHOOK_SERVICE", "")
    if not service:
        raise ValueError("SKILLWARDEN_WEBHOOK_SERVICE (the webhook Service's DNS name) is required")
    try:
        ipaddress.ip_address(service)  # a URL-configured webhook (local stacks): the address itself
        hosts: tuple[str, ...] = (service,)
    except ValueError:
        short = service.split(".")
        hosts = tuple(dict.fromkeys([service, ".".join(short[:2]), *(
            [".".join(short[:3])] if len(short) > 3 else [])]))
    return CertRotator(
        api=api, namespace=environ.get("SKILLWARDEN_NAMESPACE", "default"),
        secret_name=environ.get("SKILLWARDEN_WEBHOOK_TLS_SECRET", "skillwarden-webhook-tls"),
        hosts=hosts, directory=directory, configurations=tuple(configurations),
        validity_days=int(environ.get("SKILLWARDEN_CERT_VALIDITY_DAYS", "365")),
        rotate_before_days=int(environ.get("SKILLWARDEN_CERT_ROTATE_BEFORE_DAYS", "30")))
