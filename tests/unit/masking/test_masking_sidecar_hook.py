"""The sidecar hook: directions from the decision, counts per direction, record copies, errors."""

from __future__ import annotations

import argparse
import json
from typing import Any

import pytest

from skillwarden_sidecar.errors import Rejection
from skillwarden_sidecar.masking import sidecar_hook
from skillwarden_sidecar.masking.sidecar_hook import MaskingHook
from skillwarden_sidecar.masking.structured import MAX_DEPTH
from skillwarden_sidecar.pipeline import Decision, Exchange, Hooks, PassthroughStreamMasker, Workload
from skillwarden_sidecar.sse import SseEvent

MASKING = {"upstream": ["EMAIL_ADDRESS"], "client": ["CREDIT_CARD"], "operators": {"EMAIL_ADDRESS": "hmac"},
           "custom": [{"name": "EMPLOYEE_ID", "pattern": "EMP-[0-9]{6}"}]}


def exchange(body: dict[str, Any] | None, masking: dict[str, Any] | None = None) -> Exchange:
    decision = Decision("allow", (), "finance/p", None, "", MASKING if masking is None else masking, {}, {},
                        "sha256:x", {})
    return Exchange("req-1", 0.0, "POST", "/v1/messages", "", "messages.create",
                    Workload("finance", "pod", "sa"), body=body, decision=decision)


HOOK = MaskingHook(b"k" * 32, "key-1")


def test_request_is_masked_upstream_and_for_the_record() -> None:
    text = "jane@example.com EMP-123456 4111 1111 1111 1111"
    body = {"model": "m", "messages": [{"role": "user", "content": text}]}
    ex = exchange(json.loads(json.dumps(body)))
    HOOK.mask_request(ex)
    assert ex.body_modified
    assert ex.body is not None
    upstream_text = ex.body["messages"][0]["content"]
    assert upstream_text.startswith("<EMAIL_ADDRESS:hm_")
    assert "EMP-123456 4111 1111 1111 1111" in upstream_text
    record = HOOK.record_view(ex)
    record_text = record["request"]["messages"][0]["content"]
    assert "jane@" not in record_text and "[EMPLOYEE_ID]" in record_text and "[CREDIT_CARD]" in record_text
    assert record["hmac_key_id"] == "key-1" and record["counts"]["upstream"] == {"EMAIL_ADDRESS": 1}
    assert record["counts"]["record"] == {"EMAIL_ADDRESS": 1, "EMPLOYEE_ID": 1, "CREDIT_CARD": 1}


def test_nothing_to_mask_upstream_leaves_the_body_alone() -> None:
    ex = exchange({"messages": [{"role": "user", "content": "hello"}]})
    HOOK.mask_request(ex)
    assert not ex.body_modified


def test_response_masked_for_client_and_record() -> None:
    ex = exchange({"messages": []})
    body = {"content": [{"type": "text", "text": "card 4111 1111 1111 1111, mail jane@example.com"}]}
    masked = HOOK.mask_response_body(ex, body)
    assert masked["content"][0]["text"] == "card [CREDIT_CARD], mail jane@example.com"
    assert ex.masking_counts["client"] == {"CREDIT_CARD": 1}
    recorded = HOOK.record_view(ex)["response"]["content"][0]["text"]
    assert recorded.startswith("card [CREDIT_CARD], mail <EMAIL_ADDRESS:hm_") and "jane" not in recorded
    clean = {"content": [{"type": "text", "text": "nothing here"}]}
    assert HOOK.mask_response_body(ex, clean) is clean


def test_stream_masker_counts_into_the_exchange() -> None:
    ex = exchange({"messages": []})
    stream = HOOK.stream_masker(ex)
    stream.feed(SseEvent("content_block_start", json.dumps(
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})))
    out = stream.feed(SseEvent("content_block_delta", json.dumps(
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "text_delta", "text": "pay 4111 1111 1111 1111 now"}})))
    out += stream.close()
    assert "".join(json.loads(e.data)["delta"]["text"] for e in out) == "pay [CREDIT_CARD] now"
    assert ex.masking_counts["client"] == {"CREDIT_CARD": 1}
    assert isinstance(HOOK.stream_masker(exchange({}, {"upstream": ["US_SSN"]})), PassthroughStreamMasker)


def test_deep_request_is_refused_with_400() -> None:
    deep: Any = "x"
    for _ in range(MAX_DEPTH + 3):
        deep = [deep]
    ex = exchange({"messages": [{"role": "user", "content": [
        {"type": "tool_use", "id": "t", "name": "n", "input": {"a": deep}}]}]})
    with pytest.raises(Rejection) as caught:
        HOOK.mask_request(ex)
    assert caught.value.status == 400 and "deeper than" in caught.value.message


def test_bad_custom_pattern_in_decision_refuses() -> None:
    ex = exchange({"messages": []}, {"upstream": ["X"], "custom": [{"name": "X", "pattern": "(a+"}]})
    with pytest.raises(Rejection) as caught:
        HOOK.mask_request(ex)
    assert caught.value.status == 500 and caught.value.cause == "masking_config"


def test_install_from_flags(tmp_path: Any) -> None:
    parser = argparse.ArgumentParser()
    sidecar_hook.configure(parser)
    key = tmp_path / "key"
    key.write_bytes(b"0123456789abcdef0123456789abcdef\n")
    hooks = Hooks()
    sidecar_hook.install(parser.parse_args(["--masking-hmac-key-file", str(key)]), object(), hooks)
    assert isinstance(hooks.request_masking, MaskingHook) and hooks.response_masking is hooks.request_masking
    assert hooks.request_masking.key_id == sidecar_hook.key_id_for(b"0123456789abcdef0123456789abcdef")
    ephemeral = Hooks()
    sidecar_hook.install(parser.parse_args([]), object(), ephemeral)
    assert isinstance(ephemeral.request_masking, MaskingHook)
    assert ephemeral.request_masking.key_id.startswith("ephemeral-")
