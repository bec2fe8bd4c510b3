"""The real Prometheus of the local stack scrapes the sidecar's admin port and can query the
decision counters and latency histograms by their names from `skillwarden_sidecar.metrics`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import pytest
from sidecar_support import NAMESPACE, SidecarFactory

from skillwarden_devstack.fake_claude import FakeClaude
from skillwarden_sidecar import metrics


async def query(prometheus: str, promql: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{prometheus}/api/v1/query", params={"query": promql}) as response:
            document = await response.json()
    result: list[dict[str, Any]] = document["data"]["result"]
    return result


async def test_prometheus_scrapes_sidecar_metrics(sidecar_factory: SidecarFactory, stack: dict[str, Any],
                                                  fake: tuple[FakeClaude, str]) -> None:
    targets = Path(stack["prometheus_targets"])
    previous = await asyncio.to_thread(targets.read_text)
    async with sidecar_factory() as sidecar:
        sdk = anthropic.AsyncAnthropic(base_url=sidecar.url, api_key="placeholder", max_retries=0)
        await sdk.messages.create(model="claude-sonnet-4-6", max_tokens=16,
                                  messages=[{"role": "user", "content": "hello"}])
        with pytest.raises(anthropic.PermissionDeniedError):
            await sdk.messages.create(model="claude-opus-4-7", max_tokens=16,  # model not granted
                                      messages=[{"role": "user", "content": "hello"}])
        admin = sidecar.admin_url.removeprefix("http://")
        job = "skillwarden-sidecar-it"
        try:
            await asyncio.to_thread(targets.write_text,
                                    json.dumps([{"targets": [admin], "labels": {"job": job}}]))
            selector = f'{{job="{job}",namespace="{NAMESPACE}"}}'
            found: list[dict[str, Any]] = []
            for _ in range(60):
                found = await query(stack["prometheus"],
                                    f"sum by (decision, model) ({metrics.REQUESTS_TOTAL}{selector})")
                if len(found) == 2:
                    break
                await asyncio.sleep(0.5)
            by_decision = {r["metric"]["decision"]: (r["metric"]["model"], r["value"][1]) for r in found}
            assert by_decision == {"allow": ("claude-sonnet-4-6", "1"), "deny": ("claude-opus-4-7", "1")}
            for histogram in (metrics.DECISION_SECONDS, metrics.UPSTREAM_SECONDS,
                              metrics.ADDED_LATENCY_SECONDS):
                counted = await query(stack["prometheus"], f'sum({histogram}_count{{job="{job}"}})')
                assert counted and float(counted[0]["value"][1]) >= 1, histogram
            p50 = await query(stack["prometheus"], f'histogram_quantile(0.5, sum by (le) '
                                                   f'({metrics.DECISION_SECONDS}_bucket{{job="{job}"}}))')
            assert p50 and float(p50[0]["value"][1]) < 0.25  # under the fail-closed bound
        finally:
            await asyncio.to_thread(targets.write_text, previous)
