"""The pipeline stages run for each request (order and guarantees: see `pipeline`)."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass

import orjson
from aiohttp import web

from skillwarden_sidecar.config import SidecarConfig
from skillwarden_sidecar.decisions import Decider
from skillwarden_sidecar.errors import Rejection, bad_request, too_large
from skillwarden_sidecar.forwarding import REQUEST_ID_HEADER, Upstream, forwardable_headers
from skillwarden_sidecar.identity import TokenVerifier
from skillwarden_sidecar.metrics import SidecarMetrics, model_family
from skillwarden_sidecar.pipeline import Exchange, Hooks, Workload
from skillwarden_sidecar.policy import PolicyClient, build_input, denial
from skillwarden_sidecar.routes import JSON, NONE, Route, resolve

log = logging.getLogger("skillwarden.sidecar")
# One line per request: ids, route, outcome and timings — never credentials or request text.
access_log = logging.getLogger("skillwarden.sidecar.access")


@dataclass
class Services:
    """Long-lived collaborators of the handler, created in the app's cleanup context."""

    config: SidecarConfig
    hooks: Hooks
    metrics: SidecarMetrics
    verifier: TokenVerifier
    policy: PolicyClient
    decider: Decider
    upstream: Upstream
    workload: Workload


class _RandomPool:
    """os.urandom is a system call; request ids need 12 unpredictable bytes each. Drawing them
    from a 4 KiB block of the same source costs one call per 341 requests."""

    def __init__(self, block: int = 4092) -> None:
        self._block = block
        self._buffer = b""
        self._offset = 0

    def take(self, size: int) -> bytes:
        if self._offset + size > len(self._buffer):
            self._buffer, self._offset = secrets.token_bytes(self._block), 0
        start = self._offset
        self._offset += size
        return self._buffer[start:self._offset]


_ids = _RandomPool()


def new_request_id() -> str:
    return "req_skw_" + _ids.take(12).hex()


def error_response(rejection: Rejection, request_id: str) -> web.Response:
    headers = {"request-id": request_id, REQUEST_ID_HEADER: request_id, **rejection.headers}
    return web.Response(status=rejection.status, body=rejection.body(), content_type="application/json",
                        headers=headers)


async def read_body(request: web.Request, exchange: Exchange, route: Route, limit: int) -> None:
    length = request.content_length
    if route.body == NONE:
        if (length or 0) > 0 or request.headers.get("Transfer-Encoding"):
            raise bad_request(f"{exchange.method} {route.label} takes no request body")
        return
    if length is not None and length > limit:
        raise too_large(f"request body of {length} bytes exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.readany()
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise too_large(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    exchange.body_bytes = b"".join(chunks)
    content_type = request.headers.get("Content-Type", "")
    exchange.content_type = content_type
    if route.body != JSON:
        return
    if content_type.split(";", 1)[0].strip().lower() != "application/json":
        raise Rejection(415, "content-type must be application/json", cause="bad_content_type")
    try:
        exchange.body_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request("request body is not valid UTF-8", "bad_json") from None
    try:
        body = orjson.loads(exchange.body_bytes)
    except orjson.JSONDecodeError as error:
        raise bad_request(f"request body is not valid JSON ({error.msg})", "bad_json") from None
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object", "bad_json")
    exchange.body = body


async def decide(services: Services, exchange: Exchange, route: Route) -> None:
    exchange.policy_input = build_input(exchange, route)
    outcome = await services.decider.decide(exchange.policy_input)
    exchange.decision = outcome.decision
    exchange.timings.decision_s = (exchange.timings.decision_s or 0.0) + outcome.seconds
    services.metrics.child(services.metrics.decisions, "cache" if outcome.cached else "opa").inc()
    if not outcome.cached:
        services.metrics.decision_seconds.observe(outcome.seconds)


async def run_stages(request: web.Request, services: Services, exchange: Exchange,
                     route: Route) -> web.StreamResponse:
    hooks = services.hooks
    try:
        hooks.recording.admit()
    except Rejection:
        raise
    except Exception as error:
        raise Rejection(503, f"session recording unavailable ({error}); request refused",
                        cause="recording_unavailable", error_type="api_error") from None
    await read_body(request, exchange, route, services.config.max_body_bytes)
    exchange.identity = await services.verifier.identify(request.headers)
    await hooks.approval.lookup(exchange)
    await decide(services, exchange, route)
    assert exchange.decision is not None
    if exchange.decision.action == "deny":
        raise denial(exchange.decision)
    if exchange.decision.action == "require_approval":
        held = time.monotonic()
        try:
            await hooks.approval.gate(exchange)
        finally:
            exchange.timings.approval_wait_s = time.monotonic() - held
            services.metrics.approval_wait.observe(exchange.timings.approval_wait_s)
            services.metrics.approvals.labels(exchange.approval.state or "none").inc()
        if exchange.approval.state != "Approved":
            raise Rejection(403, "approval was not granted", cause="approval_denied",
                            details={"approval": exchange.approval.id})
        # OPA turns require_approval into allow only when the input carries the approval.
        await decide(services, exchange, route)
        if exchange.decision.action != "allow":
            raise denial(exchange.decision)
    hooks.request_masking.mask_request(exchange)
    try:
        await hooks.recording.record_request(exchange)
    except Rejection:
        raise
    except Exception as error:
        raise Rejection(503, f"session record could not be written ({type(error).__name__}); "
                        "request refused", cause="recording_failed", error_type="api_error") from None
    finally:
        exchange.recorded_request = True  # tried: never record the same request twice
    return await services.upstream.forward(request, exchange, hooks)


async def handle(request: web.Request, services: Services) -> web.StreamResponse:
    exchange = Exchange(request_id=new_request_id(), received_at=time.time(), method=request.method,
                        path=request.path, query=request.query_string, operation="",
                        workload=services.workload, forward_headers=forwardable_headers(request.headers))
    route: Route | None = None
    response: web.StreamResponse
    try:
        route = resolve(request.method, request.raw_path)
        exchange.operation = route.operation
        response = await run_stages(request, services, exchange, route)
    except Rejection as rejection:
        exchange.rejection = rejection
        exchange.response_status = rejection.status
        response = error_response(rejection, exchange.request_id)
    except asyncio.CancelledError:
        exchange.error = "client_disconnected"
        await _finish(services, exchange, route)
        raise
    except Exception as error:  # a bug must not leak a traceback, and must still be recorded
        log.exception("internal error handling %s", exchange.request_id)
        internal = Rejection(500, "internal error in skillwarden sidecar", cause="internal")
        exchange.rejection, exchange.response_status = internal, 500
        exchange.error = "internal"
        log.debug("internal error type %s", type(error).__name__)
        response = error_response(internal, exchange.request_id)
    await _finish(services, exchange, route)
    return response


async def _finish(services: Services, exchange: Exchange, route: Route | None) -> None:
    metrics = services.metrics
    if not exchange.recorded_request:
        await _record(services, "record_request", exchange)
    await _record(services, "record_response", exchange)
    timings = exchange.timings
    timings.total_s = time.monotonic() - timings.started
    label = route.label if route else "unknown"
    if exchange.rejection is not None:
        metrics.child(metrics.errors, exchange.rejection.cause).inc()
    if exchange.error:
        metrics.child(metrics.errors, exchange.error).inc()
    body = exchange.body or {}
    model = body.get("model") if isinstance(body.get("model"), str) else ""
    skills = sorted(str(s.get("skill_id", "")) for s in (exchange.policy_input or {}).get(
        "request", {}).get("skills", []))
    decision = exchange.decision.action if exchange.decision else "none"
    if timings.approval_wait_s is not None:
        # Counted as what the policy asked for; how the human decided is in approvals_total{state}.
        decision = "require_approval"
    elif exchange.rejection is not None and decision == "allow":
        decision = "allow_failed"
    skill = metrics.skill_label("+".join(skills))
    metrics.child(metrics.requests, decision, exchange.workload.namespace, skill,
                  metrics.model_label(model_family(str(model))), label).inc()
    if timings.upstream_s is not None:
        metrics.child(metrics.upstream_seconds, label).observe(timings.upstream_s)
    if timings.upstream_ttft_s is not None:
        metrics.child(metrics.upstream_ttft, label).observe(timings.upstream_ttft_s)
        if timings.upstream_s is not None:
            # Our own cost before the answer starts: wall time to the upstream's first byte minus
            # the upstream's share and any human approval wait.
            before_upstream = timings.total_s - timings.upstream_s - (timings.approval_wait_s or 0.0)
            metrics.child(metrics.added_latency, label).observe(max(before_upstream, 0.0))
    if access_log.isEnabledFor(logging.INFO):
        access_log.info(
            "request_id=%s route=%s operation=%s decision=%s status=%s cause=%s identity=%s "
            "policy=%s rule=%s total_ms=%.2f decision_ms=%s upstream_ms=%s",
            exchange.request_id, label, exchange.operation or "-", decision, exchange.response_status,
            (exchange.rejection.cause if exchange.rejection else exchange.error) or "-",
            exchange.identity.kind if exchange.identity else "-",
            (exchange.decision.policy if exchange.decision else None) or "-",
            (exchange.decision.rule if exchange.decision else None) or "-", timings.total_s * 1000,
            _ms(timings.decision_s), _ms(timings.upstream_s))
    for direction, counts in exchange.masking_counts.items():
        for entity, count in counts.items():
            if count:
                metrics.child(metrics.masked_entities, metrics.entity_label(entity), direction).inc(count)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.2f}"


async def _record(services: Services, which: str, exchange: Exchange) -> None:
    try:
        await getattr(services.hooks.recording, which)(exchange)
    except Exception as error:  # the request is already refused/answered: count, don't crash
        log.error("%s failed for %s: %s", which, exchange.request_id, type(error).__name__)
        services.metrics.errors.labels("recording").inc()
