"""The official SDK gets the same answers through the sidecar as from the upstream directly, and
the upstream sees the sidecar's real key, never the caller's credential."""

from __future__ import annotations

from typing import Any

import aiohttp
import anthropic
import pytest
from sidecar_support import REAL_KEY, SidecarFactory, SidecarHandle

from skillwarden_devstack.fake_claude import FakeClaude

CALLER_PLACEHOLDER = "sk-ant-caller-placeholder-must-not-travel"
MODEL = "claude-sonnet-4-6"


Client = anthropic.AsyncAnthropic


def clients(sidecar: SidecarHandle, upstream_url: str) -> tuple[Client, Client]:
    direct = anthropic.AsyncAnthropic(base_url=upstream_url, api_key=REAL_KEY, max_retries=0)
    via = anthropic.AsyncAnthropic(base_url=sidecar.url, api_key=CALLER_PLACEHOLDER, max_retries=0)
    return direct, via


def assert_upstream_saw_only_real_key(upstream: FakeClaude, secrets: list[str]) -> None:
    assert upstream.received, "the upstream received nothing"
    for received in upstream.received:
        assert received.headers.get("x-api-key") == REAL_KEY
        assert "Authorization" not in received.headers  # where the SDK put the caller's value
        flat = repr(received.headers) + received.body.decode("utf-8", "replace")
        for secret in secrets:
            assert secret not in flat


async def test_non_streaming_message_is_byte_identical(sidecar: SidecarHandle,
                                                       fake: tuple[FakeClaude, str]) -> None:
    upstream, url = fake
    direct, via = clients(sidecar, url)
    request: dict[str, Any] = {"model": MODEL, "max_tokens": 256,
                               "messages": [{"role": "user", "content": "Summarise Q3 revenue, please."}]}
    raw_direct = await direct.messages.with_raw_response.create(**request)
    upstream.received.clear()
    raw_via = await via.messages.with_raw_response.create(**request)
    assert raw_via.http_response.content == raw_direct.http_response.content
    assert (await raw_via.parse()).model_dump() == (await raw_direct.parse()).model_dump()
    assert raw_via.http_response.headers["request-id"] == raw_direct.http_response.headers["request-id"]
    assert raw_via.http_response.headers["x-skillwarden-request-id"].startswith("req_skw_")
    assert_upstream_saw_only_real_key(upstream, [CALLER_PLACEHOLDER])
    # anthropic-version from the SDK reached the upstream untouched.
    assert upstream.received[0].headers["anthropic-version"] == via.default_headers["anthropic-version"]


async def test_streaming_events_and_final_message_identical(sidecar: SidecarHandle,
                                                            fake: tuple[FakeClaude, str]) -> None:
    upstream, url = fake
    direct, via = clients(sidecar, url)
    request: dict[str, Any] = {"model": MODEL, "max_tokens": 256, "messages": [
        {"role": "user", "content": "Stream me a short sentence about ledgers and balance sheets."}]}

    async def run(client: anthropic.AsyncAnthropic) -> tuple[list[Any], Any]:
        async with client.messages.stream(**request) as stream:
            events = [event.model_dump() async for event in stream]
            final = await stream.get_final_message()
        return events, final.model_dump()

    direct_events, direct_final = await run(direct)
    upstream.received.clear()
    via_events, via_final = await run(via)
    assert via_events == direct_events and len(via_events) > 10
    assert via_final == direct_final
    assert via_final["content"][0]["text"].startswith("You said: Stream me")
    assert_upstream_saw_only_real_key(upstream, [CALLER_PLACEHOLDER])


async def test_raw_sse_bytes_are_identical(sidecar: SidecarHandle, fake: tuple[FakeClaude, str]) -> None:
    _upstream, url = fake
    body = {"model": MODEL, "max_tokens": 64, "stream": True,
            "messages": [{"role": "user", "content": "ü€ multi-byte characters split across chunks 𝄞"}]}
    headers = {"anthropic-version": "2023-06-01", "content-type": "application/json"}
    async with aiohttp.ClientSession() as http:
        direct_headers = {**headers, "x-api-key": REAL_KEY}
        async with http.post(f"{url}/v1/messages", json=body, headers=direct_headers) as r:
            direct = await r.read()
        async with http.post(f"{sidecar.url}/v1/messages", json=body, headers=headers) as r:
            assert r.headers["Content-Type"].startswith("text/event-stream")
            via = await r.read()
    assert via == direct
    assert "𝄞".encode() in via


async def test_tool_use_round_trip_identical(sidecar: SidecarHandle, fake: tuple[FakeClaude, str]) -> None:
    _upstream, url = fake
    direct, via = clients(sidecar, url)
    tools: list[Any] = [{"name": "get_weather", "description": "Weather for a city",
                         "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}}}]
    first: dict[str, Any] = {"model": MODEL, "max_tokens": 512, "tools": tools,
                             "messages": [{"role": "user", "content": "Weather in Zurich?"}]}
    answers = []
    for client in (direct, via):
        message = await client.messages.create(**first)
        tool_use = next(b for b in message.content if b.type == "tool_use")
        follow_up = {**first, "messages": [
            *first["messages"], {"role": "assistant", "content": [b.model_dump() for b in message.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use.id,
                                          "content": "12 degrees, light rain"}]}]}
        final = await client.messages.create(**follow_up)
        async with client.messages.stream(**first) as stream:
            streamed = await stream.get_final_message()
        answers.append((message.model_dump(), final.model_dump(), streamed.model_dump()))
    assert answers[0] == answers[1]
    message, final, streamed = answers[1]
    assert message["stop_reason"] == "tool_use"
    assert message["content"][1]["input"]["query"] == "Weather in Zurich?"
    assert streamed["content"][1]["input"] == message["content"][1]["input"]  # input_json_delta rebuilt
    assert final["content"][0]["text"] == "Tool said: 12 degrees, light rain"


async def test_container_skills_request_identical(sidecar: SidecarHandle,
                                                  fake: tuple[FakeClaude, str]) -> None:
    upstream, url = fake
    direct, via = clients(sidecar, url)
    request: dict[str, Any] = {
        "model": MODEL, "max_tokens": 1024,
        "betas": ["code-execution-2025-08-25", "skills-2025-10-02"],
        "container": {"skills": [{"type": "anthropic", "skill_id": "xlsx", "version": "latest"}]},
        "tools": [{"type": "code_execution_20250825", "name": "code_execution"}],
        "messages": [{"role": "user", "content": "Build a spreadsheet of Q3 revenue."}]}
    raw_direct = await direct.beta.messages.with_raw_response.create(**request)
    direct_query = upstream.received[0].query
    upstream.received.clear()
    raw_via = await via.beta.messages.with_raw_response.create(**request)
    assert raw_via.http_response.content == raw_direct.http_response.content
    parsed = await raw_via.parse()
    assert parsed.container is not None and parsed.container.skills[0].skill_id == "xlsx"
    seen = upstream.received[0]
    assert seen.headers["anthropic-beta"] == "code-execution-2025-08-25,skills-2025-10-02"
    assert seen.query == direct_query
    assert_upstream_saw_only_real_key(upstream, [CALLER_PLACEHOLDER])


async def test_count_tokens_and_models_pass(sidecar: SidecarHandle, fake: tuple[FakeClaude, str]) -> None:
    _upstream, url = fake
    direct, via = clients(sidecar, url)
    request: dict[str, Any] = {"model": MODEL,
                               "messages": [{"role": "user", "content": "count these tokens"}]}
    assert (await via.messages.count_tokens(**request)).model_dump() == \
        (await direct.messages.count_tokens(**request)).model_dump()
    models = [m.id async for m in via.models.list()]
    assert models == [m.id async for m in direct.models.list()] and MODEL in models


async def test_upstream_errors_pass_through(sidecar_factory: SidecarFactory,
                                            fake: tuple[FakeClaude, str]) -> None:
    upstream, url = fake
    from skillwarden_devstack.fake_claude import Fault
    async with sidecar_factory() as sidecar:
        _, via = clients(sidecar, url)
        upstream.faults.append(Fault(kind="status", status=529, message="Overloaded"))
        request: dict[str, Any] = {"model": MODEL, "max_tokens": 16,
                                   "messages": [{"role": "user", "content": "hi"}]}
        try:
            await via.messages.create(**request)
            raise AssertionError("expected an overloaded error")
        except anthropic.APIStatusError as error:
            assert error.status_code == 529
            assert error.body == {"type": "error",
                                  "error": {"type": "overloaded_error", "message": "Overloaded"}}
        # and the next request is served normally
        assert (await via.messages.create(**request)).content[0].type == "text"


async def test_mid_stream_overloaded_error_reaches_the_sdk_identically(sidecar: SidecarHandle,
                                                                      fake: tuple[FakeClaude, str]) -> None:
    from skillwarden_devstack.fake_claude import Fault
    upstream, url = fake
    direct, via = clients(sidecar, url)
    request: dict[str, Any] = {"model": MODEL, "max_tokens": 64,
                               "messages": [{"role": "user", "content": "a longer answer please"}]}
    outcomes = []
    for client in (direct, via):
        upstream.faults.append(Fault(kind="stream_error", status=529, after_events=5, message="Overloaded"))
        seen: list[Any] = []
        with pytest.raises(anthropic.APIStatusError) as failed:
            async with client.messages.stream(**request) as stream:
                async for event in stream:
                    seen.append(event.model_dump())
        outcomes.append((type(failed.value).__name__, failed.value.body, seen))
    assert outcomes[0] == outcomes[1]
    assert outcomes[1][1] == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert len(outcomes[1][2]) >= 3  # the events before the failure arrived, as they did directly
