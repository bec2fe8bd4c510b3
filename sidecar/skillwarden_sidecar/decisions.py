"""Getting a decision: prompt patterns matched here, OPA asked only for call shapes it has not just
answered.

Why a cache is sound: once the prompt patterns are matched in the sidecar (`prompt_patterns`), the
decision input carries no free text the Rego reads — `decision.prompt_patterns.matched_in ==
"sidecar"` is OPA's own statement that it did not read `prompt_text`. Two requests whose inputs
agree on everything else (identity, workload, route, model, stream, max_tokens, skills, tools,
matched pattern ids and table fingerprint) get the same decision from the same bundle. So the
answer is reused for `--decision-cache-ttl` seconds (default 1 s), keyed by exactly those fields,
and the whole cache is dropped as soon as any answer names another bundle revision. A policy change
therefore takes effect within OPA's bundle polling plus at most the TTL. Never cached: decisions
OPA made by reading the prompt, require_approval, and any input that carries an approval.
Concurrent misses of one key (a burst when an entry expires) wait for the first one's answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from skillwarden_sidecar.pipeline import Decision
from skillwarden_sidecar.policy import PolicyClient
from skillwarden_sidecar.prompt_patterns import UNKNOWN, PromptPatterns, compile_table

log = logging.getLogger("skillwarden.sidecar")

_FREE_TEXT = ("prompt_text", "prompt_chars")  # what the sidecar path of the Rego does not read
_CACHED_ACTIONS = frozenset({"allow", "deny"})


@dataclass(frozen=True)
class Outcome:
    decision: Decision
    seconds: float  # time spent asking OPA (0 for a cached answer)
    cached: bool


def cache_key(policy_input: dict[str, Any]) -> bytes | None:
    """Canonical bytes of everything the decision may depend on; None when it must not be cached."""
    approval = policy_input.get("approval") or {}
    if approval.get("id") or approval.get("state"):
        return None
    request = {k: v for k, v in policy_input.get("request", {}).items() if k not in _FREE_TEXT}
    return orjson.dumps({**policy_input, "request": request}, option=orjson.OPT_SORT_KEYS)


def reusable(decision: Decision, fingerprint: str) -> bool:
    """OPA says it matched with the table the sidecar used, so it read no prompt text."""
    patterns = decision.raw.get("prompt_patterns")
    return (decision.action in _CACHED_ACTIONS and isinstance(patterns, dict)
            and patterns.get("matched_in") == "sidecar" and patterns.get("fingerprint") == fingerprint)


class DecisionCache:
    """Bounded LRU of decisions with a time to live, tied to one bundle revision."""

    def __init__(self, ttl: float, size: int = 4096) -> None:
        self._ttl = ttl
        self._size = size
        self._entries: OrderedDict[bytes, tuple[float, Decision]] = OrderedDict()
        self._revision = ""

    @property
    def enabled(self) -> bool:
        return self._ttl > 0 and self._size > 0

    def get(self, key: bytes, now: float) -> Decision | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, decision = entry
        if now >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return decision

    def observe_revision(self, revision: str) -> None:
        """Any answer from another bundle revision invalidates every cached one."""
        if revision != self._revision:
            self._entries.clear()
            self._revision = revision

    def put(self, key: bytes, decision: Decision, now: float) -> None:
        if not self.enabled or decision.bundle_revision != self._revision:
            return
        self._entries[key] = (now + self._ttl, decision)
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class Decider:
    """Adds the matched prompt pattern ids to the input, answers from the cache when it may, and
    otherwise asks OPA. Learns the pattern table from OPA whenever an answer names a table other
    than the one it holds (refetched in the background; until then OPA matches, which is slower,
    never wrong)."""

    def __init__(self, client: PolicyClient, patterns_path: str, cache: DecisionCache,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._patterns_path = patterns_path
        self._cache = cache
        self._clock = clock
        self.patterns: PromptPatterns = UNKNOWN
        self._refresh: asyncio.Task[None] | None = None
        self._inflight: dict[bytes, asyncio.Future[Decision | None]] = {}

    def add_matches(self, policy_input: dict[str, Any]) -> None:
        request = policy_input["request"]
        table = self.patterns
        request["prompt_matches"] = {"fingerprint": table.fingerprint,
                                     "ids": table.match(request.get("prompt_text", ""))}

    async def decide(self, policy_input: dict[str, Any]) -> Outcome:
        self.add_matches(policy_input)
        fingerprint = policy_input["request"]["prompt_matches"]["fingerprint"]
        key = cache_key(policy_input) if self._cache.enabled else None
        if key is None:
            return await self._ask(policy_input, None, fingerprint)
        cached = self._cache.get(key, self._clock())
        if cached is not None:
            return Outcome(cached, 0.0, True)
        pending = self._inflight.get(key)
        if pending is not None:
            # The same call shape is being asked right now (a burst when an entry expired): wait
            # for that answer instead of queueing another identical query at OPA. Only an answer
            # OPA made without reading the prompt serves this request too; anything else (no
            # answer, a failure, an answer that read the prompt) and this request asks itself.
            answer = await asyncio.shield(pending)
            if answer is not None and reusable(answer, fingerprint):
                return Outcome(answer, 0.0, True)
        return await self._ask(policy_input, key, fingerprint)

    async def _ask(self, policy_input: dict[str, Any], key: bytes | None, fingerprint: str) -> Outcome:
        pending: asyncio.Future[Decision | None] | None = None
        if key is not None and key not in self._inflight:
            pending = self._inflight[key] = asyncio.get_running_loop().create_future()
        decision: Decision | None = None
        try:
            decision, seconds = await self._client.decide(policy_input)
        finally:
            if pending is not None and key is not None:
                del self._inflight[key]
                pending.set_result(decision)  # None when the call failed or was cancelled
        self._cache.observe_revision(decision.bundle_revision)
        if key is not None and reusable(decision, fingerprint):
            self._cache.put(key, decision, self._clock())
        self._learn_table(decision)
        return Outcome(decision, seconds, False)

    def _learn_table(self, decision: Decision) -> None:
        patterns = decision.raw.get("prompt_patterns")
        wanted = patterns.get("fingerprint") if isinstance(patterns, dict) else None
        if not isinstance(wanted, str) or wanted == self.patterns.fingerprint:
            return
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.create_task(self.refresh_patterns(), name="skillwarden-prompt-patterns")

    async def refresh_patterns(self) -> None:
        try:
            document = await self._client.fetch_data(self._patterns_path)
            # Off the loop: adding 10,000 patterns takes ~0.1 s of Python; RE2's final compile
            # still holds the GIL (~0.1 s at 10,000 patterns), once per changed table.
            self.patterns = await asyncio.to_thread(compile_table, document)
        except ValueError as error:
            # Kept the old table: OPA goes on matching prompts itself until a fetch succeeds.
            log.warning("prompt pattern table not refreshed: %s", error)

    async def close(self) -> None:
        if self._refresh is not None and not self._refresh.done():
            self._refresh.cancel()
            try:
                await self._refresh
            except asyncio.CancelledError:
                pass
