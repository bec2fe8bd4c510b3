"""Bad input: huge texts, pathological repetitions, invalid UTF-8, lone surrogates, deep JSON.
Every case ends in bounded time with either a correct mask, a fail-closed marker, or a clear error."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from skillwarden_sidecar.masking import BUILTIN_ENTITIES, Masker, MaskingSpec
from skillwarden_sidecar.masking.spec import BUDGET_MARKER
from skillwarden_sidecar.masking.stream import StreamMasker
from skillwarden_sidecar.masking.structured import mask_request_body
from skillwarden_sidecar.sse import SseDecoder, SseError, SseEvent

CARD = "4111 1111 1111 1111"
N = 50_000  # ~100 KB each: a large prompt; a megabyte behaves the same, only slower (bench/)
PATHOLOGICAL = {
    "digit_space_runs": "1 " * N,
    "digit_dash_runs": "4-" * N,
    "at_signs": "a@" * N,
    "dotted_local_part": "a." * N + "@x.io",
    "unterminated_private_key": "-----BEGIN PRIVATE KEY-----\n" + "A" * 2 * N,
    "jwt_headers": "eyJ." * N,
    "colons": ":" * 2 * N,
    "dotted_digits": "1." * N,
    "token_prefixes": "sk-" * N,
    "one_long_number": "4" * 2 * N,
    "iban_prefixes": "DE89 " * N,
    "astral_characters": "😀" * N,
}


@pytest.mark.parametrize("name", sorted(PATHOLOGICAL))
def test_pathological_input_is_bounded_and_never_leaks(masker: Masker, name: str) -> None:
    text = f"{CARD} {PATHOLOGICAL[name]} {CARD}"
    started = time.process_time()
    result = masker.mask_text(text)
    assert time.process_time() - started < masker.spec.max_scan_seconds + 1.0
    # Masked (perhaps inside a larger finding), or the whole text replaced (fail closed).
    assert CARD not in result.text and "1111" not in result.text


def test_huge_string_in_a_request_fails_closed_and_json_stays_valid() -> None:
    masker = Masker(MaskingSpec(BUILTIN_ENTITIES, max_text_bytes=1 << 20))
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "x" * (2 << 20)},
                                                      {"type": "text", "text": "a@b.io"}]}]}
    masked, counts = mask_request_body(masker, body)
    assert masked["messages"][0]["content"][0]["text"] == BUDGET_MARKER
    assert masked["messages"][0]["content"][1]["text"] == "[EMAIL_ADDRESS]"
    assert counts == {"MASKING_BUDGET_EXCEEDED": 1, "EMAIL_ADDRESS": 1}
    json.dumps(masked)


def test_huge_delta_in_a_stream_fails_closed() -> None:
    masker = Masker(MaskingSpec(BUILTIN_ENTITIES, max_text_bytes=1 << 20))
    stream = StreamMasker(masker)
    stream.feed(SseEvent("content_block_start", json.dumps(
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})))
    out = stream.feed(SseEvent("content_block_delta", json.dumps(
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "text_delta", "text": CARD + " " + "z" * (2 << 20)}})))
    assert [json.loads(e.data)["delta"]["text"] for e in out] == [BUDGET_MARKER]
    assert stream.counts == {"MASKING_BUDGET_EXCEEDED": 1}


def test_held_tail_is_bounded_in_memory(masker: Masker) -> None:
    stream = StreamMasker(masker)
    stream.feed(SseEvent("content_block_start", json.dumps(
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})))
    delta = json.dumps({"type": "content_block_delta", "index": 0,
                        "delta": {"type": "text_delta", "text": "A" * 50_000}})
    stream.feed(SseEvent("content_block_delta", json.dumps(
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "text_delta", "text": "-----BEGIN PRIVATE KEY-----\n"}})))
    released = []
    for _ in range(8):
        released += stream.feed(SseEvent("content_block_delta", delta))
    assert stream.held_chars <= 256 * 1024 + 50_000
    texts = [json.loads(e.data)["delta"]["text"] for e in released]
    assert texts and texts[0] == "[PRIVATE_KEY]"


def test_lone_surrogates_do_not_break_masking(masker: Masker) -> None:
    result = masker.mask_text("\ud800 mail jane@example.com \udfff")
    assert result.text == "\ud800 mail [EMAIL_ADDRESS] \udfff"


def test_invalid_utf8_in_an_event_stream_is_a_clear_error() -> None:
    decoder = SseDecoder()
    with pytest.raises(SseError, match="not valid UTF-8"):
        decoder.feed(b'event: content_block_delta\ndata: {"text": "\xff\xfe"}\n\n')


def test_deeply_nested_tool_input_stream_stays_bounded(masker: Masker) -> None:
    stream = StreamMasker(masker)
    stream.feed(SseEvent("content_block_start", json.dumps(
        {"type": "content_block_start", "index": 0,
         "content_block": {"type": "tool_use", "id": "t", "name": "n", "input": {}}})))
    depth = 50_000
    fragment = "[" * depth + '"jane@example.com"' + "]" * depth
    out: list[Any] = []
    for start in range(0, len(fragment), 4096):
        out += stream.feed(SseEvent("content_block_delta", json.dumps(
            {"type": "content_block_delta", "index": 0,
             "delta": {"type": "input_json_delta", "partial_json": fragment[start:start + 4096]}})))
    out += stream.feed(SseEvent("content_block_stop", '{"type": "content_block_stop", "index": 0}'))
    joined = "".join(json.loads(e.data)["delta"]["partial_json"] for e in out
                     if e.event == "content_block_delta")
    assert joined == "[" * depth + '"[EMAIL_ADDRESS]"' + "]" * depth
