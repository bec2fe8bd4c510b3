"""The SSE stream masker: split secrets are caught, hold-back is small, JSON fragments stay JSON."""

from __future__ import annotations

import json
from typing import Any

from skillwarden_sidecar.masking import BUILTIN_ENTITIES, Masker, MaskingSpec
from skillwarden_sidecar.masking.stream import StreamMasker, json_escape
from skillwarden_sidecar.sse import SseEvent


def ev(kind: str, payload: dict[str, Any]) -> SseEvent:
    return SseEvent(event=kind, data=json.dumps(payload))


def text_stream(pieces: list[str], kind: str = "text") -> list[SseEvent]:
    delta_type, field = {"text": ("text_delta", "text"), "thinking": ("thinking_delta", "thinking"),
                         "tool_use": ("input_json_delta", "partial_json")}[kind]
    block: dict[str, Any] = {"type": kind, kind: ""}
    if kind == "tool_use":
        block = {"type": kind, "id": "toolu_1", "name": "send", "input": {}}
    events = [ev("message_start", {"type": "message_start", "message": {"id": "msg", "type": "message",
                                                                         "role": "assistant", "content": [],
                                                                         "model": "m", "usage": {}}}),
              ev("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block})]
    events += [ev("content_block_delta", {"type": "content_block_delta", "index": 0,
                                          "delta": {"type": delta_type, field: p}}) for p in pieces]
    events += [ev("content_block_stop", {"type": "content_block_stop", "index": 0}),
               ev("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                    "usage": {"output_tokens": 3}}),
               ev("message_stop", {"type": "message_stop"})]
    return events


def run(masker: Masker, events: list[SseEvent]) -> tuple[list[SseEvent], StreamMasker]:
    stream = StreamMasker(masker)
    out: list[SseEvent] = []
    for event in events:
        out.extend(stream.feed(event))
    out.extend(stream.close())
    return out, stream


def joined(events: list[SseEvent], field: str) -> str:
    parts = []
    for event in events:
        if event.event == "content_block_delta":
            parts.append(json.loads(event.data)["delta"].get(field, ""))
    return "".join(parts)


def test_card_spelled_across_deltas_is_masked(masker: Masker) -> None:
    pieces = ["Card: 4", "111 11", "11 1111 ", "1111, ok"]
    out, stream = run(masker, text_stream(pieces))
    text = joined(out, "text")
    assert text == "Card: [CREDIT_CARD], ok"
    assert stream.counts == {"CREDIT_CARD": 1}
    for event in out:
        assert "1111 1111" not in event.data and "4111" not in event.data


def test_hold_back_is_only_the_last_word_of_prose(masker: Masker) -> None:
    stream = StreamMasker(masker)
    for event in text_stream(["Hello there, how are you tod"])[:3]:
        stream.feed(event)
    assert stream.held_chars == len("tod")


def test_secret_prefix_is_held_until_decided(masker: Masker) -> None:
    stream = StreamMasker(masker)
    events = text_stream(["token: sk", "-ant-api03-" + "Ab1_" * 10, "Ab1_" * 15 + "AA done"])
    emitted: list[str] = []
    for event in events:
        emitted.append(joined(stream.feed(event), "text"))
    assert emitted[2] == "token: " and emitted[3] == "" and emitted[4] == "[API_KEY] "
    assert "".join(emitted) == "token: [API_KEY] done"


def test_event_sequence_is_preserved(masker: Masker) -> None:
    events = text_stream(["a@b.co", "m is it"])
    out, _ = run(masker, events)
    kinds = [e.event for e in out]
    assert kinds == ["message_start", "content_block_start", "content_block_delta", "content_block_delta",
                     "content_block_stop", "message_delta", "message_stop"]
    assert joined(out, "text") == "[EMAIL_ADDRESS] is it"


def test_thinking_deltas_are_masked(masker: Masker) -> None:
    out, _ = run(masker, text_stream(["user ssn 536-2", "2-8472 noted"], kind="thinking"))
    assert joined(out, "thinking") == "user ssn [US_SSN] noted"


def test_tool_input_json_fragments_stay_valid_json(masker: Masker) -> None:
    pieces = ['{"to": "ja', 'ne\\u0040exam', 'ple.com", "note": "say \\"hi\\"\\n', ' 536-22-8472", "n": 3}']
    out, stream = run(masker, text_stream(pieces, kind="tool_use"))
    document = json.loads(joined(out, "partial_json"))
    assert document == {"to": "[EMAIL_ADDRESS]", "note": 'say "hi"\n [US_SSN]', "n": 3}
    assert stream.counts == {"EMAIL_ADDRESS": 1, "US_SSN": 1}


def test_split_surrogate_escape_and_keys_untouched(masker: Masker) -> None:
    pieces = ['{"jane@example.com": "\\ud83d', '\\ude00 ok"}']
    out, _ = run(masker, text_stream(pieces, kind="tool_use"))
    assert json.loads(joined(out, "partial_json")) == {"jane@example.com": "😀 ok"}


def test_other_events_pass_unchanged(masker: Masker) -> None:
    stream = StreamMasker(masker)
    ping = SseEvent(event="ping", data='{"type": "ping"}')
    error = SseEvent(event="error", data='{"type": "error", "error": {"type": "overloaded_error"}}')
    assert stream.feed(ping) == [ping] and stream.feed(error) == [error]


def test_stream_without_block_stop_is_flushed_on_close() -> None:
    masker = Masker(MaskingSpec(BUILTIN_ENTITIES))
    events = text_stream(["mail jane@example.com"])[:3]
    out, _ = run(masker, events)
    assert joined(out, "text") == "mail [EMAIL_ADDRESS]"


def test_json_escape_round_trips() -> None:
    text = 'q"b\\s\n\t\x01😀'
    assert json.loads(f'"{json_escape(text)}"') == text


def test_unnamed_events_are_judged_by_their_payload(masker: Masker) -> None:
    stream = StreamMasker(masker)
    stream.feed(SseEvent(None, json.dumps({"type": "content_block_start", "index": 0,
                                           "content_block": {"type": "text", "text": ""}})))
    out = stream.feed(SseEvent(None, json.dumps({"type": "content_block_delta", "index": 0,
                                                 "delta": {"type": "text_delta", "text": "536-22-8472 ok"}})))
    out += stream.close()
    assert joined(out, "text") == "[US_SSN] ok"


def test_custom_pattern_with_literal_prefix_holds_back_only_around_it() -> None:
    from skillwarden_sidecar.masking import CustomPattern

    masker = Masker(MaskingSpec(frozenset({"EMPLOYEE_ID"}),
                                custom=[CustomPattern("EMPLOYEE_ID", "EMP-[0-9]{6}")]))
    stream = StreamMasker(masker)
    events = text_stream(["staff 1234 5678 id EM", "P-0042", "11 ok"])
    emitted = [joined(stream.feed(e), "text") for e in events]
    assert emitted[2] == "staff 1234 5678 id "  # digits alone cannot start a match: not held
    assert emitted[3] == "" and "".join(emitted) == "staff 1234 5678 id [EMPLOYEE_ID] ok"


def test_delta_without_index_is_masked_whole(masker: Masker) -> None:
    stream = StreamMasker(masker)
    out = stream.feed(ev("content_block_delta", {"type": "content_block_delta",
                                                 "delta": {"type": "text_delta", "text": "ssn 536-22-8472"}}))
    assert [json.loads(e.data)["delta"]["text"] for e in out] == ["ssn [US_SSN]"]


def test_multi_block_reply_thinking_text_and_tool_use(masker: Masker) -> None:
    from skillwarden_devstack import fake_claude

    body = {"model": "m", "thinking": {"type": "enabled", "budget_tokens": 1024},
            "tools": [{"name": "lookup", "input_schema": {"type": "object"}}],
            "messages": [{"role": "user", "content": "card 4111 1111 1111 1111 and jane@example.com"}]}
    message = fake_claude.build_message(body)
    source = [SseEvent(name, json.dumps(data)) for name, data in fake_claude.stream_events(message, 1)]
    out, stream = run(masker, source)
    text = "".join(e.data for e in out)
    assert "4111" not in text and "jane@" not in text
    blocks: dict[int, str] = {}
    for event in out:
        payload = json.loads(event.data)
        if event.event == "content_block_delta":
            delta = payload["delta"]
            blocks[payload["index"]] = blocks.get(payload["index"], "") + delta.get(
                "text", delta.get("thinking", delta.get("partial_json", "")))
    assert json.loads(blocks[2]) == {"query": "card [CREDIT_CARD] and [EMAIL_ADDRESS]", "limit": 3}
    assert [e.event for e in out if e.event != "content_block_delta"] == [
        e.event for e in source if e.event != "content_block_delta"]
    signature = [json.loads(e.data)["delta"] for e in out if '"signature_delta"' in e.data]
    assert signature and signature[0]["signature"].startswith("sig_")
    assert stream.counts == {"CREDIT_CARD": 1, "EMAIL_ADDRESS": 1}
