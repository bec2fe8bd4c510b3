"""The sidecar's two aiohttp applications: app traffic (pipeline) and admin (/metrics, health).

`build_app(config, hooks)` is the entry point for tests and for other teams: everything
long-lived (HTTP client pools, JWKS caches, the hooks' own resources) is created in cleanup
contexts and reached through `AppKey`s — there are no module globals.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, LineTooLong
from aiohttp.web_protocol import RequestHandler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from skillwarden_sidecar import jwks
from skillwarden_sidecar.config import SidecarConfig
from skillwarden_sidecar.credentials import ProviderKey
from skillwarden_sidecar.decisions import Decider, DecisionCache
from skillwarden_sidecar.errors import ERROR_TYPES, error_body
from skillwarden_sidecar.forwarding import Upstream
from skillwarden_sidecar.identity import TokenVerifier, TrustedIssuer
from skillwarden_sidecar.memory import release_free_heap
from skillwarden_sidecar.metrics import SidecarMetrics
from skillwarden_sidecar.pipeline import Hooks, Workload
from skillwarden_sidecar.policy import PolicyClient
from skillwarden_sidecar.stages import Services, handle
from skillwarden_sidecar.token_review import TokenReviewer

log = logging.getLogger("skillwarden.sidecar")

CONFIG = web.AppKey("config", SidecarConfig)
HOOKS = web.AppKey("hooks", Hooks)
METRICS = web.AppKey("metrics", SidecarMetrics)
SERVICES = web.AppKey("services", Services)
PROVIDER_KEY = web.AppKey("provider_key", ProviderKey)


def _issuers(config: SidecarConfig, session: aiohttp.ClientSession) -> list[TrustedIssuer]:
    issuers = []
    c = config
    for kind, issuer, audiences, url, file in (
            ("oidc", c.oidc_issuer, c.oidc_audience, c.oidc_jwks_url, c.oidc_jwks_file),
            ("serviceaccount", c.sa_issuer, c.sa_audience, c.sa_jwks_url, c.sa_jwks_file)):
        if not issuer:
            continue
        if file is not None:
            fetch = jwks.file_source(file)
        elif url:
            fetch = jwks.url_source(session, url, config.jwks_token_file)
        elif kind == "serviceaccount":
            fetch = jwks.url_source(session, issuer.rstrip("/") + "/openid/v1/jwks", config.jwks_token_file)
        else:
            fetch = jwks.discovery_source(session, issuer, config.jwks_token_file)
        cache = jwks.JwksCache(fetch, config.jwks_cache_ttl, config.jwks_refetch_interval)
        review = None
        if kind == "serviceaccount" and c.sa_token_review_url:
            review = TokenReviewer(session, c.sa_token_review_url, c.jwks_token_file, audiences)
        issuers.append(TrustedIssuer(kind, issuer, audiences, cache, review))
    return issuers


def _ssl(ca_file: Any) -> ssl.SSLContext | bool:
    return ssl.create_default_context(cafile=str(ca_file)) if ca_file is not None else True


async def _services_ctx(app: web.Application) -> AsyncIterator[None]:
    config, hooks, metrics = app[CONFIG], app[HOOKS], app[METRICS]
    upstream_session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=config.upstream_connections, ssl=_ssl(config.upstream_ca_file),
                                       keepalive_timeout=30),
        auto_decompress=True, skip_auto_headers=("User-Agent",))
    # OPA is on loopback: a small pool of warm connections, no DNS cache churn.
    policy_session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64, keepalive_timeout=60))
    jwks_session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=4, ssl=_ssl(config.jwks_ca_file)),
        timeout=aiohttp.ClientTimeout(total=5))
    key = ProviderKey(config.provider_key_file)
    app[PROVIDER_KEY] = key
    policy = PolicyClient(policy_session, config.opa_url, config.opa_decision_path, config.opa_timeout,
                          config.opa_max_inflight)
    app[SERVICES] = Services(
        config=config, hooks=hooks, metrics=metrics,
        verifier=TokenVerifier(_issuers(config, jwks_session), config.jwt_algorithms, config.jwt_leeway,
                               config.groups_claim, config.email_claim),
        policy=policy,
        decider=Decider(policy, config.opa_patterns_path, DecisionCache(config.decision_cache_ttl)),
        upstream=Upstream(upstream_session, config.upstream_url, key, config.upstream_connect_timeout,
                          config.upstream_read_timeout),
        workload=Workload(config.namespace, config.pod_name, config.service_account))
    try:
        yield
    finally:
        await app[SERVICES].decider.close()
        for session in (upstream_session, policy_session, jwks_session):
            await session.close()


async def _proxy(request: web.Request) -> web.StreamResponse:
    return await handle(request, request.app[SERVICES])


def build_app(config: SidecarConfig, hooks: Hooks | None = None,
              metrics: SidecarMetrics | None = None) -> web.Application:
    """The app-traffic application. Every path goes through the pipeline (unknown ones are 404)."""
    hooks = hooks or Hooks()
    # The pipeline enforces the body limit itself (Anthropic-format 413); aiohttp's own limit is
    # a backstop one byte above it.
    app = web.Application(client_max_size=config.max_body_bytes + 1)
    app[CONFIG] = config
    app[HOOKS] = hooks
    app[METRICS] = metrics or SidecarMetrics()
    app.cleanup_ctx.extend(hooks.contexts)
    app.cleanup_ctx.append(_services_ctx)
    app.router.add_route("*", "/{tail:.*}", _proxy)
    return app


# ---------------------------------------------------------------------------------------------
# Admin application

TRAFFIC_APP = web.AppKey("traffic_app", web.Application)


async def _metrics(request: web.Request) -> web.Response:
    registry = request.app[TRAFFIC_APP][METRICS].registry
    return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readiness(app: web.Application) -> dict[str, Any]:
    """Ready = OPA has its bundle, the provider key is readable, and the recorder admits."""
    services = app[SERVICES]
    checks: dict[str, Any] = {"opa_bundle": await services.policy.ready(),
                              "provider_key": app[PROVIDER_KEY].readable()}
    try:
        services.hooks.recording.admit()
        checks["recording"] = True
    except Exception as error:
        checks["recording"] = f"unavailable: {error}"
    checks["ready"] = all(v is True for v in checks.values())
    return checks


async def _readyz(request: web.Request) -> web.Response:
    traffic = request.app[TRAFFIC_APP]
    if SERVICES not in traffic:
        return web.json_response({"ready": False, "reason": "starting"}, status=503)
    checks = await readiness(traffic)
    return web.json_response(checks, status=200 if checks["ready"] else 503)


def build_admin_app(traffic_app: web.Application) -> web.Application:
    admin = web.Application()
    admin[TRAFFIC_APP] = traffic_app
    admin.router.add_get("/metrics", _metrics)
    admin.router.add_get("/healthz", _healthz)
    admin.router.add_get("/readyz", _readyz)
    return admin


# ---------------------------------------------------------------------------------------------
# Serving: malformed HTTP (oversized header lines, garbage request lines) is answered before any
# application code runs; this handler makes those answers Anthropic-format JSON too.


class _AnthropicErrorRequestHandler(RequestHandler):
    __slots__ = ()

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)
        if status >= 500:
            log.error("internal error: %s", type(exc).__name__ if exc else "unknown")
            text = "internal error in skillwarden sidecar"
        elif isinstance(exc, LineTooLong):
            status, text = 431, "request line or a header is larger than this sidecar accepts"
        elif isinstance(exc, BadHttpMethod):
            text = "not an HTTP request"
        elif exc is not None and "header" in str(exc).lower():
            text = "malformed or too many HTTP headers"
        else:
            text = "malformed HTTP request"
        if 400 <= status < 500:
            log.info("rejected malformed HTTP request: %s", type(exc).__name__ if exc else "unknown")
        response = web.Response(status=status, body=error_body(ERROR_TYPES.get(status, "api_error"), text),
                                content_type="application/json")
        response.force_close()
        return response


class _AnthropicErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        handler = super().__call__()
        handler.__class__ = _AnthropicErrorRequestHandler
        return handler


class SidecarRunner(web.AppRunner):
    """`AppRunner` whose connection handler answers protocol errors in Anthropic's format."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _AnthropicErrorServer
        return server


async def start(app: web.Application, config: SidecarConfig, host: str, port: int,
                admin: bool = False) -> tuple[web.AppRunner, int]:
    """Start serving `app`; returns the runner and the bound port (port 0 picks a free one)."""
    kwargs: dict[str, Any] = {"access_log": None, "handler_cancellation": True}
    if not admin:
        kwargs.update(max_line_size=config.max_header_line, max_field_size=config.max_header_field)
    runner = web.AppRunner(app, **kwargs) if admin else SidecarRunner(app, **kwargs)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    return runner, int(bound)


def settle_collector() -> None:
    """Everything alive once the sidecar serves (modules, botocore's service model, compiled
    patterns, pools) lives as long as the process: `gc.freeze()` takes it out of the collector's
    generations, so a full collection walks only what requests allocate. Measured under the
    bench's streaming load: full collections paused the event loop up to 71 ms (p99 added TTFT
    at 16 streams 58 ms) before, 7 ms p99 after (`bench/experiments.py` gc-stats). A larger
    first-generation threshold was tried: ten times fewer young collections, each ten times
    longer, no less time in total; the default stays."""
    gc.collect()
    gc.freeze()
    release_free_heap()  # what start-up parsed and dropped (botocore's data files) goes back


async def serve(config: SidecarConfig, hooks: Hooks | None = None) -> None:
    """Run until SIGTERM/SIGINT (the CLI's main loop)."""
    app = build_app(config, hooks)
    traffic, port = await start(app, config, config.listen_host, config.port)
    admin_runner, admin_port = await start(build_admin_app(app), config, config.admin_host,
                                           config.admin_port, admin=True)
    log.info("skillwarden sidecar: traffic on %s:%d, admin on %s:%d, upstream %s, OPA %s",
             config.listen_host, port, config.admin_host, admin_port, config.upstream_url, config.opa_url)
    settle_collector()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stopping.set)
    try:
        await stopping.wait()
    finally:
        await admin_runner.cleanup()
        await traffic.cleanup()
