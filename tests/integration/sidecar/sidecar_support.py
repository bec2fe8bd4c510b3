"""Helpers shared by the sidecar integration tests (constants, bundle server, OPA, issuer)."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import http.server
import json
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from skillwarden_devstack import processes
from skillwarden_operator.bundle import build_bundle
from skillwarden_sidecar import app as sidecar_app
from skillwarden_sidecar.config import SidecarConfig
from skillwarden_sidecar.metrics import SidecarMetrics

NAMESPACE = "finance"
WORKLOAD_SA = "report-bot"
TOKEN_SA = "auditor-bot"  # a service account that presents its own projected token
REAL_KEY = "sk-ant-api03-REAL-provider-key-only-the-sidecar-knows"
AUDIENCE = "skillwarden"

TEST_POLICIES: list[dict[str, Any]] = [{
    "apiVersion": "skillwarden.io/v1alpha1", "kind": "SkillPolicy",
    "metadata": {"name": "sidecar-test", "namespace": NAMESPACE},
    "spec": {
        "defaultAction": "deny",
        "subjects": [
            {"name": "bot", "serviceAccounts": [WORKLOAD_SA], "skills": [{"type": "anthropic", "id": "xlsx"}],
             "models": ["claude-sonnet-4-*"], "tools": ["code_execution", "get_weather"], "maxTokens": 4096},
            {"name": "leads", "groups": ["finance-leads"], "skills": [{"type": "anthropic", "id": "pdf"}],
             "models": ["claude-*"]},
            {"name": "auditor-bot", "serviceAccounts": [TOKEN_SA],
             "skills": [{"type": "anthropic", "id": "docx"}], "models": ["claude-*"]},
        ],
        "rules": [
            {"name": "no-pptx-for-finance", "action": "deny",
             "message": "Slide decks leave the finance perimeter; use xlsx",
             "when": {"skills": [{"type": "anthropic", "id": "pptx"}]}},
            {"name": "customer-export", "action": "requireApproval",
             "message": "Customer data exports need a finance lead",
             "when": {"promptMatches": ["(?i)customer (list|export)"]}},
            {"name": "no-credential-dumps", "action": "deny", "message": "Prompts asking for credentials are "
             "not allowed", "when": {"promptMatches": ["(?i)(password|api[_ -]?key)s? (list|dump|export)"]}},
        ],
        "approval": {"approvers": {"groups": ["finance-leads"]}, "required": 1, "ttl": "30m",
                     "holdSeconds": 5},
    },
}]


# ---------------------------------------------------------------------------------------------
# OPA with a real bundle


class BundleServer:
    """Serves `/bundles/<namespace>.tar.gz` with ETag / If-None-Match like the operator."""

    def __init__(self) -> None:
        self.bundles: dict[str, tuple[bytes, str]] = {}
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                name = self.path.removeprefix("/bundles/").removesuffix(".tar.gz")
                found = outer.bundles.get(name)
                if found is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                data, etag = found
                if self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/gzip")
                self.send_header("ETag", etag)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def publish(self, namespace: str, policies: list[dict[str, Any]]) -> str:
        bundle = build_bundle(namespace, policies)
        assert not bundle.invalid, bundle.invalid
        self.bundles[namespace] = (bundle.data, bundle.etag)
        return bundle.revision

    def close(self) -> None:
        self.server.shutdown()


@dataclasses.dataclass
class Opa:
    url: str
    running: processes.Running

    def stop(self) -> None:
        processes.stop(self.running)


def start_opa(opa_binary: Path, state: Path, bundle_url: str, namespace: str, name: str = "opa") -> Opa:
    state.mkdir(parents=True, exist_ok=True)
    port = processes.free_port()
    config = {"services": {"operator": {"url": bundle_url}},
              "bundles": {"skillwarden": {"service": "operator", "resource": f"/bundles/{namespace}.tar.gz",
                                          "polling": {"min_delay_seconds": 1, "max_delay_seconds": 2}}}}
    config_file = state / f"{name}.json"
    config_file.write_text(json.dumps(config))
    argv = [str(opa_binary), "run", "--server", f"--addr=127.0.0.1:{port}", "--diagnostic-addr=",
            "--log-level=error", f"--config-file={config_file}"]
    running = processes.spawn(name, argv, state / f"{name}.log")
    url = f"http://127.0.0.1:{port}"
    processes.wait_until(name, lambda: urllib.request.urlopen(f"{url}/health?bundles").status == 200,
                         running, 30, "serving its bundle")
    return Opa(url, running)


@dataclasses.dataclass
class SidecarHandle:
    url: str
    admin_url: str
    app: web.Application
    config: SidecarConfig

    @property
    def metrics(self) -> SidecarMetrics:
        return self.app[sidecar_app.METRICS]

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float:
        value = self.metrics.registry.get_sample_value(name, labels or {})
        return float(value or 0.0)


SidecarFactory = Callable[..., contextlib.AbstractAsyncContextManager[SidecarHandle]]


# ---------------------------------------------------------------------------------------------
# A real OIDC issuer over HTTP


def _b64(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class Issuer:
    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "test-key-1"
        self.url = ""
        self.jwks_fetches = 0
        self.down = False

    def public_pem(self) -> bytes:
        return self.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)

    def jwks(self) -> dict[str, Any]:
        numbers = self.key.public_key().public_numbers()
        return {"keys": [{"kty": "RSA", "kid": self.kid, "use": "sig", "alg": "RS256",
                          "n": _b64(numbers.n), "e": _b64(numbers.e)}]}

    def token(self, *, kid: str | None = None, headers: dict[str, Any] | None = None,
              **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": self.url, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 300,
                "groups": ["finance-leads"], "email": "alice@example.com"}
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, self.key, algorithm="RS256",
                          headers={"kid": kid or self.kid, **(headers or {})})

    def app(self) -> web.Application:
        async def discovery(request: web.Request) -> web.Response:
            if self.down:
                return web.Response(status=503)
            return web.json_response({"issuer": self.url, "jwks_uri": f"{self.url}/keys"})

        async def keys(request: web.Request) -> web.Response:
            self.jwks_fetches += 1
            if self.down:
                return web.Response(status=503)
            return web.json_response(self.jwks())

        application = web.Application()
        application.router.add_get("/.well-known/openid-configuration", discovery)
        application.router.add_get("/keys", keys)
        return application
