"""The operator against the real kube-apiserver and real OPA processes."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

from kubernetes import client as k8s
from operator_it_helpers import (
    Cluster,
    OperatorFactory,
    deep,
    example,
    http_get,
    request_input,
    unique,
)

from skillwarden_devstack import processes
from skillwarden_operator.bundle import build_bundle, read_bundle

XLSX = {"type": "anthropic", "skill_id": "xlsx", "version": "latest"}
PPTX = {"type": "anthropic", "skill_id": "pptx", "version": "latest"}
API = ("skillwarden.io", "v1alpha1")
PLURAL = "skillpolicies"
DOCX = {"type": "anthropic", "skill_id": "docx", "version": "latest"}


def _events(cluster: Cluster, namespace: str, name: str) -> list[Any]:
    events = k8s.CoreV1Api(cluster.api).list_namespaced_event(namespace).items
    return [e for e in events if e.involved_object.name == name]


def test_example_policy_ready_enforced_by_real_opa_and_edits_propagate(
        cluster: Cluster, operators: OperatorFactory, opa_for: Any) -> None:
    namespace = unique("op-finance")
    cluster.namespace(namespace)
    operator = operators()
    policy = example("skillpolicy-finance.yaml", namespace)
    applied = cluster.apply(policy)
    assert applied.returncode == 0, applied.stderr

    stored = cluster.wait_ready(namespace, "finance-reporting")
    revision = stored["status"]["bundleRevision"]
    ready = stored["status"]["conditions"][0]
    assert (ready["reason"], ready["observedGeneration"]) == ("Compiled", 1)
    # What the operator serves is exactly what `skillwarden policy compile` makes of the stored object.
    assert build_bundle(namespace, [stored]).revision == revision
    processes.wait_until("operator", lambda: operator.bundle(namespace)[1].get("ETag") == f'"{revision}"',
                         operator.running, 10, "serving the revision its status names")
    code, headers, body = operator.bundle(namespace)
    assert (code, headers["ETag"]) == (200, f'"{revision}"')
    assert headers["Content-Type"] == "application/vnd.openpolicyagent.bundles"
    assert json.loads(read_bundle(body)[".manifest"]) == {"revision": revision, "roots": ["skillwarden"]}
    assert operator.bundle(namespace, {"If-None-Match": f'"{revision}"'})[0] == 304

    deadline = time.monotonic() + 10
    while not any(e.reason == "Compiled" for e in _events(cluster, namespace, "finance-reporting")):
        assert time.monotonic() < deadline, "no Compiled event"
        time.sleep(0.1)

    opa = opa_for(operator.bundle_url, namespace)
    allowed = opa.decide(request_input(namespace, skills=[XLSX]))
    assert allowed is not None
    assert (allowed["action"], allowed["policy"], allowed["bundle_revision"]) == (
        "allow", f"{namespace}/finance-reporting", revision)
    denied = opa.decide(request_input(namespace, skills=[PPTX]))
    assert denied is not None and (denied["action"], denied["rule"]) == ("deny", "no-pptx-for-finance")
    approval = opa.decide(request_input(namespace, skills=[XLSX], prompt="Export the customer list for Q3"))
    assert approval is not None and approval["action"] == "require_approval"
    assert approval["approval"]["approvers"] == {"groups": ["finance-leads"], "users": []}
    assert approval["approval"]["ttlSeconds"] == 1800
    outsider = opa.decide(request_input(namespace, service_account="default", groups=["marketing"]))
    assert outsider is not None and (outsider["action"], outsider["policy"]) == ("deny", None)
    assert "US_SSN" in outsider["masking"]["upstream"]
    docx_before = opa.decide(request_input(namespace, skills=[DOCX]))
    assert docx_before is not None and docx_before["action"] == "deny"

    # Edit: grant docx. Measure apply -> OPA answering with the new bundle.
    edited = deep(policy)
    edited["spec"]["subjects"][0]["skills"].append({"type": "anthropic", "id": "docx"})
    started = time.monotonic()
    applied = cluster.apply(edited)
    assert applied.returncode == 0, applied.stderr
    while True:
        decision = opa.decide(request_input(namespace, skills=[DOCX]))
        assert decision is not None
        if decision["bundle_revision"] != revision:
            break
        assert time.monotonic() - started < 15, "OPA did not pick up the edited policy within 15 s"
        time.sleep(0.02)
    propagation = time.monotonic() - started
    print(f"\npolicy edit -> OPA decision with new bundle: {propagation * 1000:.0f} ms")
    assert decision["action"] == "allow"
    new_status = cluster.wait_ready(namespace, "finance-reporting", not_revision=revision)["status"]
    assert new_status["bundleRevision"] == decision["bundle_revision"]
    assert new_status["observedGeneration"] == 2
    # Long polling: OPA was waiting on the bundle service, so the change is pushed, not polled.
    assert propagation < 5.0
    # More edits (message text only) for a better estimate of the bound.
    samples = [propagation]
    current = new_status["bundleRevision"]
    for attempt in range(4):
        edited["spec"]["rules"][0]["message"] = f"Prompts asking for credentials are refused ({attempt})"
        started = time.monotonic()
        assert cluster.apply(edited).returncode == 0
        while (opa.decide(request_input(namespace, skills=[XLSX])) or {}).get("bundle_revision") == current:
            assert time.monotonic() - started < 15
            time.sleep(0.02)
        samples.append(time.monotonic() - started)
        current = cluster.wait_ready(namespace, "finance-reporting", not_revision=current)["status"][
            "bundleRevision"]
    print("policy edit -> OPA, ms: " + ", ".join(f"{s * 1000:.0f}" for s in samples))
    assert max(samples) < 5.0
    metrics = operator.metrics()
    info = f'namespace="{namespace}",revision="{current}"'
    assert f"skillwarden_operator_bundle_info{{{info}}} 1.0" in metrics
    assert f'skillwarden_operator_policies{{namespace="{namespace}",state="ready"}} 1.0' in metrics


def _invalid(namespace: str, change: Any) -> dict[str, Any]:
    policy = example("skillpolicy-finance.yaml", namespace)
    policy["metadata"]["name"] = "invalid"
    change(policy["spec"])
    return policy


def test_kubectl_apply_rejects_invalid_policies_naming_the_field(
        cluster: Cluster, operators: OperatorFactory) -> None:
    namespace = unique("op-admission")
    cluster.namespace(namespace)
    operators(extra=("--min-retention-days", "30"))
    cases = [
        (lambda s: s["rules"][1]["when"].__setitem__("promptMatches", ["(?<=customer) export"]),
         "spec.rules[1].when.promptMatches[0]: not a valid RE2 pattern"),
        (lambda s: s["masking"]["client"].append("SOCIAL_SECURITY_NUMBER"),
         'spec.masking.client[2]: Unsupported value: "SOCIAL_SECURITY_NUMBER": unknown entity type'),
        (lambda s: s["recording"].__setitem__("retentionDays", -7),
         "spec.recording.retentionDays: Invalid value: -7"),
        (lambda s: s["rules"][0].__setitem__("action", "block"),
         'spec.rules[0].action: Unsupported value: "block"'),
        (lambda s: s["recording"].__setitem__("retentionDays", 7),
         "spec.recording.retentionDays: Invalid value: 7: below the retention floor of 30 days"),
        (lambda s: s["rules"].append({**s["rules"][0], "name": "allow-dumps", "action": "allow"}),
         "spec.rules[3].when: conflicting rules: same conditions as spec.rules[0]"),
        (lambda s: s["masking"]["custom"].append({"name": "TICKET", "pattern": "T-[0-9]{2000}"}),
         "spec.masking.custom[1].pattern: not a valid RE2 pattern: invalid repetition size"),
        (lambda s: s["masking"]["custom"].append({"name": "ANYTHING", "pattern": "[0-9]*"}),
         "spec.masking.custom[1].pattern: Invalid value: matches the empty string"),
    ]
    for change, expected in cases:
        result = cluster.apply(_invalid(namespace, change))
        assert result.returncode != 0, f"accepted a policy that should fail with {expected}"
        assert expected in result.stderr, result.stderr
    missing = cluster.kubectl("get", "skillpolicy", "invalid", "-n", namespace)
    assert "NotFound" in missing.stderr
    accepted = cluster.apply(example("skillpolicy-finance.yaml", namespace))
    assert accepted.returncode == 0, accepted.stderr


def test_two_operators_serve_identical_bundles_and_a_killed_one_loses_nothing(
        cluster: Cluster, operators: OperatorFactory, opa_for: Any) -> None:
    namespace = unique("op-replicas")
    cluster.namespace(namespace)
    first = operators()
    second = operators(admission=False)
    policy = example("skillpolicy-finance.yaml", namespace)
    assert cluster.apply(policy).returncode == 0
    revision = cluster.wait_ready(namespace, "finance-reporting")["status"]["bundleRevision"]

    def served(op: Any, expected: str) -> bool:
        code, headers, _ = op.bundle(namespace)
        return code == 200 and headers["ETag"] == f'"{expected}"'

    processes.wait_until("operator", lambda: served(first, revision) and served(second, revision), None, 20,
                         "serving the same revision")
    one, two = first.bundle(namespace), second.bundle(namespace)
    assert one[2] == two[2] and one[1]["ETag"] == two[1]["ETag"]

    opa = opa_for(second.bundle_url, namespace)
    assert (opa.decide(request_input(namespace, skills=[DOCX])) or {})["action"] == "deny"
    port = int(second.bundle_url.rsplit(":", 1)[1])
    os.killpg(second.running.pid, signal.SIGKILL)  # no graceful shutdown
    processes.wait_until("operator", lambda: not second.running.alive(), None, 10, "dead")
    # The policy changes while one replica is down: the other compiles it.
    edited = deep(policy)
    edited["spec"]["subjects"][0]["skills"].append({"type": "anthropic", "id": "docx"})
    assert cluster.apply(edited).returncode == 0
    new_revision = cluster.wait_ready(namespace, "finance-reporting", not_revision=revision)["status"][
        "bundleRevision"]
    assert served(first, new_revision)
    # The replacement replica rebuilds everything from the API server: same bytes as the survivor,
    # and the OPA that was pulling from the dead one gets the new policy.
    replacement = operators(admission=False, bundle_port=port)
    # Ready (/readyz) means every namespace with policies is compiled: no 404 window for OPA.
    assert served(replacement, new_revision)
    assert replacement.bundle(namespace)[2] == first.bundle(namespace)[2]
    deadline = time.monotonic() + 15
    while (decision := opa.decide(request_input(namespace, skills=[DOCX])) or {}).get(
            "bundle_revision") != new_revision:
        assert time.monotonic() < deadline, decision
        time.sleep(0.1)
    assert decision["action"] == "allow"


def test_deletions_and_unknown_namespace(cluster: Cluster, operators: OperatorFactory, opa_for: Any) -> None:
    operator = operators()
    code, headers, body = operator.bundle("no-such-namespace")
    assert code == 404 and headers["Content-Type"].startswith("application/json")
    assert json.loads(body) == {"error": "no SkillPolicy bundle for namespace 'no-such-namespace'",
                                "namespace": "no-such-namespace"}
    assert operator.bundle("Not_A_Namespace")[0] == 400

    namespace = unique("op-churn")
    cluster.namespace(namespace)
    objects = k8s.CustomObjectsApi(cluster.api)
    base = example("skillpolicy-finance.yaml", namespace)
    assert cluster.apply(base).returncode == 0
    first_revision = cluster.wait_ready(namespace, "finance-reporting")["status"]["bundleRevision"]
    opa = opa_for(operator.bundle_url, namespace)
    assert (opa.decide(request_input(namespace, skills=[XLSX])) or {})["action"] == "allow"

    # Policies created and deleted while the namespace is being compiled: the served bundle ends
    # up matching exactly what the API server holds.
    for index in range(12):
        extra = deep(base)
        extra["metadata"]["name"] = f"churn-{index}"
        extra["spec"]["subjects"][0]["name"] = f"s{index}"
        objects.create_namespaced_custom_object(*API, namespace, PLURAL, extra)
    for index in range(0, 12, 2):
        objects.delete_namespaced_custom_object(*API, namespace, PLURAL,
                                                f"churn-{index}")

    def settled() -> bool:
        listed = objects.list_namespaced_custom_object(*API, namespace, PLURAL)
        items = listed["items"]
        if any(item["metadata"].get("deletionTimestamp") for item in items):
            return False
        expected = build_bundle(namespace, items).revision
        return operator.bundle(namespace)[1].get("ETag") == f'"{expected}"'

    processes.wait_until("operator", settled, operator.running, 30, "serving exactly the surviving policies")
    data = json.loads(read_bundle(operator.bundle(namespace)[2])["skillwarden/policies/data.json"])
    assert sorted({grant["policy"] for grant in data["grants"]}) == sorted(
        [f"{namespace}/finance-reporting"] + [f"{namespace}/churn-{i}" for i in range(1, 12, 2)])

    # Deleting every policy: the namespace falls back to deny-all, not to the last bundle.
    for name in ["finance-reporting"] + [f"churn-{i}" for i in range(1, 12, 2)]:
        objects.delete_namespaced_custom_object(*API, namespace, PLURAL, name)
    deadline = time.monotonic() + 15
    while (decision := opa.decide(request_input(namespace, skills=[XLSX])) or {}).get("action") != "deny":
        assert time.monotonic() < deadline, decision
        time.sleep(0.1)
    assert decision["bundle_revision"] != first_revision and decision["policy"] is None

    # A namespace being deleted (this stack has no namespace controller, so it stays
    # Terminating): its bundle turns deny-all and its policies say why.
    doomed = unique("op-doomed")
    cluster.namespace(doomed)
    assert cluster.apply(example("skillpolicy-finance.yaml", doomed)).returncode == 0
    cluster.wait_ready(doomed, "finance-reporting")
    doomed_opa = opa_for(operator.bundle_url, doomed)
    assert (doomed_opa.decide(request_input(doomed, skills=[XLSX])) or {})["action"] == "allow"
    k8s.CoreV1Api(cluster.api).delete_namespace(doomed)
    deadline = time.monotonic() + 15
    while (decision := doomed_opa.decide(request_input(doomed, skills=[XLSX])) or {}).get("action") != "deny":
        assert time.monotonic() < deadline, decision
        time.sleep(0.1)
    deadline = time.monotonic() + 15
    while True:
        conditions = (cluster.policy(doomed, "finance-reporting").get("status") or {}).get("conditions", [])
        if conditions and conditions[0]["reason"] == "NamespaceTerminating":
            assert conditions[0]["status"] == "False"
            break
        assert time.monotonic() < deadline, conditions
        time.sleep(0.1)
    assert http_get(f"{operator.bundle_url}/healthz")[0] == 200
