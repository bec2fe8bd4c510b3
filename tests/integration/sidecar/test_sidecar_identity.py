"""Caller tokens (RFC 8725): every bad token is a 401 with a reason; a good one's groups reach
the policy; unknown-kid floods cannot hammer the issuer; Kubernetes service-account tokens from
the real kube-apiserver verify against its real JWKS."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
from pathlib import Path
from typing import Any

import anthropic
import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from sidecar_support import AUDIENCE, NAMESPACE, TOKEN_SA, Issuer, SidecarFactory

from skillwarden_devstack.fake_claude import FakeClaude

MODEL = "claude-sonnet-4-6"


def pdf_request() -> dict[str, Any]:
    # pdf is granted only to the finance-leads group (not to the workload's service account)
    return {"model": MODEL, "max_tokens": 256, "betas": ["skills-2025-10-02"],
            "container": {"skills": [{"type": "anthropic", "skill_id": "pdf", "version": "latest"}]},
            "messages": [{"role": "user", "content": "Summarise the attached report."}]}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, Any], claims: dict[str, Any], secret: bytes | None) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest() if secret else b""
    return f"{signing_input}.{_b64(signature)}"


def tampered_signature(token: str) -> str:
    head, payload, signature = token.split(".")
    flipped = "A" if signature[0] != "A" else "B"
    return f"{head}.{payload}.{flipped}{signature[1:]}"


def oidc(issuer: Issuer) -> dict[str, Any]:
    return {"oidc_issuer": issuer.url, "oidc_audience": (AUDIENCE,)}


async def test_valid_token_groups_reach_the_policy(sidecar_factory: SidecarFactory, issuer: Issuer,
                                                   fake: tuple[FakeClaude, str]) -> None:
    upstream, _ = fake
    async with sidecar_factory(**oidc(issuer)) as sidecar:
        token = issuer.token(groups=["finance-leads"])
        as_lead = anthropic.AsyncAnthropic(base_url=sidecar.url, api_key=token, max_retries=0)
        answer = await as_lead.beta.messages.create(**pdf_request())
        assert answer.container is not None and answer.container.skills[0].skill_id == "pdf"
        # The same request as the bare workload, or with a token lacking the group, is denied.
        for key in ("placeholder", issuer.token(groups=["finance-analysts"])):
            sdk = anthropic.AsyncAnthropic(base_url=sidecar.url, api_key=key, max_retries=0)
            with pytest.raises(anthropic.PermissionDeniedError):
                await sdk.beta.messages.create(**pdf_request())
        # x-api-key works as well as Authorization: Bearer.
        via_header = anthropic.AsyncAnthropic(base_url=sidecar.url, api_key="placeholder", max_retries=0,
                                              default_headers={"x-api-key": token})
        await via_header.beta.messages.create(**pdf_request())
    assert len(upstream.received) == 2
    for received in upstream.received:
        assert received.headers["x-api-key"] != token and token not in json.dumps(received.headers)
        assert "Authorization" not in received.headers


async def test_bad_tokens_are_401_with_reason(sidecar_factory: SidecarFactory, issuer: Issuer,
                                              fake: tuple[FakeClaude, str]) -> None:
    now = int(time.time())
    good_claims = {"iss": issuer.url, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 300,
                   "groups": ["finance-leads"]}
    cases = {
        "token expired": issuer.token(exp=now - 120, iat=now - 600),
        "audience not accepted": issuer.token(aud="some-other-service"),
        "issuer not trusted": issuer.token(iss="https://evil.example.com"),
        "algorithm 'none' not allowed": forged({"alg": "none", "typ": "JWT", "kid": issuer.kid},
                                               good_claims, None),
        # The classic confusion: HS256 "signed" with the issuer's RSA public key as the secret.
        "algorithm 'HS256' not allowed": forged({"alg": "HS256", "typ": "JWT", "kid": issuer.kid},
                                                good_claims, issuer.public_pem()),
        "token not yet valid": issuer.token(nbf=now + 600),
        "required claim 'exp' missing": issuer.token(exp=None),
        "required claim 'iat' missing": issuer.token(iat=None),
        "signature invalid": tampered_signature(issuer.token()),
        "malformed token": "not.a.jwt",
    }
    async with sidecar_factory(**oidc(issuer)) as sidecar:
        for reason, token in cases.items():
            sdk = anthropic.AsyncAnthropic(base_url=sidecar.url, api_key=token, max_retries=0)
            with pytest.raises(anthropic.AuthenticationError) as refused:
                await sdk.beta.messages.create(**pdf_request())
            body: Any = refused.value.body
            assert refused.value.status_code == 401, reason
            assert body["error"]["type"] == "authentication_error"
            assert reason in body["error"]["message"], (reason, body)
            assert token not in json.dumps(body)  # the credential is never echoed
        assert sidecar.sample("skillwarden_errors_total", {"cause": "authentication"}) == len(cases)
    assert fake[0].received == []


async def test_unknown_kid_flood_fetches_jwks_at_most_once(sidecar_factory: SidecarFactory, issuer: Issuer,
                                                           fake: tuple[FakeClaude, str]) -> None:
    async with sidecar_factory(**oidc(issuer)) as sidecar:
        tokens = [issuer.token(kid=secrets.token_hex(8)) for _ in range(100)]

        shared = anthropic.AsyncAnthropic(base_url=sidecar.url, api_key="placeholder", max_retries=0)

        async def attempt(token: str) -> int:
            try:
                await shared.beta.messages.create(**pdf_request(),
                                                  extra_headers={"Authorization": f"Bearer {token}"})
            except anthropic.AuthenticationError as error:
                assert "signing key unknown" in str(error.body)
                return error.status_code
            return 200

        statuses = await asyncio.gather(*(attempt(t) for t in tokens))
        assert statuses == [401] * 100
        assert issuer.jwks_fetches <= 1
        # The issuer going down does not lock out holders of already-known keys.
        good = issuer.token()
        issuer.down = True
        sdk = anthropic.AsyncAnthropic(base_url=sidecar.url, api_key=good, max_retries=0)
        await sdk.beta.messages.create(**pdf_request())
        assert issuer.jwks_fetches <= 1


def _admin_token(stack: dict[str, Any]) -> str:
    kubeconfig = yaml.safe_load(Path(stack["kubeconfigs"]["admin"]).read_text())
    token: str = kubeconfig["users"][0]["user"]["token"]
    return token


async def test_kubernetes_service_account_token_from_real_apiserver(
        sidecar_factory: SidecarFactory, stack: dict[str, Any], tmp_path: Path,
        fake: tuple[FakeClaude, str]) -> None:
    api = k8s_config.new_client_from_config(config_file=stack["kubeconfigs"]["admin"])
    core = k8s.CoreV1Api(api)
    try:
        core.create_namespace({"metadata": {"name": NAMESPACE}})
    except k8s.ApiException as error:
        if error.status != 409:
            raise
    try:
        core.create_namespaced_service_account(NAMESPACE, {"metadata": {"name": TOKEN_SA}})
    except k8s.ApiException as error:
        if error.status != 409:
            raise
    issued = core.create_namespaced_service_account_token(TOKEN_SA, NAMESPACE, {
        "spec": {"audiences": [AUDIENCE], "expirationSeconds": 600}})
    sa_token = issued.status.token
    admin_token = tmp_path / "jwks-token"
    admin_token.write_text(_admin_token(stack))
    docx = {**pdf_request(), "container": {"skills": [{"type": "anthropic", "skill_id": "docx"}]}}
    async with sidecar_factory(sa_issuer=stack["apiserver"], sa_audience=(AUDIENCE,),
                               jwks_ca_file=Path(stack["ca_cert"]), jwks_token_file=admin_token) as sidecar:
        as_sa = anthropic.AsyncAnthropic(base_url=sidecar.url, api_key=sa_token, max_retries=0)
        answer = await as_sa.beta.messages.create(**docx)  # docx: granted to auditor-bot only
        assert answer.content[0].type == "text"
        workload = anthropic.AsyncAnthropic(base_url=sidecar.url, api_key="placeholder", max_retries=0)
        with pytest.raises(anthropic.PermissionDeniedError):
            await workload.beta.messages.create(**docx)
        wrong_audience = core.create_namespaced_service_account_token(TOKEN_SA, NAMESPACE, {
            "spec": {"audiences": ["not-skillwarden"], "expirationSeconds": 600}}).status.token
        other = anthropic.AsyncAnthropic(base_url=sidecar.url, api_key=wrong_audience, max_retries=0)
        with pytest.raises(anthropic.AuthenticationError) as refused:
            await other.beta.messages.create(**docx)
        assert "audience not accepted" in str(refused.value.body)


async def test_token_review_refuses_tokens_of_deleted_service_accounts(
        sidecar_factory: SidecarFactory, stack: dict[str, Any], tmp_path: Path,
        fake: tuple[FakeClaude, str]) -> None:
    api = k8s_config.new_client_from_config(config_file=stack["kubeconfigs"]["admin"])
    core = k8s.CoreV1Api(api)
    try:
        core.create_namespace({"metadata": {"name": NAMESPACE}})
    except k8s.ApiException as error:
        if error.status != 409:
            raise
    name = f"doomed-bot-{secrets.token_hex(3)}"
    core.create_namespaced_service_account(NAMESPACE, {"metadata": {"name": name}})
    token = core.create_namespaced_service_account_token(name, NAMESPACE, {
        "spec": {"audiences": [AUDIENCE], "expirationSeconds": 600}}).status.token
    admin_token = tmp_path / "api-token"
    admin_token.write_text(_admin_token(stack))
    base = {"sa_issuer": stack["apiserver"], "sa_audience": (AUDIENCE,),
            "jwks_ca_file": Path(stack["ca_cert"]), "jwks_token_file": admin_token}
    models: dict[str, Any] = {"model": MODEL, "max_tokens": 16,
                              "messages": [{"role": "user", "content": "hi"}]}

    async def ask(**overrides: Any) -> int:
        async with sidecar_factory(**base, **overrides) as sidecar:
            sdk = anthropic.AsyncAnthropic(base_url=sidecar.url, api_key=token, max_retries=0)
            try:
                await sdk.messages.create(**models)  # granted to the workload's own account
            except anthropic.APIStatusError as error:
                assert "no longer valid (TokenReview)" in str(error.body)
                return error.status_code
            return 200

    assert await ask(sa_token_review_url=stack["apiserver"]) == 200
    core.delete_namespaced_service_account(name, NAMESPACE)
    assert await ask() == 200  # offline JWKS verification alone cannot know
    # The API server caches successful authentications for ~10 s; each attempt is a fresh sidecar.
    deadline = time.monotonic() + 40
    status = 200
    while status == 200 and time.monotonic() < deadline:
        await asyncio.sleep(2)
        status = await ask(sa_token_review_url=stack["apiserver"])
    assert status == 401
