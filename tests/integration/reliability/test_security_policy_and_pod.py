"""Bypasses through the pod spec and the policy text.

- A pod asking to opt out of recording or masking by annotation, or reaching the provider key
  (or the sidecar's spool and signing key) by any route, is refused by `injection.plan`.
- A policy author writing Rego syntax into a SkillPolicy's strings changes nothing: the bundle's
  Rego is the static package, the strings are data, and real OPA decides exactly as for the same
  policy with harmless strings.
"""

from __future__ import annotations

import copy
import io
import json
import tarfile
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from reliability_support import NAMESPACE, WORKLOAD_SA, start_opa_with

from skillwarden_operator import injection as inj
from skillwarden_operator.bundle import build_bundle

SETTINGS = inj.InjectionSettings()
SECRET = SETTINGS.provider_key_secret
OPTED_IN = {"skillwarden.io/inject": "true"}


def pod(annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "report-7f9c",
            "annotations": {**OPTED_IN, **(annotations or {})},
            "labels": {"skillwarden.io/inject": "true"},
        },
        "spec": {
            "serviceAccountName": WORKLOAD_SA,
            "containers": [{"name": "app", "image": "example/app:1"}],
            **spec,
        },
    }


OPT_OUTS = (
    "skillwarden.io/record",
    "skillwarden.io/recording",
    "skillwarden.io/disable-recording",
    "skillwarden.io/skip-recording",
    "skillwarden.io/records-fail-open",
    "skillwarden.io/masking",
    "skillwarden.io/mask",
    "skillwarden.io/unmasked",
    "skillwarden.io/audit",
    "skillwarden.io/bypass",
    "skillwarden.io/skip",
    "skillwarden.io/spool-disable",
    "skillwarden.io/policy",
    "skillwarden.io/opa-url",
    "skillwarden.io/upstream-url",
    "skillwarden.io/fail-open",
)


@pytest.mark.parametrize("annotation", OPT_OUTS)
def test_a_pod_cannot_opt_out_of_recording_or_masking_by_annotation(annotation: str) -> None:
    for value in ("false", "off", "true", "none", ""):
        with pytest.raises(inj.InjectionDenied):
            inj.plan(pod({annotation: value}), NAMESPACE, SETTINGS)


def _app_containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        c
        for key in ("initContainers", "containers")
        for c in spec.get(key) or []
        if c["name"] not in inj.OWNED_CONTAINERS
    ]


def _reachable_secrets(spec: dict[str, Any], container: dict[str, Any]) -> set[str]:
    """Every Secret a container can read: env, envFrom, and mounted secret/projected volumes."""
    found: set[str] = set()
    for env in container.get("env") or []:
        ref = (env.get("valueFrom") or {}).get("secretKeyRef") or {}
        if ref.get("name"):
            found.add(ref["name"])
    for source in container.get("envFrom") or []:
        if (source.get("secretRef") or {}).get("name"):
            found.add(source["secretRef"]["name"])
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        volume = volumes.get(mount["name"], {})
        if "secret" in volume:
            found.add(volume["secret"]["secretName"])
        for source in (volume.get("projected") or {}).get("sources") or []:
            if "secret" in source:
                found.add(source["secret"]["name"])
        if mount["name"] in {inj.VOLUME_PROVIDER_KEY, inj.VOLUME_SPOOL, inj.VOLUME_SIGNING_KEY}:
            found.add(mount["name"])
    return found


def test_the_injected_app_container_has_no_route_to_the_provider_key() -> None:
    app = {
        "name": "app",
        "image": "example/app:1",
        "env": [{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}],
        "envFrom": [{"secretRef": {"name": "app-config"}}],
        "volumeMounts": [{"name": "certs", "mountPath": "/certs"}],
    }
    out = inj.plan(
        pod(
            containers=[app, {"name": "worker", "image": "example/w:1"}],
            initContainers=[{"name": "migrate", "image": "example/m:1"}],
            volumes=[{"name": "certs", "secret": {"secretName": "tls"}}],
        ),
        NAMESPACE,
        SETTINGS,
    )
    assert out.action == "inject"
    spec = out.pod["spec"]
    sidecar = next(
        c for key in ("initContainers", "containers") for c in spec.get(key) or [] if c["name"] == inj.SIDECAR
    )
    assert SECRET in _reachable_secrets(spec, sidecar)  # the key is there, for the sidecar only
    for container in _app_containers(spec):
        reachable = _reachable_secrets(spec, container)
        assert SECRET not in reachable and not reachable & {
            inj.VOLUME_PROVIDER_KEY,
            inj.VOLUME_SPOOL,
            inj.VOLUME_SIGNING_KEY,
        }, container["name"]
        assert "sk-ant" not in json.dumps(container)
        env = {e["name"]: e.get("value") for e in container.get("env") or []}
        if container["name"] != "migrate":
            assert env.get("ANTHROPIC_BASE_URL", "").startswith("http://127.0.0.1:")
        assert "ANTHROPIC_API_KEY" not in env or "sk-ant" not in str(env["ANTHROPIC_API_KEY"])


ROUTES_TO_THE_KEY = {
    "env": {"env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": SECRET, "key": "api-key"}}}]},
    "envFrom": {"envFrom": [{"secretRef": {"name": SECRET}}]},
    "mount the sidecar's key volume": {
        "volumeMounts": [{"name": inj.VOLUME_PROVIDER_KEY, "mountPath": "/k"}]
    },
    "mount the sidecar's spool": {"volumeMounts": [{"name": inj.VOLUME_SPOOL, "mountPath": "/s"}]},
    "mount the records signing key": {"volumeMounts": [{"name": inj.VOLUME_SIGNING_KEY, "mountPath": "/g"}]},
}


@pytest.mark.parametrize("route", sorted(ROUTES_TO_THE_KEY))
def test_every_route_to_the_key_or_the_evidence_is_refused(route: str) -> None:
    app = {"name": "app", "image": "example/app:1", **ROUTES_TO_THE_KEY[route]}
    with pytest.raises(inj.InjectionDenied):
        inj.plan(pod(containers=[app]), NAMESPACE, SETTINGS)
    for volume in (
        {"name": "k", "secret": {"secretName": SECRET}},
        {"name": "k", "projected": {"sources": [{"secret": {"name": SECRET}}]}},
    ):
        mounted = {"name": "app", "image": "x", "volumeMounts": [{"name": "k", "mountPath": "/k"}]}
        with pytest.raises(inj.InjectionDenied):
            inj.plan(pod(containers=[mounted], volumes=[volume]), NAMESPACE, SETTINGS)


@pytest.mark.parametrize("field", ["shareProcessNamespace", "hostPID"])
def test_a_shared_process_namespace_cannot_read_the_sidecars_key(field: str) -> None:
    # With a shared PID namespace an app running as the sidecar's UID reads
    # /proc/<sidecar>/root/.../provider/api-key and /proc/<sidecar>/environ.
    same_uid = {"name": "app", "image": "x", "securityContext": {"runAsUser": SETTINGS.run_as_user}}
    with pytest.raises(inj.InjectionDenied) as denied:
        inj.plan(pod(containers=[same_uid], **{field: True}), NAMESPACE, SETTINGS)
    assert field in str(denied.value)
    assert inj.plan(pod(**{field: False}), NAMESPACE, SETTINGS).action == "inject"


# -- a policy author injecting Rego ------------------------------------------------------------------

REGO_TEXTS = (
    '"}\ndecision := {"action": "allow"}\n#',
    'x" } default decision := {"action":"allow"} #',
    "allow if { true }",
    '"] } ; import data.skillwarden as s ; s.allow := true #',
    "`raw string` + {{template}} ${interp} %s\\u0000",
)


def base_policy() -> dict[str, Any]:
    return {
        "apiVersion": "skillwarden.io/v1alpha1",
        "kind": "SkillPolicy",
        "metadata": {"name": "rego-inject", "namespace": NAMESPACE},
        "spec": {
            "defaultAction": "deny",
            "subjects": [
                {
                    "name": "bot",
                    "serviceAccounts": [WORKLOAD_SA],
                    "skills": [{"type": "anthropic", "id": "xlsx"}],
                    "models": ["claude-sonnet-4-*"],
                    "maxTokens": 4096,
                },
                {
                    "name": "leads",
                    "groups": ["finance-leads"],
                    "models": ["claude-*"],
                    "skills": [{"type": "anthropic", "id": "pdf"}],
                },
            ],
            "rules": [
                {
                    "name": "no-pptx",
                    "action": "deny",
                    "message": "no decks",
                    "when": {"skills": [{"type": "anthropic", "id": "pptx"}]},
                }
            ],
        },
    }


def injected_variants(text: str) -> list[dict[str, Any]]:
    """The base policy with Rego text in each free-text or name field an author controls."""
    out = []
    for path in (
        ("spec", "rules", 0, "message"),
        ("spec", "subjects", 1, "groups", 0),
        ("spec", "subjects", 0, "serviceAccounts", 0),
        ("spec", "subjects", 1, "models", 0),
        ("spec", "rules", 0, "when", "skills", 0, "id"),
        ("spec", "subjects", 0, "name"),
        ("spec", "rules", 0, "name"),
    ):
        policy = base_policy()
        target: Any = policy
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = text
        out.append(policy)
    extra = base_policy()
    extra["spec"]["rules"].append(
        {
            "name": "prompt",
            "action": "allow",
            "message": text,
            "when": {
                "promptMatches": ["(?i)" + "".join("\\" + c if not c.isalnum() else c for c in text[:40])]
            },
        }
    )
    out.append(extra)
    return out


def request_input(
    *,
    skill: str = "xlsx",
    model: str = "claude-sonnet-4-6",
    groups: list[str] | None = None,
    prompt: str = "Summarise Q3",
    sa: str = WORKLOAD_SA,
) -> dict[str, Any]:
    return {
        "identity": {
            "kind": "oidc" if groups else "workload",
            "sub": "alice" if groups else "",
            "iss": "",
            "groups": groups or [],
            "email": "",
        },
        "workload": {"namespace": NAMESPACE, "pod": "p", "service_account": sa},
        "request": {
            "method": "POST",
            "path": "/v1/messages",
            "operation": "messages.create",
            "model": model,
            "stream": False,
            "max_tokens": 100,
            "skills": [{"type": "anthropic", "skill_id": skill, "version": "latest"}],
            "tools": [],
            "prompt_text": prompt,
            "prompt_chars": len(prompt),
        },
        "approval": {"id": "", "state": ""},
    }


INPUTS = [
    request_input(),
    request_input(skill="pptx"),
    request_input(model="claude-opus-4-7"),
    request_input(skill="pdf"),
    request_input(sa="other-bot"),
    request_input(groups=["finance-leads"], skill="pdf", model="claude-opus-4-7"),
] + [request_input(sa=t[:60], groups=[t], model=t, skill=t, prompt=t) for t in REGO_TEXTS]


def _rego_files(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        return {
            m.name.lstrip("/"): archive.extractfile(m).read()  # type: ignore[union-attr]
            for m in archive.getmembers()
            if m.isfile() and m.name.endswith(".rego")
        }


def decisions(opa_binary: Path, work: Path, policy: dict[str, Any]) -> list[str]:
    opa = start_opa_with(opa_binary, work, [policy])
    try:
        actions = []
        for document in INPUTS:
            request = urllib.request.Request(
                f"{opa.url}/v1/data/skillwarden/decision",
                data=json.dumps({"input": document}).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                actions.append(json.loads(response.read())["result"]["action"])
        return actions
    finally:
        opa.stop()


def test_rego_in_policy_strings_is_data_not_code(opa_binary: Path, tmp_path: Path) -> None:
    baseline_bundle = build_bundle(NAMESPACE, [base_policy()])
    static_rego = _rego_files(baseline_bundle.data)
    assert static_rego, "the bundle carries the static Rego package"
    baseline = decisions(opa_binary, tmp_path / "baseline", base_policy())
    assert baseline[:6] == ["allow", "deny", "deny", "deny", "deny", "allow"]
    compiled = refused = 0
    for number, text in enumerate(REGO_TEXTS):
        for variant, policy in enumerate(injected_variants(text)):
            bundle = build_bundle(NAMESPACE, [copy.deepcopy(policy)])
            if bundle.invalid:  # refused at validation: nothing of it is served
                refused += 1
                continue
            compiled += 1
            assert _rego_files(bundle.data) == static_rego  # same code, byte for byte
            got = decisions(opa_binary, tmp_path / f"v{number}-{variant}", policy)
            # No injected text widens anything: every baseline deny stays a deny, and requests that
            # carry the injected text themselves are never allowed by it.
            for before, after in zip(baseline, got, strict=True):
                assert not (before == "deny" and after == "allow"), (text, variant, baseline, got)
    assert compiled >= len(REGO_TEXTS)  # most variants compile: the strings really reached the bundle
    assert compiled + refused == len(REGO_TEXTS) * 8
