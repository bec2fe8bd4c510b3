"""The few Kubernetes API calls the approval gate needs, over aiohttp.

Least privilege: the sidecar's service account needs `create, get, list, watch` on
`skillapprovals` and `patch` on `skillapprovals/status` in its own namespace — nothing else.
Errors are sorted into what the gate must tell apart: the API server could not be reached
(`KubeUnavailable`, fail closed), a write lost a race (`KubeConflict`), a write was refused by
RBAC or the admission webhook (`KubeRefused`, message kept), and the object is gone.
"""

from __future__ import annotations

import base64
import os
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml

_IN_CLUSTER = Path("/var/run/secrets/kubernetes.io/serviceaccount")
_BASE = "/apis/skillwarden.io/v1alpha1/namespaces/{ns}/skillapprovals"


class KubeError(Exception):
    pass


class KubeUnavailable(KubeError):
    """No answer, or a 5xx: we do not know the approval's state."""


class KubeRefused(KubeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class KubeConflict(KubeRefused):
    pass


class KubeNotFound(KubeRefused):
    """404. `name` is the object the API server says is missing; empty when the whole resource
    type is not (yet) served — e.g. right after an API server restart, before CRDs are back."""

    def __init__(self, status: int, message: str, name: str = "") -> None:
        super().__init__(status, message)
        self.name = name


@dataclass(frozen=True)
class KubeAccess:
    """Where the API server is and how to authenticate. The token is read per request from a
    file when it came from one (projected service-account tokens rotate)."""

    server: str
    ca_pem: bytes | None = None
    token: str = ""
    token_file: str = ""
    insecure: bool = False  # tests only: never set by configuration

    def bearer(self) -> str:
        return Path(self.token_file).read_text().strip() if self.token_file else self.token

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if self.ca_pem:
            context.load_verify_locations(cadata=self.ca_pem.decode())
        return context

    @classmethod
    def in_cluster(cls) -> KubeAccess:
        host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
        if not host or not port:
            raise KubeError("not in a cluster: KUBERNETES_SERVICE_HOST/PORT are unset")
        return cls(
            server=f"https://{host}:{port}",
            ca_pem=(_IN_CLUSTER / "ca.crt").read_bytes(),
            token_file=str(_IN_CLUSTER / "token"),
        )

    @classmethod
    def from_kubeconfig(cls, path: str | Path) -> KubeAccess:
        """Token kubeconfigs only (static, file or service-account tokens): enough for the dev
        stack and for running the sidecar outside a pod."""
        config = yaml.safe_load(Path(path).read_text())
        context_name = config.get("current-context")
        context = next(c["context"] for c in config["contexts"] if c["name"] == context_name)
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
        user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
        ca: bytes | None = None
        if cluster.get("certificate-authority-data"):
            ca = base64.b64decode(cluster["certificate-authority-data"])
        elif cluster.get("certificate-authority"):
            ca = Path(cluster["certificate-authority"]).read_bytes()
        return cls(
            server=str(cluster["server"]).rstrip("/"),
            ca_pem=ca,
            token=str(user.get("token", "")),
            token_file=str(user.get("tokenFile", "")),
        )


def _missing_name(payload: bytes) -> str:
    try:
        details = orjson.loads(payload).get("details") or {}
        return str(details.get("name") or "") if details.get("kind") else ""
    except (orjson.JSONDecodeError, AttributeError):
        return ""


def _status_message(payload: bytes) -> str:
    try:
        status = orjson.loads(payload)
        return str(status.get("message") or status.get("reason") or "")[:500]
    except (orjson.JSONDecodeError, AttributeError):
        return payload[:200].decode(errors="replace")


class ApprovalClient:
    def __init__(
        self, access: KubeAccess, session: aiohttp.ClientSession, request_timeout: float = 5.0
    ) -> None:
        self._access = access
        self._session = session
        self._timeout = request_timeout
        self._ssl = access.ssl_context()

    def _url(self, namespace: str, name: str = "", suffix: str = "") -> str:
        url = self._access.server + _BASE.format(ns=namespace)
        return url + (f"/{name}" if name else "") + suffix

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        token = self._access.bearer()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def _call(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str | None = None,
    ) -> dict[str, Any]:
        data = orjson.dumps(body) if body is not None else None
        try:
            async with self._session.request(
                method,
                url,
                params=params,
                data=data,
                headers=self._headers(content_type),
                ssl=self._ssl,
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            ) as response:
                payload = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            raise KubeUnavailable(f"Kubernetes API unreachable: {type(error).__name__}") from error
        if status >= 500:
            raise KubeUnavailable(f"Kubernetes API answered {status}: {_status_message(payload)}")
        if status == 404:
            raise KubeNotFound(status, _status_message(payload), _missing_name(payload))
        if status == 409:
            raise KubeConflict(status, _status_message(payload))
        if status >= 400:
            raise KubeRefused(status, _status_message(payload))
        try:
            result = orjson.loads(payload)
        except orjson.JSONDecodeError as error:
            raise KubeUnavailable("Kubernetes API sent a body that is not JSON") from error
        if not isinstance(result, dict):
            raise KubeUnavailable("Kubernetes API sent an unexpected body")
        return result

    async def list(self, namespace: str, label_selector: str) -> dict[str, Any]:
        return await self._call("GET", self._url(namespace), params={"labelSelector": label_selector})

    async def get(self, namespace: str, name: str) -> dict[str, Any]:
        return await self._call("GET", self._url(namespace, name))

    async def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._call("POST", self._url(namespace), body=body, content_type="application/json")

    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return await self._call(
            "PATCH",
            self._url(namespace, name, "/status"),
            body=patch,
            content_type="application/merge-patch+json",
        )

    async def watch(
        self, namespace: str, name: str, resource_version: str, timeout_seconds: int
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Events for one object until the server ends the watch (timeout) or the caller stops."""
        params = {
            "watch": "1",
            "fieldSelector": f"metadata.name={name}",
            "resourceVersion": resource_version,
            "timeoutSeconds": str(max(1, timeout_seconds)),
            "allowWatchBookmarks": "false",
        }
        try:
            async with self._session.get(
                self._url(namespace),
                params=params,
                headers=self._headers(),
                ssl=self._ssl,
                timeout=aiohttp.ClientTimeout(
                    total=timeout_seconds + self._timeout, sock_connect=self._timeout
                ),
            ) as response:
                if response.status >= 500:
                    raise KubeUnavailable(f"Kubernetes API answered {response.status} to a watch")
                if response.status >= 400:
                    raise KubeRefused(response.status, _status_message(await response.read()))
                async for line in response.content:
                    if not line.strip():
                        continue
                    try:
                        event = orjson.loads(line)
                    except orjson.JSONDecodeError as error:
                        raise KubeUnavailable("Kubernetes watch sent a line that is not JSON") from error
                    if isinstance(event, dict) and isinstance(event.get("object"), dict):
                        yield str(event.get("type")), event["object"]
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            raise KubeUnavailable(f"Kubernetes API watch broke: {type(error).__name__}") from error
