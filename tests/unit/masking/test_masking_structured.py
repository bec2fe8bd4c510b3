"""Structured masking of Messages API bodies: strings masked where users put text, the rest intact."""

from __future__ import annotations

import json
from typing import Any

import pytest

from skillwarden_sidecar.masking import Masker
from skillwarden_sidecar.masking.structured import (
    MAX_DEPTH,
    MaskingDepthError,
    mask_request_body,
    mask_response_body,
)

SSN = "536-22-8472"
MAIL = "jane@example.com"


def _request() -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "system": [{"type": "text", "text": f"Operator: {MAIL}", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": f"my ssn is {SSN}"},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "lookup",
                 "input": {"name": MAIL, "nested": [{"ssn": SSN}, 42, None, True]}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1",
                 "content": [{"type": "text", "text": f"found {MAIL}"}]},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": f"plain {SSN}"},
                {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                                "data": f"doc {SSN}"}},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": "QUtJQUlPU0ZPRE5ON0VYQU1QTEU="}},
            ]},
        ],
    }


def test_request_strings_are_masked_and_structure_kept(masker: Masker) -> None:
    body = _request()
    original = json.dumps(body)
    masked, counts = mask_request_body(masker, body)
    text = json.dumps(masked)
    assert SSN not in text and MAIL not in text
    assert counts == {"US_SSN": 4, "EMAIL_ADDRESS": 3}
    assert masked["system"][0] == {"type": "text", "text": "Operator: [EMAIL_ADDRESS]",
                                   "cache_control": {"type": "ephemeral"}}
    tool_use = masked["messages"][1]["content"][0]
    assert tool_use["id"] == "toolu_1" and tool_use["name"] == "lookup"
    assert tool_use["input"] == {"name": "[EMAIL_ADDRESS]", "nested": [{"ssn": "[US_SSN]"}, 42, None, True]}
    assert masked["messages"][2]["content"][1]["content"] == "plain [US_SSN]"
    assert masked["messages"][2]["content"][3] == body["messages"][2]["content"][3]  # image untouched
    assert json.dumps(body) == original  # the input object is not mutated
    assert masked["model"] == "claude-sonnet-4-5" and masked["max_tokens"] == 100


def test_system_as_string_and_metadata(masker: Masker) -> None:
    masked, counts = mask_request_body(masker, {"system": f"call {MAIL}", "messages": [],
                                                "metadata": {"user_id": MAIL}})
    assert masked["system"] == "call [EMAIL_ADDRESS]" and counts == {"EMAIL_ADDRESS": 2}
    assert masked["metadata"] == {"user_id": "[EMAIL_ADDRESS]"}


def test_response_content_text_tool_use_and_thinking(masker: Masker) -> None:
    body = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
            "content": [{"type": "thinking", "thinking": f"user is {MAIL}", "signature": "sig"},
                        {"type": "text", "text": f"SSN {SSN}"},
                        {"type": "tool_use", "id": "t", "name": "n", "input": {"to": MAIL}}],
            "usage": {"input_tokens": 1, "output_tokens": 2}}
    masked, counts = mask_response_body(masker, body)
    assert [b.get("thinking") or b.get("text") or b.get("input") for b in masked["content"]] == [
        "user is [EMAIL_ADDRESS]", "SSN [US_SSN]", {"to": "[EMAIL_ADDRESS]"}]
    assert masked["content"][0]["signature"] == "sig" and masked["usage"] == body["usage"]
    assert counts == {"EMAIL_ADDRESS": 2, "US_SSN": 1}


def test_clean_body_is_returned_unchanged(masker: Masker) -> None:
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]}
    masked, counts = mask_request_body(masker, body)
    assert masked == body and not counts
    assert masked["messages"][0] is body["messages"][0]  # nothing copied that did not change


def test_deep_json_is_refused_with_a_clear_error(masker: Masker) -> None:
    deep: Any = "x"
    for _ in range(MAX_DEPTH + 5):
        deep = {"k": deep}
    body = {"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                                        "content": [{"type": "text", "text": "a"}]},
                                                       {"type": "tool_use", "id": "t", "name": "n",
                                                        "input": deep}]}]}
    with pytest.raises(MaskingDepthError, match="deeper than 64 levels") as refused:
        mask_request_body(masker, body)
    assert str(refused.value).startswith("$.messages[0].content[1].input.k.k.k")  # names where
