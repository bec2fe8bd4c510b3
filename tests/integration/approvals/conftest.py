"""A real kube-apiserver with the SkillApproval CRD, RBAC, a sidecar service account and the
admission webhook running in a kopf operator on loopback (approvals_webhook_harness.py)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from approvals_helpers import (
    CRD,
    GROUP,
    HARNESS,
    PLURAL,
    SIDECAR_SA,
    VERSION,
    ApprovalsEnv,
    apply,
    issue_webhook_cert,
    rbac_documents,
    webhook_ready,
)
from kubernetes import client as kclient
from kubernetes import config as kconfig
from kubernetes.client.exceptions import ApiException

from skillwarden_devstack.processes import free_port


@pytest.fixture(scope="session")
def approvals_env(stack: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApprovalsEnv]:
    admin = kconfig.new_client_from_config(config_file=stack["kubeconfigs"]["admin"])
    apply(admin, [yaml.safe_load(CRD.read_text())])
    namespace = f"approvals-{uuid.uuid4().hex[:6]}"
    apply(admin, rbac_documents(namespace))
    deadline = time.monotonic() + 30
    custom = kclient.CustomObjectsApi(admin)
    while True:  # the CRD becomes servable a moment after creation
        try:
            custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
            break
        except ApiException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    token = kclient.CoreV1Api(admin).create_namespaced_service_account_token(
        SIDECAR_SA, namespace, {"spec": {"audiences": [stack["apiserver"]], "expirationSeconds": 3600}}
    )
    work = tmp_path_factory.mktemp("approvals-webhook")
    cert, key = issue_webhook_cert(stack, work)
    log = work / "webhook.log"
    env = {
        **os.environ,
        "KUBECONFIG": stack["kubeconfigs"]["admin"],
        "SKW_WEBHOOK_PORT": str(free_port()),
        "SKW_WEBHOOK_CERT": str(cert),
        "SKW_WEBHOOK_KEY": str(key),
        "SKW_WEBHOOK_CA": stack["ca_cert"],
        "SKW_WEBHOOK_NAME": f"skillapprovals-{namespace}.skillwarden.io",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "kopf", "run", "--standalone", "--all-namespaces", str(HARNESS)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=work,
        )
    try:
        deadline = time.monotonic() + 60
        while not webhook_ready(custom, namespace):
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"approval webhook did not come up; log {log}:\n{log.read_text()[-3000:]}"
                )
            time.sleep(0.3)
        yield ApprovalsEnv(
            stack=stack,
            namespace=namespace,
            sidecar_token=token.status.token,
            webhook_log=log,
            webhook=process,
        )
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
        # kopf empties its managed configurations on exit; remove the husks too.
        registrations = kclient.AdmissionregistrationV1Api(admin)
        for delete in (
            registrations.delete_mutating_webhook_configuration,
            registrations.delete_validating_webhook_configuration,
        ):
            with contextlib.suppress(ApiException):
                delete(env["SKW_WEBHOOK_NAME"])
