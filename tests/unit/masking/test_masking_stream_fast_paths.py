"""The stream masker's shortcuts give what the general code gives: the ASCII hold-back equals the
byte-level one, and events built with kept wire bytes and a kept payload re-encode and re-parse to
exactly those."""

from __future__ import annotations

import dataclasses
import json

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from skillwarden_sidecar.masking import BUILTIN_ENTITIES, Masker, MaskingSpec
from skillwarden_sidecar.masking.custom import custom_detector
from skillwarden_sidecar.masking.stream import (
    StreamMasker,
    _compile_hold_rules,
    _hold_back_ascii,
    _hold_back_bytes,
    _hold_rules,
)
from skillwarden_sidecar.sse import SseEvent

ALL = Masker(MaskingSpec(BUILTIN_ENTITIES, hmac_key=b"test-key", hmac_key_id="k1"))
CUSTOM = [custom_detector("TICKET", r"(?i)tkt-[0-9]{4}|BEGIN:[a-z]+"), custom_detector("EMP", "EMP-[0-9]{6}")]
RULE_SETS = [
    _hold_rules(ALL),
    _compile_hold_rules(tuple((c.charset, c.prefixes, c.max_len) for c in CUSTOM)),
    *((rule,) for rule in _hold_rules(ALL)),
]
# ASCII text rich in what the rules look at: literal beginnings, digits, separators, e-mail parts.
PIECES = ["sk-", "sk", "-----BEGIN ", "-----BEG", "AKIA", "eyJ", "ghp_", "xox", "4111 ", "-", ".", "@",
          "a", "Z", "0", " ", "\n", "\t", "(", "+", ":", "_", "=", "%", "~", "TKT-", "EMP-", "EM",
          "x" * 40, "1" * 30]


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from(PIECES) | st.text(st.characters(max_codepoint=127), max_size=5),
                max_size=30),
       st.integers(0, len(RULE_SETS) - 1))
def test_ascii_hold_back_equals_byte_level(pieces: list[str], which: int) -> None:
    pending = "".join(pieces)
    rules = RULE_SETS[which]
    assert _hold_back_ascii(rules, pending) == _hold_back_bytes(rules, pending)


def test_ascii_charsets_match_the_detectors() -> None:
    rules = {rule.max_len: rule for rule in _hold_rules(ALL)}
    assert any(set(r.ascii_chars) == set("0123456789 -") for r in rules.values())  # US_SSN
    assert any("@" in r.ascii_chars and " " not in r.ascii_chars for r in rules.values())  # e-mail


def _delta(text: str) -> SseEvent:
    return SseEvent("content_block_delta", json.dumps(
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}))


def test_masker_output_keeps_wire_and_payload_true_to_its_fields() -> None:
    stream = StreamMasker(ALL)
    out = stream.feed(SseEvent("content_block_start", json.dumps(
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})))
    for piece in ["Mail jane.do", "e@example.com ", "now ü\u2028\"quoted\"\\ ", "card 4111 1111 ",
                  "1111 1111 done "]:
        out += stream.feed(_delta(piece))
    out += stream.feed(SseEvent("content_block_stop", '{"type":"content_block_stop","index":0}'))
    assert len(out) > 3
    for event in out:
        assert event.encode() == dataclasses.replace(event, wire=None).encode()
        assert event.json() == orjson.loads(event.data)
    text = "".join(e.json()["delta"]["text"] for e in out if e.event == "content_block_delta")
    assert "jane.doe@example.com" not in text and "4111 1111 1111 1111" not in text
    assert text.endswith("done ")


def test_ascii_hold_back_equals_byte_level_around_every_length_bound() -> None:
    fills = ["1", "a", " ", "-", "x@", "1 "]
    for rules in RULE_SETS:
        longest = max(rule.max_len for rule in rules)
        for fill in fills:
            for size in range(0, min(longest, 400) + 3):
                for head in ("", "sk-", "word ", "EMP-"):
                    pending = head + (fill * size)[:size]
                    assert _hold_back_ascii(rules, pending) == _hold_back_bytes(rules, pending), pending
