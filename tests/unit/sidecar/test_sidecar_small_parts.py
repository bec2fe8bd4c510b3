"""Credentials, metric label bounds, credential extraction, error bodies, stream rebuilding."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from skillwarden_devstack.fake_claude import build_message, stream_events
from skillwarden_sidecar.credentials import ProviderKey, ProviderKeyError
from skillwarden_sidecar.errors import Rejection
from skillwarden_sidecar.identity import presented_token
from skillwarden_sidecar.message_stream import MessageAccumulator
from skillwarden_sidecar.metrics import BoundedLabel
from skillwarden_sidecar.sse import SseDecoder


def test_provider_key_rereads_on_change_and_never_shows_itself(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("sk-ant-one\n")
    now = [100.0]
    key = ProviderKey(path, recheck_seconds=1.0, clock=lambda: now[0])
    assert key.get() == "sk-ant-one"
    path.write_text("sk-ant-two-longer")
    os.utime(path, ns=(1, 1))
    assert key.get() == "sk-ant-one"  # within a second of the last check: not looked at again
    now[0] += 1.0
    assert key.get() == "sk-ant-two-longer"
    path.write_text("sk-ant-three")
    os.utime(path, ns=(2, 2))
    key.suspect()  # the upstream answered 401: the next call checks at once
    assert key.get() == "sk-ant-three"
    assert "sk-ant" not in repr(key)
    path.write_text("")
    now[0] += 1.0
    with pytest.raises(ProviderKeyError) as empty:
        key.get()
    assert "sk-ant" not in str(empty.value)
    path.unlink()
    assert not key.readable()  # a failed check is not remembered: every call checks until one works


def test_model_family() -> None:
    from skillwarden_sidecar.metrics import model_family
    assert model_family("claude-sonnet-4-5-20250929") == "claude-sonnet-4-5"
    assert model_family("claude-haiku-4-5-latest") == "claude-haiku-4-5"
    assert model_family("claude-sonnet-4-6") == "claude-sonnet-4-6"


def test_bounded_label() -> None:
    label = BoundedLabel(2)
    assert [label(v) for v in ("a", "b", "c", "a", "", "bad label!", "x" * 100)] == \
        ["a", "b", "other", "a", "none", "other", "other"]


@pytest.mark.parametrize(("headers", "expected"), [
    ({}, None),
    ({"x-api-key": "sk-ant-placeholder"}, None),
    ({"Authorization": "Bearer sk-ant-placeholder"}, None),
    ({"Authorization": "Bearer eyJa.eyJb.sig"}, "eyJa.eyJb.sig"),
    ({"x-api-key": "eyJa.eyJb.sig"}, "eyJa.eyJb.sig"),
    ({"x-api-key": "eyJa.eyJb."}, "eyJa.eyJb."),  # unsigned: still a token (and refused later)
    ({"Authorization": "Bearer eyJa.eyJb.sig", "x-api-key": "eyJa.eyJb.sig"}, "eyJa.eyJb.sig"),
])
def test_presented_token(headers: dict[str, str], expected: str | None) -> None:
    assert presented_token(headers) == expected


@pytest.mark.parametrize("headers", [{"Authorization": "Basic dXNlcjpwdw=="}, {"Authorization": "Bearer"},
                                     {"Authorization": "Bearer eyJa.eyJb.x", "x-api-key": "eyJc.eyJd.y"}])
def test_presented_token_refusals(headers: dict[str, str]) -> None:
    with pytest.raises(Rejection) as refused:
        presented_token(headers)
    assert refused.value.status == 401


def test_error_body_format() -> None:
    body = orjson.loads(Rejection(413, "too big", cause="too_large").body())
    assert body == {"type": "error", "error": {"type": "request_too_large", "message": "too big"}}


@pytest.mark.parametrize("request_body", [
    {"messages": [{"role": "user", "content": "plain text, with ünïcödé 𝄞"}]},
    {"messages": [{"role": "user", "content": "weather?"}], "tools": [{"name": "get_weather"}]},
    {"messages": [{"role": "user", "content": "think"}],
     "thinking": {"type": "enabled", "budget_tokens": 1024}},
    {"messages": [{"role": "user", "content": "xlsx"}],
     "container": {"skills": [{"type": "anthropic", "skill_id": "xlsx"}]}},
])
@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_accumulator_rebuilds_the_message_from_any_chunking(request_body: dict[str, Any], chunk: int) -> None:
    message = build_message(request_body)
    wire = b"".join(f"event: {n}\ndata: {orjson.dumps(d).decode()}\n\n".encode()
                    for n, d in stream_events(message))
    decoder, accumulator = SseDecoder(), MessageAccumulator()
    for i in range(0, len(wire), chunk):
        for event in decoder.feed(wire[i:i + chunk]):
            accumulator.add(event)
    for event in decoder.close():
        accumulator.add(event)
    assert accumulator.message == message


def _event(data: dict[str, Any]) -> Any:
    from skillwarden_sidecar.sse import SseEvent
    return SseEvent(event=str(data["type"]), data=orjson.dumps(data).decode())


def test_accumulator_is_linear_and_finishes_cut_streams() -> None:
    accumulator = MessageAccumulator()
    accumulator.add(_event({"type": "message_start", "message": {"id": "m", "content": [], "usage": {}}}))
    accumulator.add(_event({"type": "content_block_start", "index": 0,
                            "content_block": {"type": "text", "text": ""}}))
    piece = "x" * 1000
    started = time.perf_counter()
    for _ in range(20_000):  # 20 MB of text in 20k deltas
        accumulator.add(_event({"type": "content_block_delta", "index": 0,
                                "delta": {"type": "text_delta", "text": piece}}))
    accumulator.add(_event({"type": "content_block_start", "index": 1,
                            "content_block": {"type": "tool_use", "id": "t", "name": "n", "input": {}}}))
    accumulator.add(_event({"type": "content_block_delta", "index": 1,
                            "delta": {"type": "input_json_delta", "partial_json": '{"a": '}}))
    message = accumulator.finish()  # the stream was cut: no content_block_stop, no message_stop
    assert time.perf_counter() - started < 5
    assert message is not None and len(message["content"][0]["text"]) == 20_000_000
    assert message["content"][1]["input"] == {"_unparsed": '{"a": '}


async def test_service_account_identity_gets_kubernetes_groups() -> None:
    from skillwarden_sidecar.identity import TokenVerifier, TrustedIssuer
    from skillwarden_sidecar.jwks import JwksCache

    async def no_keys() -> dict[str, Any]:
        return {"keys": []}

    issuer = TrustedIssuer("serviceaccount", "https://k8s", ("skillwarden",), JwksCache(no_keys, 600, 30))
    verifier = TokenVerifier([issuer], ["RS256"], 30)
    identity = verifier._identity(issuer, {"sub": "system:serviceaccount:finance:bot",
                                           "kubernetes.io": {"namespace": "finance",
                                                             "serviceaccount": {"name": "bot", "uid": "u"}}})
    assert identity.sub == "system:serviceaccount:finance:bot" and identity.kind == "serviceaccount"
    assert identity.groups == ("system:serviceaccounts", "system:serviceaccounts:finance")
