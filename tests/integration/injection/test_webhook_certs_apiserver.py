"""The shared webhook Secret and caBundle injection against the real kube-apiserver: creation,
rotation, two replicas racing, and the caBundle of real webhook configurations kept in step."""

from __future__ import annotations

import base64
import datetime as dt
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from skillwarden_operator import webhook_certs as wc

NAMESPACE = "skillwarden-certs"
NOW = dt.datetime.now(dt.UTC)


@pytest.fixture
def admin(stack: dict[str, Any]) -> k8s.ApiClient:
    api = k8s_config.new_client_from_config(config_file=stack["kubeconfigs"]["admin"])
    try:
        k8s.CoreV1Api(api).create_namespace({"metadata": {"name": NAMESPACE}})
    except k8s.ApiException as error:
        if error.status != 409:
            raise
    return api


def configuration(name: str) -> dict[str, Any]:
    # Never matches anything: a label no pod carries; only its caBundle matters here.
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": f"w{i}.certs.skillwarden.io",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Ignore",
                "timeoutSeconds": 1,
                "clientConfig": {"url": "https://127.0.0.1:1/never"},
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["configmaps"],
                    }
                ],
                "objectSelector": {"matchLabels": {"skillwarden.io/never": name}},
            }
            for i in range(2)
        ],
    }


def rotator(
    api: k8s.ApiClient,
    secret: str,
    directory: Path,
    configurations: tuple[tuple[str, str], ...] = (),
    days: float = 0,
) -> wc.CertRotator:
    return wc.CertRotator(
        api=api,
        namespace=NAMESPACE,
        secret_name=secret,
        hosts=("skw-webhook.skillwarden-certs.svc", "127.0.0.1"),
        directory=directory,
        configurations=configurations,
        clock=lambda: NOW + dt.timedelta(days=days),
    )


def ca_bundles(api: k8s.ApiClient, name: str) -> list[bytes]:
    read = k8s.AdmissionregistrationV1Api(api).read_mutating_webhook_configuration(name)
    return [base64.b64decode(w.client_config.ca_bundle) for w in read.webhooks]


def test_secret_is_created_shared_rotated_and_ca_bundles_follow(admin: k8s.ApiClient, tmp_path: Path) -> None:
    secret, mwc = f"tls-{uuid.uuid4().hex[:6]}", f"certs-{uuid.uuid4().hex[:6]}"
    k8s.AdmissionregistrationV1Api(admin).create_mutating_webhook_configuration(configuration(mwc))
    try:
        first = rotator(admin, secret, tmp_path / "a", (("mutating", mwc), ("mutating", "does-not-exist")))
        second = rotator(admin, secret, tmp_path / "b", (("mutating", mwc),))
        assert first.reconcile() == "created"
        assert second.reconcile() is None  # the second replica adopts the same certificate
        assert (tmp_path / "a" / "tls.crt").read_bytes() == (tmp_path / "b" / "tls.crt").read_bytes()
        assert oct((tmp_path / "a" / "tls.key").stat().st_mode & 0o777) == "0o600"
        stored = k8s.CoreV1Api(admin).read_namespaced_secret(secret, NAMESPACE)
        assert stored.type == "kubernetes.io/tls"
        assert ca_bundles(admin, mwc) == [first.cafile.read_bytes()] * 2

        # 340 days later one replica rotates; the other picks the new certificate up.
        later = rotator(admin, secret, tmp_path / "a", (("mutating", mwc),), days=340)
        assert later.reconcile() == "serving certificate expiring"
        assert rotator(admin, secret, tmp_path / "b", days=340).reconcile() is None
        assert (tmp_path / "a" / "tls.crt").read_bytes() == (tmp_path / "b" / "tls.crt").read_bytes()
        assert (tmp_path / "a" / "tls.crt").read_bytes() != stored.data["tls.crt"]

        # Near the CA's end: a new CA, both CAs in every caBundle during the overlap.
        ca_end = rotator(admin, secret, tmp_path / "a", (("mutating", mwc),), days=5 * 365 - 370)
        assert ca_end.reconcile() == "CA rotated"
        bundles = ca_bundles(admin, mwc)
        assert bundles[0] == bundles[1] == ca_end.cafile.read_bytes()
        assert bundles[0].count(b"BEGIN CERTIFICATE") == 2
    finally:
        k8s.AdmissionregistrationV1Api(admin).delete_mutating_webhook_configuration(mwc)


def test_replicas_racing_end_with_one_certificate(admin: k8s.ApiClient, tmp_path: Path) -> None:
    secret = f"tls-race-{uuid.uuid4().hex[:6]}"
    rotators = [rotator(admin, secret, tmp_path / f"r{i}") for i in range(4)]
    errors: list[BaseException] = []

    def run(r: wc.CertRotator) -> None:
        try:
            r.reconcile()
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(r,)) for r in rotators]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    stored = k8s.CoreV1Api(admin).read_namespaced_secret(secret, NAMESPACE)
    served = {r.certfile.read_bytes() for r in rotators}
    assert served == {base64.b64decode(stored.data["tls.crt"])}


def test_a_stale_replica_loses_the_update_race_and_adopts_the_winner(
    admin: k8s.ApiClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = f"tls-stale-{uuid.uuid4().hex[:6]}"
    rotator(admin, secret, tmp_path / "init").reconcile()
    core = k8s.CoreV1Api(admin)
    stale = core.read_namespaced_secret(secret, NAMESPACE)
    winner = rotator(admin, secret, tmp_path / "winner", days=340)
    assert winner.reconcile() == "serving certificate expiring"

    loser = rotator(admin, secret, tmp_path / "loser", days=340)
    original = k8s.CoreV1Api.read_namespaced_secret
    calls = {"n": 0}

    def first_read_is_stale(api: k8s.CoreV1Api, name: str, namespace: str, **kwargs: Any) -> Any:
        calls["n"] += 1
        return stale if calls["n"] == 1 else original(api, name, namespace, **kwargs)

    monkeypatch.setattr(k8s.CoreV1Api, "read_namespaced_secret", first_read_is_stale)
    # The stale read plans a rotation too; its write carries the old resourceVersion -> 409; the
    # second read sees the winner's certificate, which is current: nothing more to do.
    assert loser.reconcile() is None
    assert calls["n"] == 2
    assert loser.certfile.read_bytes() == winner.certfile.read_bytes()
