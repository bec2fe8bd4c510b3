"""Streaming masker for Anthropic SSE: masks deltas as they pass, holding back only what could
still become part of a match.

Why not mask each delta alone: a card number spelled across three deltas would pass in pieces.
Why not re-scan after sending: the first half is already gone. So each content block keeps a
pending tail. After every delta the tail is scanned; the part before the *hold-back point* is
final and leaves masked, the rest waits for more text. For each detector the hold-back point is
the start of the longest suffix made only of characters a match can contain (its `charset`),
bounded by the detector's `max_len`, and — for detectors whose matches begin with known literals
("-----BEGIN ", "sk-", "eyJ", "AKIA" ...) — moved forward to the first place such a literal (or a
beginning of one) occurs. A candidate starting before that point cannot grow with more text, so it
is final; a finding that reaches past the point is held whole (overlapping findings merge, so it
could still grow). Ordinary prose is held back only by its last word. At most MAX_HELD_CHARS are
held per block; past that the tail is masked as it stands and released.

`input_json_delta` carries fragments of a JSON document: string values are decoded (escapes
included, even when split between fragments), masked as text streams, and re-encoded, so the
concatenated `partial_json` stays valid JSON. Replacements contain no character that needs escaping.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Container, Iterable
from dataclasses import dataclass, field
from typing import Any, AnyStr

import orjson
import re2

from skillwarden_sidecar.masking.detectors import compile_re2
from skillwarden_sidecar.masking.engine import Masker, MaskingBudgetExceeded, to_char_spans
from skillwarden_sidecar.masking.spec import BUDGET_ENTITY, BUDGET_MARKER
from skillwarden_sidecar.masking.structured import mask_json
from skillwarden_sidecar.sse import SseEvent

_UNANCHORED = re2._Anchor.UNANCHORED
_CONTEXT_CHARS = 12  # validators look at most ten characters to the left of a candidate
MAX_HELD_CHARS = 256 * 1024


@dataclass(frozen=True)
class _HoldRule:
    suffix: re2._Regexp  # the longest run of characters a match can contain, at the end
    max_len: int
    prefixes: tuple[bytes, ...]
    beginnings: frozenset[bytes] = frozenset()  # proper prefixes of the literals
    longest: int = 0
    # The same, for ASCII-only text (the common case): the ASCII characters `suffix` accepts (for
    # str.rstrip, which finds the run in C without a regex call) and the literals as str.
    ascii_chars: str = ""
    text_prefixes: tuple[str, ...] = ()
    text_beginnings: frozenset[str] = frozenset()


def _hold_rules(masker: Masker) -> tuple[_HoldRule, ...]:
    return _compile_hold_rules(tuple((d.charset, d.prefixes, d.max_len) for d in masker.detectors))


@functools.lru_cache(maxsize=64)
def _compile_hold_rules(detectors: tuple[tuple[str, tuple[str, ...], int], ...]) -> tuple[_HoldRule, ...]:
    rules: dict[tuple[str, tuple[str, ...]], int] = {}
    for charset, prefixes, max_len in detectors:
        key = (charset, prefixes)
        rules[key] = max(rules.get(key, 0), max_len)
    out: list[_HoldRule] = []
    for (charset, prefixes), max_len in rules.items():
        suffix = compile_re2(f"{charset}*\\z")
        # A charset is one RE2 character class, so a character is in it iff the suffix pattern
        # matches that character alone from its start: same engine, same semantics.
        ascii_chars = "".join(chr(code) for code in range(128)
                              if suffix._regexp.Match(_UNANCHORED, bytes([code]), 0, 1)[0][0] == 0)
        out.append(_HoldRule(
            suffix, max_len, tuple(p.encode() for p in prefixes),
            frozenset(p.encode()[:k] for p in prefixes for k in range(1, len(p))),
            max((len(p) for p in prefixes), default=0), ascii_chars, prefixes,
            frozenset(p[:k] for p in prefixes for k in range(1, len(p)))))
    return tuple(out)


def hold_back_start(rules: tuple[_HoldRule, ...], pending: str) -> int:
    """Index into `pending` from which text must wait for more input."""
    if pending.isascii():
        return _hold_back_ascii(rules, pending)
    return _hold_back_bytes(rules, pending)


def _hold_back_bytes(rules: tuple[_HoldRule, ...], pending: str) -> int:
    buf = pending.encode("utf-8", "surrogatepass")
    size = len(buf)
    ascii_only = size == len(pending)
    start = size  # in bytes from here on; every position used lies on a character boundary
    for rule in rules:
        region = rule.suffix._regexp.Match(_UNANCHORED, buf, 0, size)[0][0]
        if region < 0:
            region = size
        if len(pending) > rule.max_len:
            bound = len(pending) - rule.max_len
            if not ascii_only:
                bound = len(pending[:bound].encode("utf-8", "surrogatepass"))
            region = max(region, bound)
        if region >= start:
            continue
        if not rule.prefixes:
            start = region
            continue
        start = min(start, _literal_point(buf, region, size, rule.prefixes, rule.beginnings, rule.longest))
    if ascii_only or start == size:
        return start if ascii_only else len(pending)
    return len(buf[:start].decode("utf-8", "surrogatepass"))


def _hold_back_ascii(rules: tuple[_HoldRule, ...], pending: str) -> int:
    """`hold_back_start` for ASCII-only text, where characters are bytes: the same steps on the
    str, with the run of charset characters at the end found by `str.rstrip`."""
    size = len(pending)
    start = size
    for rule in rules:
        region = len(pending.rstrip(rule.ascii_chars)) if rule.ascii_chars else size
        if size > rule.max_len:
            region = max(region, size - rule.max_len)
        if region >= start:
            continue
        if not rule.prefixes:
            start = region
            continue
        start = min(start, _literal_point(pending, region, size, rule.text_prefixes, rule.text_beginnings,
                                          rule.longest))
    return start


def _literal_point(text: AnyStr, region: int, size: int, prefixes: Iterable[AnyStr],
                   beginnings: Container[AnyStr], longest: int) -> int:
    """Where, in text[region:size], the first literal prefix of a rule starts — or the beginning
    of one at the very end, which may still become the literal; `size` when neither."""
    point = size
    for prefix in prefixes:
        found = text.find(prefix, region, point)
        if found != -1:
            point = found
    for length in range(min(longest - 1, size - region), 0, -1):
        if size - length < point and text[size - length:] in beginnings:
            return size - length
    return point


class TextStream:
    """Incremental masking of one growing text."""

    def __init__(self, masker: Masker, rules: tuple[_HoldRule, ...], counts: Counter[str]) -> None:
        self._masker = masker
        self._rules = rules
        self._counts = counts
        self._pending = ""
        self._context = ""

    @property
    def held(self) -> int:
        return len(self._pending)

    def push(self, text: str) -> str:
        self._pending += text
        return self._emit(final=False)

    def flush(self) -> str:
        return self._emit(final=True)

    def _emit(self, final: bool) -> str:
        pending = self._pending
        if not pending:
            return ""
        context = self._context
        buf = (context + pending).encode("utf-8", "surrogatepass")
        try:
            if len(buf) > self._masker.spec.max_text_bytes:
                raise MaskingBudgetExceeded(f"a delta of {len(buf)} bytes exceeds the masking budget")
            spans = self._masker.find_bytes(buf, len(context.encode("utf-8", "surrogatepass")))
        except MaskingBudgetExceeded:
            # Mid-stream there is no refusing any more (headers are gone): always fail closed.
            self._counts[BUDGET_ENTITY] += 1
            self._pending = ""
            self._context = ""
            return BUDGET_MARKER
        if len(buf) != len(context) + len(pending):
            spans = to_char_spans(buf, spans)
        shift = len(context)
        if len(pending) > MAX_HELD_CHARS:
            final = True  # bounded memory: past this, what is held leaves masked as it stands
        cut = len(pending) if final else hold_back_start(self._rules, pending)
        emit_to = cut
        chosen = []
        for start, end, detector in spans:
            start, end = start - shift, end - shift
            if start >= cut:
                break
            if end > cut:
                emit_to = start  # a finding reaching into the held tail may still grow: hold it whole
                break
            chosen.append((start, end, detector))
        if emit_to == 0:
            return ""
        out = self._masker.render(pending[:emit_to], chosen)
        for _, _, detector in chosen:
            self._counts[detector.entity] += 1
        self._context = (context + pending[:emit_to])[-_CONTEXT_CHARS:]
        self._pending = pending[emit_to:]
        return out


def json_escape(text: str) -> str:
    """The inside of a JSON string literal (quotes, backslashes, controls, lone surrogates escaped)."""
    out: list[str] = []
    for char in text:
        code = ord(char)
        if char == '"':
            out.append('\\"')
        elif char == "\\":
            out.append("\\\\")
        elif code < 0x20 or 0xD800 <= code <= 0xDFFF:
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char, f"\\u{code:04x}"))
        else:
            out.append(char)
    return "".join(out)


_SIMPLE_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


class JsonStream:
    """Masks string values inside a JSON document that arrives in fragments."""

    def __init__(self, masker: Masker, rules: tuple[_HoldRule, ...], counts: Counter[str]) -> None:
        self._masker = masker
        self._rules = rules
        self._counts = counts
        self._stack: list[str] = []  # "{" or "["
        self._expect_key = False
        self._in_string = False
        self._is_key = False
        self._escape = ""  # an escape sequence seen so far ("\\", "\\u00", ...)
        self._high_surrogate: int | None = None
        self._text: TextStream | None = None

    def push(self, fragment: str) -> str:
        out: list[str] = []
        decoded: list[str] = []
        for char in fragment:
            if not self._in_string:
                self._structural(char, out)
                continue
            if self._is_key:
                out.append(char)
                if self._escape:
                    self._escape = ""
                elif char == "\\":
                    self._escape = "\\"
                elif char == '"':
                    self._in_string = False
                continue
            if self._escape:
                self._escape += char
                self._decode_escape(decoded)
            elif char == "\\":
                self._escape = "\\"
            elif char == '"':
                self._end_string(decoded, out)
            else:
                self._take(char, decoded)
        if self._in_string and not self._is_key and decoded:
            out.append(json_escape(self._stream().push("".join(decoded))))
        return "".join(out)

    def flush(self) -> str:
        """End of the block: whatever is still held is emitted masked (malformed JSON stays so)."""
        if self._text is None:
            return ""
        tail = self._text.flush()
        return json_escape(tail)

    def _stream(self) -> TextStream:
        if self._text is None:
            self._text = TextStream(self._masker, self._rules, self._counts)
        return self._text

    def _structural(self, char: str, out: list[str]) -> None:
        out.append(char)
        if char == '"':
            self._in_string = True
            self._is_key = bool(self._stack) and self._stack[-1] == "{" and self._expect_key
            if not self._is_key:
                self._text = None
                self._stream()
        elif char in "{[":
            self._stack.append(char)
            self._expect_key = char == "{"
        elif char in "}]":
            if self._stack:
                self._stack.pop()
            self._expect_key = False
        elif char == ",":
            self._expect_key = bool(self._stack) and self._stack[-1] == "{"
        elif char == ":":
            self._expect_key = False

    def _take(self, char: str, decoded: list[str]) -> None:
        if self._high_surrogate is not None:
            decoded.append(chr(self._high_surrogate))  # a lone high surrogate stays as it was
            self._high_surrogate = None
        decoded.append(char)

    def _decode_escape(self, decoded: list[str]) -> None:
        escape = self._escape
        if escape[1] != "u":
            self._escape = ""
            self._take(_SIMPLE_ESCAPES.get(escape[1], escape[1]), decoded)
            return
        if len(escape) < 6:
            return
        self._escape = ""
        try:
            code = int(escape[2:], 16)
        except ValueError:
            self._take("\ufffd", decoded)
            return
        if 0xDC00 <= code <= 0xDFFF and self._high_surrogate is not None:
            decoded.append(chr(0x10000 + ((self._high_surrogate - 0xD800) << 10) + (code - 0xDC00)))
            self._high_surrogate = None
        elif 0xD800 <= code <= 0xDBFF:
            if self._high_surrogate is not None:
                decoded.append(chr(self._high_surrogate))
            self._high_surrogate = code
        else:
            self._take(chr(code), decoded)

    def _end_string(self, decoded: list[str], out: list[str]) -> None:
        if self._high_surrogate is not None:
            decoded.append(chr(self._high_surrogate))
            self._high_surrogate = None
        stream = self._stream()
        text = stream.push("".join(decoded)) + stream.flush()
        decoded.clear()
        out.append(json_escape(text))
        out.append('"')
        self._in_string = False
        self._text = None


_DELTA_FIELD = {"text_delta": "text", "thinking_delta": "thinking", "input_json_delta": "partial_json"}
_BLOCK_DELTA = {"text": "text_delta", "thinking": "thinking_delta", "tool_use": "input_json_delta",
                "server_tool_use": "input_json_delta"}  # fmt: skip


@dataclass
class _Block:
    delta_type: str
    stream: TextStream | JsonStream


@dataclass
class StreamMasker:
    """Feed it decoded `SseEvent`s in order; it returns the events to send (masked)."""

    masker: Masker
    counts: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._rules = _hold_rules(self.masker)
        self._blocks: dict[int, _Block] = {}

    @property
    def held_chars(self) -> int:
        """Characters currently held back across open blocks (for latency metrics and tests)."""
        return sum(b.stream._text.held if isinstance(b.stream, JsonStream) and b.stream._text
                   else b.stream.held if isinstance(b.stream, TextStream) else 0
                   for b in self._blocks.values())  # fmt: skip

    def feed(self, event: SseEvent) -> list[SseEvent]:
        kind = event.event
        if kind is None and event.data.lstrip().startswith("{"):
            # An event without a name is still judged by its payload's type: no unmasked side door.
            try:
                sniffed = orjson.loads(event.data)
            except orjson.JSONDecodeError:
                sniffed = None
            if isinstance(sniffed, dict) and isinstance(sniffed.get("type"), str):
                kind = sniffed["type"]
                event = SseEvent(event=kind, data=event.data, id=event.id, retry=event.retry,
                                 comments=event.comments)
        if kind not in _MASKED_KINDS:
            return [event]
        if kind == "message_stop":
            return [*self._flush_all(), event]
        try:
            payload = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            return [] if kind == "content_block_delta" else [event]  # unmaskable text is not passed on
        if not isinstance(payload, dict):
            return [event]
        if kind == "message_start":
            message = payload.get("message")
            if isinstance(message, dict) and message.get("content"):
                message["content"] = mask_json(self.masker, message["content"], self.counts)
                return [_event(kind, payload)]
            return [event]
        index = payload.get("index")
        if not isinstance(index, int):
            # Malformed (no block index): no stream state to use, so mask the payload whole.
            return [_event(kind, mask_json(self.masker, payload, self.counts))]
        if kind == "content_block_start":
            return self._start(index, payload)
        if kind == "content_block_delta":
            return self._delta(index, payload)
        event.parsed = (event.data, payload)  # relayed unchanged: the stream rebuild need not re-parse it
        return [*self._flush(index), event]

    def close(self) -> list[SseEvent]:
        """End of the upstream stream: anything still held leaves masked."""
        return self._flush_all()

    def _start(self, index: int, payload: dict[str, Any]) -> list[SseEvent]:
        out: list[SseEvent] = [*self._flush(index)]
        block = payload.get("content_block")
        if isinstance(block, dict):
            delta_type = _BLOCK_DELTA.get(str(block.get("type")))
            if delta_type is not None:
                stream: TextStream | JsonStream = (
                    JsonStream(self.masker, self._rules, self.counts) if delta_type == "input_json_delta"
                    else TextStream(self.masker, self._rules, self.counts)
                )  # fmt: skip
                self._blocks[index] = _Block(delta_type, stream)
            payload["content_block"] = mask_json(self.masker, block, self.counts)
        out.append(_event("content_block_start", payload))
        return out

    def _delta(self, index: int, payload: dict[str, Any]) -> list[SseEvent]:
        delta = payload.get("delta")
        if not isinstance(delta, dict):
            return [_event("content_block_delta", payload)]
        delta_type = str(delta.get("type"))
        field_name = _DELTA_FIELD.get(delta_type)
        if field_name is None:  # signature_delta, citations_delta ...: no stream state, mask whole
            payload["delta"] = mask_json(self.masker, delta, self.counts)
            return [_event("content_block_delta", payload)]
        block = self._blocks.get(index)
        if block is None or block.delta_type != delta_type:
            block = self._blocks[index] = _Block(
                delta_type,
                JsonStream(self.masker, self._rules, self.counts) if delta_type == "input_json_delta"
                else TextStream(self.masker, self._rules, self.counts),
            )  # fmt: skip
        value = delta.get(field_name)
        text = block.stream.push(value if isinstance(value, str) else "")
        if not text:
            return []
        return [_delta_event(index, delta_type, field_name, text)]

    def _flush(self, index: int) -> list[SseEvent]:
        block = self._blocks.pop(index, None)
        if block is None:
            return []
        text = block.stream.flush()
        if not text:
            return []
        return [_delta_event(index, block.delta_type, _DELTA_FIELD[block.delta_type], text)]

    def _flush_all(self) -> list[SseEvent]:
        out: list[SseEvent] = []
        for index in sorted(self._blocks):
            out.extend(self._flush(index))
        return out


_MASKED_KINDS = frozenset({"message_start", "content_block_start", "content_block_delta",
                           "content_block_stop", "message_stop"})
_WIRE_PREFIX = {kind: b"event: " + kind.encode() + b"\ndata: " for kind in _MASKED_KINDS}


def _event(kind: str, payload: dict[str, Any]) -> SseEvent:
    # Built with its wire bytes (orjson output is one line, so they are what `encode()` would give)
    # and its payload, which the stream rebuild reads instead of parsing the JSON again.
    data = orjson.dumps(payload)
    text = data.decode()
    event = SseEvent(kind, text)
    event.wire = (kind, text, _WIRE_PREFIX[kind] + data + b"\n\n")
    event.parsed = (text, payload)
    return event


def _delta_event(index: int, delta_type: str, field_name: str, text: str) -> SseEvent:
    return _event("content_block_delta", {"type": "content_block_delta", "index": index,
                                          "delta": {"type": delta_type, field_name: text}})
