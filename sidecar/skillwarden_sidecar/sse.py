"""Incremental Server-Sent Events framing that survives arbitrary network chunking.

Modelled on httpx's `LineDecoder`: bytes arrive split anywhere (inside a line terminator, inside a
multi-byte UTF-8 character, across events); `feed` returns only complete events and keeps the
rest. UTF-8 is decoded incrementally so a character split across chunks is never mangled.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field


class SseError(ValueError):
    """The upstream stream is not a well-formed event stream (or an event is too large)."""


@dataclass
class SseEvent:
    event: str | None = None
    data: str = ""
    id: str | None = None
    retry: int | None = None
    comments: list[str] = field(default_factory=list)

    def encode(self) -> bytes:
        lines: list[str] = [f":{c}" for c in self.comments]
        if self.event is not None:
            lines.append(f"event: {self.event}")
        if self.id is not None:
            lines.append(f"id: {self.id}")
        if self.retry is not None:
            lines.append(f"retry: {self.retry}")
        lines.extend(f"data: {line}" for line in self.data.split("\n"))
        return ("\n".join(lines) + "\n\n").encode()


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

    def feed(self, chunk: bytes) -> list[SseEvent]:
        try:
            text = self._utf8.decode(chunk)
        except UnicodeDecodeError as error:
            raise SseError(f"event stream is not valid UTF-8: {error.reason}") from None
        return self._consume(text)

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
        return events

    def _consume(self, text: str) -> list[SseEvent]:
        events: list[SseEvent] = []
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
            return events
        if self._tail:
            self._tail.append(text)
            self._buffer += "".join(self._tail)
            self._tail = []
        else:
            self._buffer += text
        start = 0
        buffer = self._buffer
        length = len(buffer)
        while True:
            cr = buffer.find("\r", start)
            lf = buffer.find("\n", start)
            if cr == -1 and lf == -1:
                break
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
        self._buffer = buffer[start:]
        return events

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
        self._size = len(self._buffer)
