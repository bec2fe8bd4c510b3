"""HTTP bundle service for OPA: `GET /bundles/<namespace>.tar.gz`, `/healthz`, `/metrics`.

- `ETag: "<revision>"`; `If-None-Match` with the current ETag -> 304 Not Modified.
- OPA long polling: a request with `Prefer: wait=N` and the current ETag is held open until the
  namespace's bundle changes (-> 200 with the new bundle) or N seconds pass (-> 304). Every
  response carries `Content-Type: application/vnd.openpolicyagent.bundles`, which is how OPA
  learns the server supports long polling.
- Unknown namespace -> 404 with a JSON error; a malformed name -> 400.
- `/healthz`: the process serves. `/readyz`: 200 once every namespace that held SkillPolicies at
  start-up has been compiled (503 before: route OPA to another replica meanwhile).
Every replica serves the same bytes and ETag for the same policies (see bundle.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import re2
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from skillwarden_operator.bundle_store import BundleStore
from skillwarden_operator.metrics import OperatorMetrics

BUNDLE_CONTENT_TYPE = "application/vnd.openpolicyagent.bundles"
STORE = web.AppKey("store", BundleStore)
METRICS = web.AppKey("metrics", OperatorMetrics)
MAX_WAIT = web.AppKey("max_wait", float)

_NAMESPACE = re2.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_WAIT = re2.compile(r"(?:^|[,;\s])wait=([0-9]{1,6})(?:$|[,;\s])")


def _etags(header: str | None) -> set[str]:
    if not header:
        return set()
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


def _wait_seconds(prefer: str | None, cap: float) -> float:
    if not prefer:
        return 0.0
    match = _WAIT.search(prefer)
    return min(float(match.group(1)), cap) if match else 0.0


def _error(status: int, message: str, namespace: str) -> web.Response:
    return web.json_response({"error": message, "namespace": namespace}, status=status)


async def get_bundle(request: web.Request) -> web.Response:
    store, metrics = request.app[STORE], request.app[METRICS]
    namespace = request.match_info["namespace"]
    if not _NAMESPACE.match(namespace):
        metrics.bundle_requests.labels("unknown", "400").inc()
        return _error(400, "not a namespace name", "")
    changed = store.changed(namespace)
    bundle = store.get(namespace)
    if bundle is None:
        metrics.bundle_requests.labels("unknown", "404").inc()
        return _error(404, f"no SkillPolicy bundle for namespace {namespace!r}", namespace)
    known = _etags(request.headers.get("If-None-Match"))
    wait = _wait_seconds(request.headers.get("Prefer"), request.app[MAX_WAIT])
    if bundle.etag in known and wait > 0:
        metrics.long_polls.inc()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=wait)
        finally:
            metrics.long_polls.dec()
        bundle = store.get(namespace)
        if bundle is None:
            metrics.bundle_requests.labels("unknown", "404").inc()
            return _error(404, f"no SkillPolicy bundle for namespace {namespace!r}", namespace)
    headers = {"ETag": bundle.etag, "Cache-Control": "no-cache"}
    if bundle.etag in known:
        metrics.bundle_requests.labels(namespace, "304").inc()
        return web.Response(status=304, headers=headers, content_type=BUNDLE_CONTENT_TYPE)
    metrics.bundle_requests.labels(namespace, "200").inc()
    return web.Response(body=bundle.data, headers=headers, content_type=BUNDLE_CONTENT_TYPE)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "namespaces": request.app[STORE].namespaces()})


async def readyz(request: web.Request) -> web.Response:
    missing = request.app[STORE].missing()
    if missing is None:
        return web.json_response({"status": "starting", "reason": "SkillPolicies not listed yet"}, status=503)
    if missing:
        return web.json_response({"status": "starting", "not_compiled_yet": missing[:20]}, status=503)
    return web.json_response({"status": "ready", "namespaces": request.app[STORE].namespaces()})


async def metrics_endpoint(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_app(store: BundleStore, metrics: OperatorMetrics, max_wait: float = 120.0) -> web.Application:
    app = web.Application()
    app[STORE] = store
    app[METRICS] = metrics
    app[MAX_WAIT] = max_wait
    app.router.add_get("/bundles/{namespace}.tar.gz", get_bundle)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    return app


@contextlib.asynccontextmanager
async def serving(app: web.Application, host: str, port: int) -> AsyncIterator[int]:
    """Run the app on host:port; yields the port."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    try:
        yield port
    finally:
        await runner.cleanup()
