"""Ask OPA. Build the decision input (CONTRACTS.md) from the parsed request; fail closed.

OPA is the injected `opa` container on loopback. Plain aiohttp with a pooled keep-alive session
and `orjson` is used rather than opa-python-client: it is one POST, needs no extra dependency, and
shares the event loop's connection pool. (Not measured head to head against opa-python-client;
the round trip measured about 1 ms p50 sequentially on the 2-core dev box, most of it OPA's own
evaluation.)

Calls in flight are bounded (`--opa-max-inflight`, default 4): under a burst the queue waits here,
in the sidecar, instead of inside OPA where every queued call would burn its `--opa-timeout` and
be refused together (docs/performance.md, finding 3). The decision deadline starts when a call is
dispatched; the wait for a slot is bounded separately by `OPA_QUEUE_TIMEOUT`, after which the
request is denied (fail closed, 503) saying the engine is saturated.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson

from skillwarden_sidecar.errors import Rejection, policy_unavailable
from skillwarden_sidecar.pipeline import Decision, Exchange
from skillwarden_sidecar.routes import Route

ACTIONS = frozenset({"allow", "deny", "require_approval"})
OPA_QUEUE_TIMEOUT = 2.0  # seconds a request may wait for a free decision slot


def _texts(content: Any) -> list[str]:
    """Text a human (or the model) reads: strings, text blocks, tool_result contents."""
    if isinstance(content, str):
        return [content]
    out: list[str] = []
    if isinstance(content, list):
        for block in content:
            if not isinstance(block, dict):
                continue
            kind = block.get("type")
            if kind == "text" and isinstance(block.get("text"), str):
                out.append(block["text"])
            elif kind == "tool_result":
                out.extend(_texts(block.get("content")))
    return out


def prompt_text(body: dict[str, Any]) -> str:
    parts = _texts(body.get("system"))
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                parts.extend(_texts(message.get("content")))
    return "\n".join(parts)


def request_skills(body: dict[str, Any]) -> list[dict[str, str]]:
    container = body.get("container")
    skills = container.get("skills") if isinstance(container, dict) else None
    out: list[dict[str, str]] = []
    if isinstance(skills, list):
        for skill in skills:
            if isinstance(skill, dict):
                out.append({"type": str(skill.get("type", "")), "skill_id": str(skill.get("skill_id", "")),
                            "version": str(skill.get("version", "latest"))})
    return out


def request_tools(body: dict[str, Any]) -> list[str]:
    tools = body.get("tools")
    names: list[str] = []
    if isinstance(tools, list):
        for tool in tools:
            if isinstance(tool, dict):
                name = tool.get("name") or tool.get("type")
                if isinstance(name, str):
                    names.append(name)
    return names


def build_input(exchange: Exchange, route: Route) -> dict[str, Any]:
    body = exchange.body or {}
    text = prompt_text(body)
    max_tokens = body.get("max_tokens")
    skills = request_skills(body)
    skill_id = route.param("skill_id")
    if skill_id:  # skills.* routes: the skill acted on is the path's
        skills = [{"type": "custom", "skill_id": skill_id, "version": route.param("version") or "latest"}]
    model = body.get("model")
    identity = exchange.identity
    return {
        "identity": identity.as_input() if identity else {"kind": "workload", "sub": "", "iss": "",
                                                          "groups": [], "email": ""},
        "workload": exchange.workload.as_input(),
        "request": {
            "method": exchange.method, "path": exchange.path, "operation": exchange.operation,
            "model": model if isinstance(model, str) else "",
            "stream": body.get("stream") is True,
            "max_tokens": max_tokens if type(max_tokens) is int else 0,
            "skills": skills, "tools": request_tools(body),
            "prompt_text": text, "prompt_chars": len(text),
        },
        "approval": {"id": exchange.approval.id, "state": exchange.approval.state},
    }


def parse_decision(result: Any) -> Decision:
    if not isinstance(result, dict) or result.get("action") not in ACTIONS:
        raise policy_unavailable("policy gave no decision (is the policy bundle loaded?); request denied")

    def mapping(name: str) -> dict[str, Any]:
        value = result.get(name)
        return value if isinstance(value, dict) else {}

    reasons = result.get("reasons")
    return Decision(
        action=result["action"],
        reasons=tuple(str(r) for r in reasons) if isinstance(reasons, list) else (),
        policy=result.get("policy") if isinstance(result.get("policy"), str) else None,
        rule=result.get("rule") if isinstance(result.get("rule"), str) else None,
        message=str(result.get("message") or ""),
        masking=mapping("masking"), recording=mapping("recording"), approval=mapping("approval"),
        bundle_revision=str(result.get("bundle_revision") or ""), raw=result)


class PolicyClient:
    def __init__(self, session: aiohttp.ClientSession, opa_url: str, decision_path: str,
                 timeout: float, max_inflight: int = 4,
                 queue_timeout: float = OPA_QUEUE_TIMEOUT) -> None:
        self._session = session
        self._slots = asyncio.Semaphore(max_inflight)
        self._max_inflight = max_inflight
        self._queue_timeout = queue_timeout
        self._data = f"{opa_url}/v1/data"
        self._url = f"{self._data}/{decision_path.strip('/')}"
        self._health = f"{opa_url}/health?bundles"
        self._budget = timeout

    async def _post(self, body: bytes, budget: float) -> tuple[int, bytes]:
        async with self._session.post(self._url, data=body, headers={"Content-Type": "application/json"},
                                      timeout=aiohttp.ClientTimeout(total=budget)) as response:
            return response.status, await response.read()

    async def decide(self, policy_input: dict[str, Any]) -> tuple[Decision, float]:
        """(decision, seconds from dispatch). Any failure to get a well-formed decision is a
        `Rejection`; waiting callers are served first come, first served (asyncio.Semaphore)."""
        body = orjson.dumps({"input": policy_input})
        try:
            async with asyncio.timeout(self._queue_timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise policy_unavailable(
                f"policy engine saturated: {self._max_inflight} decisions in flight and no slot freed "
                f"within {self._queue_timeout:g} s; request denied") from None
        try:
            return await self._dispatch(body)
        finally:
            self._slots.release()

    async def _dispatch(self, body: bytes) -> tuple[Decision, float]:
        started = time.perf_counter()  # the --opa-timeout budget counts from here, not from queueing
        try:
            try:
                status, payload = await self._post(body, self._budget)
            except aiohttp.ServerDisconnectedError:
                # A pooled keep-alive connection that OPA closed (e.g. the opa container restarted)
                # fails on reuse; a decision query has no side effects, so ask once more on a fresh
                # connection within what is left of the time bound.
                remaining = self._budget - (time.perf_counter() - started)
                if remaining <= 0:
                    raise TimeoutError from None
                status, payload = await self._post(body, remaining)
        except TimeoutError:
            raise policy_unavailable("policy engine did not answer in time; request denied") from None
        except aiohttp.ClientError:
            raise policy_unavailable("policy engine unreachable; request denied") from None
        elapsed = time.perf_counter() - started
        if status != 200:
            raise policy_unavailable(f"policy engine answered HTTP {status}; request denied")
        try:
            document = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise policy_unavailable("policy engine answered garbage; request denied") from None
        return parse_decision(document.get("result") if isinstance(document, dict) else None), elapsed

    async def fetch_data(self, path: str) -> Any:
        """A document from OPA's data API (e.g. the prompt pattern table). Every failure is a
        ValueError naming it: callers keep what they had."""
        url = f"{self._data}/{path.strip('/')}"
        budget = aiohttp.ClientTimeout(total=self._budget * 4)
        try:
            async with self._session.get(url, timeout=budget) as response:
                if response.status != 200:
                    raise ValueError(f"OPA answered HTTP {response.status} for {path}")
                document = orjson.loads(await response.read())
        except (aiohttp.ClientError, TimeoutError) as error:
            raise ValueError(f"OPA unreachable for {path} ({type(error).__name__})") from None
        except orjson.JSONDecodeError:
            raise ValueError(f"OPA answered garbage for {path}") from None
        if not isinstance(document, dict) or "result" not in document:
            raise ValueError(f"OPA has no document at {path} (is the policy bundle loaded?)")
        return document["result"]

    async def ready(self) -> bool:
        """OPA is up and every configured bundle is activated."""
        try:
            async with self._session.get(self._health, timeout=aiohttp.ClientTimeout(total=1)) as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False


def denial(decision: Decision) -> Rejection:
    """The 403 a client sees for `deny`: names the policy and rule, and says why."""
    where = f"policy {decision.policy or '(none)'}"
    if decision.rule:
        where += f", rule {decision.rule}"
    why = decision.message or "; ".join(decision.reasons) or "not permitted"
    details = {"policy": decision.policy, "rule": decision.rule, "reasons": list(decision.reasons)}
    return Rejection(403, f"denied by skillwarden ({where}): {why}", cause="policy_deny", details=details)
