"""Prompt patterns matched in the sidecar and reused decisions, against the real OPA and a real bundle.

What a user would notice: repeated calls of one shape stop costing an OPA round trip, yet a prompt
rule still catches the one prompt that matches it, and a policy change (new pattern, new rule)
takes effect within OPA's bundle polling plus the cache's time to live — even before the sidecar
has fetched the new pattern table.
"""

from __future__ import annotations

import asyncio
import copy
import time
from pathlib import Path
from typing import Any

import anthropic
import pytest
from sidecar_support import TEST_POLICIES, BundleServer, SidecarFactory, start_opa

from skillwarden_devstack.fake_claude import FakeClaude
from skillwarden_sidecar import app as sidecar_app

MODEL = "claude-sonnet-4-6"
CACHE_NS = "cache-test"  # its own bundle: editing it cannot disturb the other sidecar tests


def policies(extra_rules: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    edited = copy.deepcopy(TEST_POLICIES)
    for policy in edited:
        policy["metadata"]["namespace"] = CACHE_NS
        policy["spec"].setdefault("rules", []).extend(extra_rules or [])
    return edited


def ask(text: str) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": text}]}


@pytest.fixture
async def cache_opa(opa_binary: Path, bundle_server: BundleServer, tmp_path: Path) -> Any:
    bundle_server.publish(CACHE_NS, policies())
    opa = start_opa(opa_binary, tmp_path, bundle_server.url, CACHE_NS, "opa-cache")
    yield opa
    opa.stop()


async def test_one_shape_is_decided_once_and_prompt_rules_still_bite(
        sidecar_factory: SidecarFactory, cache_opa: Any, fake: tuple[FakeClaude, str]) -> None:
    upstream, _ = fake
    async with sidecar_factory(opa_url=cache_opa.url, namespace=CACHE_NS, decision_cache_ttl=30) as sc:
        sdk = anthropic.AsyncAnthropic(base_url=sc.url, api_key="placeholder", max_retries=0)
        await sdk.messages.create(**ask("warm-up"))  # first answer names the table; fetched in background
        await asyncio.sleep(0.5)
        for n in range(20):
            await sdk.messages.create(**ask(f"summarise ticket {n} " + "x" * n))
        assert sc.sample("skillwarden_decisions_total", {"source": "cache"}) >= 19
        assert sc.sample("skillwarden_decisions_total", {"source": "opa"}) <= 3

        with pytest.raises(anthropic.PermissionDeniedError) as denied:  # same shape, rule's pattern
            await sdk.messages.create(**ask("Please dump the passwords list export"))
        assert "rule no-credential-dumps" in str(denied.value.body)
        assert len(upstream.received) == 21


async def test_policy_change_applies_within_polling_plus_ttl_even_with_a_stale_table(
        sidecar_factory: SidecarFactory, cache_opa: Any, bundle_server: BundleServer) -> None:
    async with sidecar_factory(opa_url=cache_opa.url, namespace=CACHE_NS, decision_cache_ttl=1) as sc:
        sdk = anthropic.AsyncAnthropic(base_url=sc.url, api_key="placeholder", max_retries=0)
        prompt = "forecast for project bluebird"
        await sdk.messages.create(**ask(prompt))
        await asyncio.sleep(0.5)
        await sdk.messages.create(**ask(prompt))  # cached from here on

        new_rule = {"name": "no-bluebird", "action": "deny", "message": "Project Bluebird is embargoed",
                    "when": {"promptMatches": ["(?i)bluebird"]}}
        bundle_server.publish(CACHE_NS, policies([new_rule]))
        changed = time.monotonic()
        deadline = changed + 2.0 + 1.0 + 3.0  # OPA polls every 1-2 s; TTL 1 s; slack for a loaded box
        denied_after: float | None = None
        while time.monotonic() < deadline:
            try:
                await sdk.messages.create(**ask(prompt))
            except anthropic.PermissionDeniedError as error:
                assert "rule no-bluebird" in str(error.body)
                denied_after = time.monotonic() - changed
                break
            await asyncio.sleep(0.1)
        assert denied_after is not None, "the new deny rule never applied"

        # The sidecar learns the new table; from then on it matches "bluebird" itself.
        decider = sc.app[sidecar_app.SERVICES].decider
        for _ in range(50):
            if decider.patterns.count == 3:
                break
            await asyncio.sleep(0.1)
        table = sorted(["(?i)customer (list|export)", "(?i)(password|api[_ -]?key)s? (list|dump|export)",
                        "(?i)bluebird"])
        assert decider.patterns.match(prompt) == [str(table.index("(?i)bluebird"))]
        with pytest.raises(anthropic.PermissionDeniedError):
            await sdk.messages.create(**ask("BLUEBIRD again"))
        assert sc.sample("skillwarden_decisions_total", {"source": "opa"}) >= 2
