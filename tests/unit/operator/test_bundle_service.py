"""Bundle service HTTP semantics: ETag/304, OPA long polling, 404/400, metrics."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from skillwarden_operator.bundle import build_bundle
from skillwarden_operator.bundle_service import BUNDLE_CONTENT_TYPE, build_app
from skillwarden_operator.bundle_store import BundleStore
from skillwarden_operator.metrics import METRIC_NAMES, OperatorMetrics

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def finance() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((EXAMPLES / "skillpolicy-finance.yaml").read_text())
    return loaded


@pytest.fixture
async def service() -> AsyncIterator[tuple[TestClient[Any, Any], BundleStore, OperatorMetrics]]:
    store, metrics = BundleStore(), OperatorMetrics()
    store.put(build_bundle("finance", [finance()]))
    client: TestClient[Any, Any] = TestClient(TestServer(build_app(store, metrics, max_wait=5.0)))
    await client.start_server()
    try:
        yield client, store, metrics
    finally:
        await client.close()


async def test_etag_and_304(service: Any) -> None:
    client, store, _ = service
    bundle = store.get("finance")
    response = await client.get("/bundles/finance.tar.gz")
    assert response.status == 200
    assert response.headers["ETag"] == f'"{bundle.revision}"'
    assert response.headers["Content-Type"] == BUNDLE_CONTENT_TYPE
    assert await response.read() == bundle.data
    again = await client.get("/bundles/finance.tar.gz", headers={"If-None-Match": f'"{bundle.revision}"'})
    assert again.status == 304
    assert await again.read() == b""
    stale = await client.get("/bundles/finance.tar.gz", headers={"If-None-Match": '"sha256:old"'})
    assert stale.status == 200


async def test_long_poll_returns_the_change_as_soon_as_it_happens(service: Any) -> None:
    client, store, _ = service
    etag = store.get("finance").etag
    edited = finance()
    edited["spec"]["rules"][0]["message"] = "edited"
    new = build_bundle("finance", [edited])

    async def change_later() -> None:
        await asyncio.sleep(0.3)
        store.put(new)

    started = time.monotonic()
    task = asyncio.create_task(change_later())
    response = await client.get("/bundles/finance.tar.gz",
                                headers={"If-None-Match": etag, "Prefer": "wait=5"})
    elapsed = time.monotonic() - started
    await task
    assert response.status == 200
    assert response.headers["ETag"] == new.etag
    assert await response.read() == new.data
    assert 0.25 < elapsed < 2.0


async def test_long_poll_times_out_with_304(service: Any) -> None:
    client, store, _ = service
    started = time.monotonic()
    response = await client.get("/bundles/finance.tar.gz",
                                headers={"If-None-Match": store.get("finance").etag, "Prefer": "wait=1"})
    assert response.status == 304
    assert 0.9 < time.monotonic() - started < 3.0


async def test_same_content_is_not_a_change(service: Any) -> None:
    _, store, _ = service
    event = store.changed("finance")
    assert store.put(build_bundle("finance", [copy.deepcopy(finance())])) is False
    assert not event.is_set()


async def test_unknown_and_malformed_namespaces(service: Any) -> None:
    client, store, _ = service
    response = await client.get("/bundles/nobody.tar.gz")
    assert response.status == 404
    assert await response.json() == {"error": "no SkillPolicy bundle for namespace 'nobody'",
                                     "namespace": "nobody"}
    assert (await client.get("/bundles/UPPER_case.tar.gz")).status == 400
    # A namespace that disappears while a long poll waits: 404, never the stale bundle.
    etag = store.get("finance").etag

    async def drop() -> None:
        await asyncio.sleep(0.2)
        store.remove("finance")

    task = asyncio.create_task(drop())
    gone = await client.get("/bundles/finance.tar.gz", headers={"If-None-Match": etag, "Prefer": "wait=5"})
    await task
    assert gone.status == 404


async def test_ready_only_once_every_listed_namespace_is_compiled(service: Any) -> None:
    client, store, _ = service
    starting = await client.get("/readyz")
    assert starting.status == 503 and (await starting.json())["reason"] == "SkillPolicies not listed yet"
    store.expected = {"finance", "support", "deleted-meanwhile"}
    waiting = await client.get("/readyz")
    assert waiting.status == 503
    assert (await waiting.json())["not_compiled_yet"] == ["deleted-meanwhile", "support"]
    store.put(build_bundle("support", []))
    store.remove("deleted-meanwhile")
    ready = await client.get("/readyz")
    assert ready.status == 200
    assert (await ready.json()) == {"status": "ready", "namespaces": ["finance", "support"]}


async def test_health_and_metrics(service: Any) -> None:
    client, store, metrics = service
    bundle = store.get("finance")
    metrics.set_namespace("finance", bundle.revision, len(bundle.data), 1, 0)
    await client.get("/bundles/finance.tar.gz")
    await client.get("/bundles/ghost.tar.gz")
    health = await client.get("/healthz")
    assert await health.json() == {"status": "ok", "namespaces": ["finance"]}
    text = await (await client.get("/metrics")).text()
    assert 'skillwarden_operator_bundle_requests_total{code="200",namespace="finance"} 1.0' in text
    assert 'skillwarden_operator_bundle_requests_total{code="404",namespace="unknown"} 1.0' in text
    assert f'skillwarden_operator_bundle_info{{namespace="finance",revision="{bundle.revision}"}} 1.0' in text
    for name in METRIC_NAMES:
        assert name in text or (name.endswith("_total") and name.removesuffix("_total") in text)
    metrics.forget_namespace("finance")
    text = await (await client.get("/metrics")).text()
    assert "skillwarden_operator_bundle_info{" not in text
