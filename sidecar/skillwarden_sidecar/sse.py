"""Incremental Server-Sent Events framing that survives arbitrary network chunking.

Modelled on httpx's `LineDecoder`: bytes arrive split anywhere (inside a line terminator, inside a
multi-byte UTF-8 character, across events); `feed` returns only complete events and keeps the
rest. UTF-8 is decoded incrementally so a character split across chunks is never mangled; a
byte-order mark at the very start of the stream is dropped (WHATWG "UTF-8 decode").

Two paths, one result (tests/unit/sidecar/test_sidecar_sse_fast_path.py checks that both give the
same events for any chunking): when the decoder holds nothing and a chunk has no "\\r" — what
every real upstream sends — whole events are cut out of the bytes at b"\\n\\n" and each is decoded
once (the general path walks the text line by line in Python and was a quarter of the sidecar's
streaming CPU). Whatever follows the chunk's last b"\\n\\n", and any chunk with "\\r" or arriving
while a partial event is held, goes through the general, line-by-line path.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from typing import Any

import orjson

_BOM = b"\xef\xbb\xbf"


class SseError(ValueError):
    """The upstream stream is not a well-formed event stream (or an event is too large)."""


@dataclass(slots=True)
class SseEvent:
    event: str | None = None
    data: str = ""
    id: str | None = None
    retry: int | None = None
    comments: list[str] = field(default_factory=list)
    # (event, data, bytes): the bytes `encode()` would produce for exactly these `event`/`data`
    # objects, set by whoever already has them (the decoder's fast path, the stream masker). Valid
    # only while both attributes are still the very objects recorded: a hook that assigns a new
    # `data` is re-encoded, never bypassed.
    wire: tuple[str | None, str, bytes] | None = field(default=None, compare=False, repr=False)
    # (data, value): `data` already parsed as JSON by a producer, same validity rule.
    parsed: tuple[str, Any] | None = field(default=None, compare=False, repr=False)

    def encode(self) -> bytes:
        wire = self.wire
        if (wire is not None and wire[1] is self.data and wire[0] is self.event and self.id is None
                and self.retry is None and not self.comments):
            return wire[2]
        lines: list[str] = [f":{c}" for c in self.comments]
        if self.event is not None:
            lines.append(f"event: {self.event}")
        if self.id is not None:
            lines.append(f"id: {self.id}")
        if self.retry is not None:
            lines.append(f"retry: {self.retry}")
        lines.extend(f"data: {line}" for line in self.data.split("\n"))
        return ("\n".join(lines) + "\n\n").encode()

    def json(self) -> Any:
        """`data` as JSON (raises `orjson.JSONDecodeError`); no re-parse when a producer attached it.
        The value may be shared with that producer: read it, do not edit it."""
        parsed = self.parsed
        if parsed is not None and parsed[0] is self.data:
            return parsed[1]
        return orjson.loads(self.data)


class SseDecoder:
    """bytes -> complete `SseEvent`s, per the WHATWG event-stream grammar."""

    def __init__(self, max_event_bytes: int = 4 * 1024 * 1024) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="strict")
        self._buffer = ""
        self._tail: list[str] = []  # pieces of an unterminated line, joined when it ends
        self._pending_cr = False
        self._current = SseEvent()
        self._data_lines: list[str] = []
        self._has_fields = False
        self._size = 0
        self._max = max_event_bytes
        self._at_start = True  # nothing decoded yet: a BOM here is dropped
        self._idle = True  # the general path holds nothing (no text, no partial event, no UTF-8 bytes)

    def feed(self, chunk: bytes) -> list[SseEvent]:
        if b"\r" in chunk:
            return self._consume(self._decode(chunk))
        events: list[SseEvent] = []
        if not self._idle:
            # A partial event is held: the line-by-line path takes the chunk up to its first blank
            # line, which ends that event, so the rest can take the fast path (chunks that split
            # events would otherwise keep a stream on the slow path for good).
            cut = chunk.find(b"\n\n")
            if cut == -1:
                return self._consume(self._decode(chunk))
            events = self._consume(self._decode(chunk[:cut + 2]))
            chunk = chunk[cut + 2:]
            if not self._idle or not chunk:
                if chunk:
                    events.extend(self._consume(self._decode(chunk)))
                return events
        if self._at_start and chunk:
            if chunk.startswith(_BOM):
                chunk = chunk[3:]
                self._at_start = False
            elif not _BOM.startswith(chunk):
                self._at_start = False
        if self._at_start:  # nothing, or the beginning of a BOM: the decoder keeps it
            events.extend(self._consume(self._decode(chunk)))
        else:
            events.extend(self._feed_fast(chunk))
        return events

    def close(self) -> list[SseEvent]:
        """End of stream: a final event without its blank line is still dispatched."""
        try:
            text = self._utf8.decode(b"", final=True)
        except UnicodeDecodeError as error:
            raise SseError(f"event stream ends inside a UTF-8 character: {error.reason}") from None
        events = self._consume(text)
        if self._tail:
            self._buffer += "".join(self._tail)
            self._tail = []
        if self._buffer:
            self._line(self._buffer, events)
            self._buffer = ""
        self._dispatch(events)
        self._idle = True
        return events

    def _decode(self, chunk: bytes) -> str:
        try:
            return self._utf8.decode(chunk)
        except UnicodeDecodeError as error:
            raise SseError(f"event stream is not valid UTF-8: {error.reason}") from None

    def _feed_fast(self, chunk: bytes) -> list[SseEvent]:
        end = chunk.rfind(b"\n\n")
        if end == -1:
            return self._consume(self._decode(chunk))
        events: list[SseEvent] = []
        for block in chunk[:end].split(b"\n\n"):
            if len(block) > self._max:
                raise SseError(f"an event exceeds {self._max} bytes")
            try:
                text = block.decode()
            except UnicodeDecodeError as error:
                raise SseError(f"event stream is not valid UTF-8: {error.reason}") from None
            # The shape every Anthropic event has: "event: NAME\ndata: ONE LINE". Its bytes are
            # exactly what `encode()` gives back, so they are kept for relaying it unchanged.
            if text.startswith("event: "):
                newline = text.find("\n")
                if (newline != -1 and text.startswith("data: ", newline + 1)
                        and text.find("\n", newline + 1) == -1):
                    event = SseEvent(text[7:newline], text[newline + 7:])
                    event.wire = (event.event, event.data, block + b"\n\n")
                    events.append(event)
                    continue
            for line in text.split("\n"):
                self._line(line, events)
            self._dispatch(events)
        rest = chunk[end + 2:]
        if rest:
            events.extend(self._consume(self._decode(rest)))
        return events

    def _consume(self, text: str) -> list[SseEvent]:
        events: list[SseEvent] = []
        if self._at_start and text:
            self._at_start = False
            if text.startswith("\ufeff"):
                text = text[1:]
        if self._pending_cr and text.startswith("\n"):
            text = text[1:]  # the "\n" of a "\r\n" that was split across chunks
        self._pending_cr = False
        self._size += len(text)
        if self._size > self._max:
            raise SseError(f"an event exceeds {self._max} bytes")
        if "\n" not in text and "\r" not in text:
            # Still inside one line: keep the piece, join once the line ends (a long line arriving
            # in many chunks would otherwise be re-copied and re-scanned per chunk: quadratic).
            if text:
                self._tail.append(text)
            self._set_idle()
            return events
        if self._tail:
            self._tail.append(text)
            buffer = self._buffer + "".join(self._tail)
            self._tail = []
        else:
            buffer = self._buffer + text
        if "\r" not in buffer:
            lines = buffer.split("\n")
            self._buffer = lines.pop()
            for line in lines:
                self._line(line, events)
            self._set_idle()
            return events
        start = 0
        length = len(buffer)
        cr = buffer.find("\r")
        lf = buffer.find("\n")
        while cr != -1 or lf != -1:
            end = lf if cr == -1 else cr if lf == -1 else min(cr, lf)
            line = buffer[start:end]
            if buffer[end] == "\r":
                if end + 1 < length and buffer[end + 1] == "\n":
                    start = end + 2
                elif end + 1 == length:
                    self._pending_cr = True
                    start = end + 1
                else:
                    start = end + 1
            else:
                start = end + 1
            self._line(line, events)
            # Each terminator is searched for once, not once per line (no rescan of a long tail).
            if cr != -1 and cr < start:
                cr = buffer.find("\r", start)
            if lf != -1 and lf < start:
                lf = buffer.find("\n", start)
        self._buffer = buffer[start:]
        self._set_idle()
        return events

    def _set_idle(self) -> None:
        if self._size == 0:  # an event ended in this text: what counts now is what is left over
            self._size = len(self._buffer)
        self._idle = (not self._buffer and not self._tail and not self._pending_cr and not self._has_fields
                      and not self._utf8.getstate()[0])

    def _line(self, line: str, events: list[SseEvent]) -> None:
        if line == "":
            self._dispatch(events)
            return
        if line.startswith(":"):
            self._current.comments.append(line[1:])
            self._has_fields = True
            return
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        self._has_fields = True
        if name == "data":
            self._data_lines.append(value)
        elif name == "event":
            self._current.event = value
        elif name == "id":
            self._current.id = value
        elif name == "retry" and value.isdigit():
            self._current.retry = int(value)

    def _dispatch(self, events: list[SseEvent]) -> None:
        if self._has_fields:
            self._current.data = "\n".join(self._data_lines)
            events.append(self._current)
            self._current = SseEvent()
            self._data_lines = []
            self._has_fields = False
        self._size = 0
