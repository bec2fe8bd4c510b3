"""Certificate planning (pure) and the AdmissionReview guard."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from skillwarden_operator import webhook_certs as wc

NOW = dt.datetime(2026, 11, 24, 6, 0, tzinfo=dt.UTC)
HOSTS = ("skillwarden-webhook.skillwarden-system.svc", "127.0.0.1")


def verifies(material: wc.ServingMaterial) -> bool:
    cert = x509.load_pem_x509_certificate(material.cert)
    for ca in x509.load_pem_x509_certificates(material.ca_bundle):
        if ca.subject != cert.issuer:
            continue
        public = ca.public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey)
        public.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))  # type: ignore[arg-type]
        return True
    return False


def test_created_then_stable() -> None:
    material, reason = wc.plan_material(None, HOSTS, NOW)
    assert reason == "created" and verifies(material)
    cert = x509.load_pem_x509_certificate(material.cert)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "skillwarden-webhook.skillwarden-system.svc" in names.get_values_for_type(x509.DNSName)
    again, why = wc.plan_material(material, HOSTS, NOW + dt.timedelta(days=100))
    assert why is None and again is material
    round_trip = wc.ServingMaterial.from_secret_data(material.as_secret_data())
    assert round_trip == material


def test_serving_certificate_rotates_before_expiry_under_the_same_ca() -> None:
    material, _ = wc.plan_material(None, HOSTS, NOW)
    later = NOW + dt.timedelta(days=340)
    rotated, reason = wc.plan_material(material, HOSTS, later)
    assert reason == "serving certificate expiring"
    assert rotated.ca_bundle == material.ca_bundle and rotated.cert != material.cert and verifies(rotated)
    assert x509.load_pem_x509_certificate(rotated.cert).not_valid_after_utc > later + dt.timedelta(days=300)


def test_new_service_name_reissues() -> None:
    material, _ = wc.plan_material(None, HOSTS, NOW)
    _, reason = wc.plan_material(material, (*HOSTS, "skillwarden-webhook.other.svc"), NOW)
    assert reason == "service names changed"


def test_ca_rotation_keeps_the_old_ca_trusted_until_it_expires() -> None:
    material, _ = wc.plan_material(None, HOSTS, NOW)
    old_ca = x509.load_pem_x509_certificates(material.ca_bundle)[0]
    near_end = old_ca.not_valid_after_utc - dt.timedelta(days=380)
    rotated, reason = wc.plan_material(material, HOSTS, near_end)
    assert reason == "CA rotated"
    bundle = x509.load_pem_x509_certificates(rotated.ca_bundle)
    assert len(bundle) == 2 and bundle[0] == old_ca and verifies(rotated)
    assert x509.load_pem_x509_certificate(rotated.cert).issuer == bundle[1].subject
    # Once the old CA has expired it leaves the bundle.
    after, _ = wc.plan_material(rotated, HOSTS, old_ca.not_valid_after_utc + dt.timedelta(days=1))
    assert len(x509.load_pem_x509_certificates(after.ca_bundle)) == 1


def test_garbage_secret_is_recreated() -> None:
    broken = wc.ServingMaterial(b"nope", b"nope", b"nope", b"nope")
    material, reason = wc.plan_material(broken, HOSTS, NOW)
    assert reason == "unreadable, recreated" and verifies(material)
    assert wc.ServingMaterial.from_secret_data({"tls.crt": "!!"}) is None


def test_guard_passes_the_request_namespace_and_drops_a_spoofed_one() -> None:
    seen: dict[str, Any] = {}

    async def fn(review: Any, *, headers: dict[str, str], **_: Any) -> dict[str, Any]:
        seen.update(headers)
        return {"ok": True}

    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u",
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE",
            "userInfo": {},
            "object": {},
            "namespace": "finance",
        },
    }
    guarded = wc.guard(fn, 1.0)
    assert asyncio.run(guarded(review, headers={"x-skillwarden-request-namespace": "kube-system"})) == {
        "ok": True
    }
    assert seen == {wc.NAMESPACE_HEADER: "finance"}


def test_guard_answers_before_the_api_server_gives_up() -> None:
    async def stuck(review: Any, **_: Any) -> None:
        await asyncio.sleep(30)

    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u",
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE",
            "userInfo": {},
            "object": {},
        },
    }

    async def timed() -> tuple[Any, float]:
        started = asyncio.get_running_loop().time()
        answer = await wc.guard(stuck, 0.2)(review)
        return answer, asyncio.get_running_loop().time() - started

    answer, elapsed = asyncio.run(timed())
    assert elapsed < 1.0
    assert answer["response"] == {
        "uid": "u",
        "allowed": False,
        "status": {"code": 500, "message": "skillwarden: webhook did not answer within 0.2s"},
    }


def test_guard_turns_handler_crashes_into_denials() -> None:
    async def broken(review: Any, **_: Any) -> None:
        raise KeyError("request")

    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u",
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE",
            "userInfo": {},
            "object": {},
        },
    }
    answer = asyncio.run(wc.guard(broken, 1.0)(review))
    assert answer["response"]["allowed"] is False and "KeyError" in answer["response"]["status"]["message"]


def test_rotator_from_env_reads_the_chart_settings(tmp_path: Any) -> None:
    rotator = wc.rotator_from_env(
        {
            "SKILLWARDEN_WEBHOOK_SERVICE": "skw-webhook.skillwarden-system.svc",
            "SKILLWARDEN_NAMESPACE": "skillwarden-system",
            "SKILLWARDEN_WEBHOOK_TLS_SECRET": "skw-webhook-tls",
            "SKILLWARDEN_WEBHOOK_CONFIGURATIONS": "mutating/skw-mutating,validating/skw-validating",
            "SKILLWARDEN_CERT_VALIDITY_DAYS": "90",
            "SKILLWARDEN_CERT_ROTATE_BEFORE_DAYS": "10",
        },
        api=None,
        directory=tmp_path,
    )
    assert rotator.hosts == ("skw-webhook.skillwarden-system.svc", "skw-webhook.skillwarden-system")
    assert rotator.configurations == (("mutating", "skw-mutating"), ("validating", "skw-validating"))
    assert (rotator.secret_name, rotator.namespace, rotator.validity_days, rotator.rotate_before_days) == (
        "skw-webhook-tls",
        "skillwarden-system",
        90,
        10,
    )


def test_rotator_for_an_ip_addressed_webhook_names_the_ip(tmp_path: Any) -> None:
    rotator = wc.rotator_from_env({"SKILLWARDEN_WEBHOOK_SERVICE": "127.0.0.1"}, api=None, directory=tmp_path)
    assert rotator.hosts == ("127.0.0.1",)
