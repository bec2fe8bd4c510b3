"""The SkillApproval webhook inside the real `skillwarden operator` process: reviews are stamped
there too, and a new approval must ask for what the namespace's served SkillPolicy asks for
(approvers, quorum, TTL) — so an app sharing the sidecar's service account cannot name its own
approvers."""

from __future__ import annotations

import datetime as dt
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from approvals_helpers import GROUP, PLURAL, VERSION, ApprovalsEnv, approval_body, random_digest
from kubernetes import client as kclient
from kubernetes import config as kconfig
from kubernetes.client.exceptions import ApiException

from skillwarden_devstack import processes


def _get_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except OSError:
        return 0


@pytest.fixture
def operator_namespace(approvals_env: ApprovalsEnv, tmp_path: Path) -> Iterator[str]:
    admin = kconfig.new_client_from_config(config_file=approvals_env.stack["kubeconfigs"]["admin"])
    crd = Path(__file__).resolve().parents[3] / "crds" / "skillpolicy.yaml"
    import yaml

    try:
        kclient.ApiextensionsV1Api(admin).create_custom_resource_definition(yaml.safe_load(crd.read_text()))
    except ApiException as error:
        if error.status != 409:
            raise
    namespace = approvals_env.namespace
    policy = {
        "apiVersion": "skillwarden.io/v1alpha1",
        "kind": "SkillPolicy",
        "metadata": {"name": "finance-reporting", "namespace": namespace},
        "spec": {
            "defaultAction": "deny",
            "subjects": [{"name": "analysts", "groups": ["finance-analysts"], "models": ["claude-*"]}],
            "rules": [
                {
                    "name": "customer-export",
                    "action": "requireApproval",
                    "message": "needs a lead",
                    "when": {"promptMatches": ["(?i)customer export"]},
                }
            ],
            "approval": {
                "approvers": {"groups": ["finance-leads"]},
                "required": 1,
                "ttl": "10m",
                "holdSeconds": 30,
            },
        },
    }
    custom = kclient.CustomObjectsApi(admin)
    deadline = time.monotonic() + 30
    while True:  # the SkillPolicy CRD needs a moment to be served
        try:
            custom.create_namespaced_custom_object(
                "skillwarden.io", "v1alpha1", namespace, "skillpolicies", policy
            )
            break
        except ApiException as error:
            if error.status == 409:
                break
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    bundle_port, webhook_port = processes.free_port(), processes.free_port()
    name = f"skw-approvals-op-{uuid.uuid4().hex[:6]}.skillwarden.io"
    running = processes.spawn(
        "operator-approvals",
        [
            sys.executable,
            "-m",
            "skillwarden_cli.main",
            "operator",
            "--bundle-port",
            str(bundle_port),
            "--webhook-port",
            str(webhook_port),
            "--webhook-managed",
            name,
            "--namespaces",
            namespace,
        ],
        tmp_path / "operator.log",
        env={"KUBECONFIG": approvals_env.stack["kubeconfigs"]["admin"]},
    )
    try:
        processes.wait_until(
            "operator",
            lambda: _get_status(f"http://127.0.0.1:{bundle_port}/bundles/{namespace}.tar.gz") == 200,
            running,
            60,
            "serving the namespace's bundle",
        )
        registrations = kclient.AdmissionregistrationV1Api(admin)

        def registered() -> bool:
            hooks = registrations.read_mutating_webhook_configuration(name).webhooks or []
            return any(f":{webhook_port}/skillapproval-create" in (h.client_config.url or "") for h in hooks)

        processes.wait_until("operator", registered, running, 30, "registered the approval webhooks")
        yield namespace
    finally:
        processes.stop(running)
        for delete in (
            registrations.delete_mutating_webhook_configuration,
            registrations.delete_validating_webhook_configuration,
        ):
            try:
                delete(name)
            except ApiException:
                pass
        custom.delete_namespaced_custom_object(
            "skillwarden.io", "v1alpha1", namespace, "skillpolicies", "finance-reporting"
        )


def body(env: ApprovalsEnv, **kwargs: Any) -> dict[str, Any]:
    created = approval_body(env, random_digest(), **kwargs)
    created["spec"]["policy"] = f"{env.namespace}/finance-reporting"
    return created


def test_approvals_must_ask_for_what_the_served_policy_asks_for(
    approvals_env: ApprovalsEnv, operator_namespace: str
) -> None:
    api = approvals_env.api("admin")
    ok = api.create_namespaced_custom_object(GROUP, VERSION, operator_namespace, PLURAL, body(approvals_env))
    assert ok["spec"]["createdBy"] == "admin"
    for bad, message in (
        (
            body(approvals_env, approvers={"groups": ["finance-leads"], "users": ["mallory"]}),
            "approvers.users differ",
        ),
        (body(approvals_env, approvers={"groups": ["finance-analysts"]}), "approvers.groups differ"),
        (body(approvals_env, ttl_s=3600), "ttl of 600 s"),
    ):
        with pytest.raises(ApiException) as raised:
            api.create_namespaced_custom_object(GROUP, VERSION, operator_namespace, PLURAL, bad)
        assert message in str(raised.value.body)
    other = body(approvals_env)
    other["spec"]["policy"] = f"{operator_namespace}/no-such-policy"
    with pytest.raises(ApiException) as raised:
        api.create_namespaced_custom_object(GROUP, VERSION, operator_namespace, PLURAL, other)
    assert "no approval settings" in str(raised.value.body)
    # A review through the operator's webhook is stamped like everywhere else.
    reviewed = approvals_env.api("approver").patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        operator_namespace,
        PLURAL,
        ok["metadata"]["name"],
        {"status": {"reviews": [{"decision": "Approve", "reason": "operator path"}]}},
        _content_type="application/merge-patch+json",
    )
    assert reviewed["status"]["state"] == "Approved"
    assert reviewed["status"]["reviews"][0]["reviewer"] == "approver"
    assert dt.datetime.fromisoformat(reviewed["status"]["reviews"][0]["time"].replace("Z", "+00:00"))
