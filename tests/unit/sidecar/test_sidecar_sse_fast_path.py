"""SseDecoder's bytes-level fast path gives exactly the events of the line-by-line path and of a
plain reference parser, for any stream and any chunking; kept wire bytes equal `encode()`."""

from __future__ import annotations

import dataclasses
import itertools
import re
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from skillwarden_sidecar.sse import SseDecoder, SseEvent


def reference(wire: bytes) -> list[SseEvent]:
    """The WHATWG event-stream algorithm, written the obvious way over the whole stream."""
    text = wire.decode()
    text = text.removeprefix("\ufeff")
    lines = re.split(r"\r\n|\r|\n", text)
    events: list[SseEvent] = []
    current, seen = SseEvent(), False
    data: list[str] = []
    for number, line in enumerate(lines):
        last = number == len(lines) - 1
        if line == "" and not last:
            if seen:
                current.data = "\n".join(data)
                events.append(current)
            current, data, seen = SseEvent(), [], False
            continue
        if line == "":
            continue
        seen = True
        if line.startswith(":"):
            current.comments.append(line[1:])
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            current.event = value
        elif name == "id":
            current.id = value
        elif name == "retry" and value.isdigit():
            current.retry = int(value)
    if seen:  # the stream ended without the blank line: still an event (as SseDecoder.close)
        current.data = "\n".join(data)
        events.append(current)
    return events


class LineByLine(SseDecoder):
    """The general path only (the fast path switched off)."""

    def feed(self, chunk: bytes) -> list[SseEvent]:
        return self._consume(self._decode(chunk))


def decode(decoder: SseDecoder, chunks: list[bytes]) -> list[SseEvent]:
    events = [e for chunk in chunks for e in decoder.feed(chunk)]
    return events + decoder.close()


VALUE = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"), max_size=12)
NAME = st.sampled_from(["content_block_delta", "message_start", "ping", "", " spaced", "é:𝄞"])
FIELD = st.one_of(
    st.builds(lambda v: f"data: {v}", VALUE), st.builds(lambda v: f"data:{v}", VALUE),
    st.builds(lambda v: f"event: {v}", NAME), st.builds(lambda v: f":{v}", VALUE),  # comment
    st.builds(lambda v: f"id: {v}", VALUE), st.builds(lambda v: f"retry: {v}", st.integers(0, 9999)),
    st.just("retry: x"), st.just("data"), st.just("unknown: field"),
)
EVENT = st.lists(FIELD, min_size=0, max_size=4)
EOL = st.sampled_from(["\n", "\n", "\n", "\r\n", "\r"])


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    bom = draw(st.sampled_from(["", "", "\ufeff"]))
    uniform = draw(st.booleans())  # mostly "\n" only: the fast path's case
    eol = "\n" if uniform else None
    out = [bom]
    for fields in draw(st.lists(EVENT, max_size=6)):
        for line in fields:
            out.append(line + (eol or draw(EOL)))
        out.append(eol or draw(EOL))
    if draw(st.booleans()):
        out.append(draw(st.sampled_from(["data: no blank line", "event: cut", ": tail comment"])))
    return "".join(out).encode()


@st.composite
def chunked(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    wire = draw(streams())
    cuts = draw(st.lists(st.integers(0, len(wire)), max_size=12))
    points = sorted({0, len(wire), *cuts})
    return wire, [wire[a:b] for a, b in itertools.pairwise(points)]


@settings(max_examples=1500, deadline=None)
@given(chunked())
def test_fast_path_equals_line_by_line_and_reference(case: tuple[bytes, list[bytes]]) -> None:
    wire, chunks = case
    expected = reference(wire)
    fast = decode(SseDecoder(), chunks)
    assert fast == expected
    assert decode(LineByLine(), chunks) == expected
    assert decode(SseDecoder(), [wire]) == expected
    for event in fast:  # bytes kept for relaying must be exactly the re-encoding
        if event.wire is not None:
            assert event.wire[2] == dataclasses.replace(event, wire=None).encode()


def test_anthropic_shaped_stream_takes_the_fast_path_in_any_chunking() -> None:
    wire = b"".join(b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
                    b'"delta":{"type":"text_delta","text":"tok %d \xc3\xbc"}}\n\n' % i for i in range(50))
    # Events are 123 bytes: with 1000-byte chunks most arrive whole after a split one, and the
    # decoder gets back onto the fast path after each split (measured: 44 of 50; 300 B: 30).
    for size, at_least in ((len(wire), 50), (1000, 40), (300, 25), (97, 0), (7, 0)):
        events = decode(SseDecoder(), [wire[i:i + size] for i in range(0, len(wire), size)])
        assert len(events) == 50
        assert events[49].data.endswith('"tok 49 ü"}}')
        assert sum(1 for e in events if e.wire is not None) >= at_least
        assert b"".join(e.encode() for e in events) == wire


def test_edited_event_is_re_encoded_not_relayed_from_kept_bytes() -> None:
    [event] = SseDecoder().feed(b"event: content_block_delta\ndata: secret EMP-123456\n\n")
    assert event.wire is not None
    event.data = event.data.replace("EMP-123456", "[EMPLOYEE_ID]")
    assert event.encode() == b"event: content_block_delta\ndata: secret [EMPLOYEE_ID]\n\n"
    event.event = "renamed"
    event.data = "x"
    assert event.encode() == b"event: renamed\ndata: x\n\n"


def test_bom_only_at_the_start_and_split_across_chunks() -> None:
    assert decode(SseDecoder(), [b"\xef", b"\xbb", b"\xbfdata: a\n\n"]) == [SseEvent(data="a")]
    assert decode(SseDecoder(), [b"\xef\xbb\xbfdata: a\n\n\xef\xbb\xbfdata: b\n\n"]) == [
        SseEvent(data="a"), SseEvent(data="")]  # later, a BOM is part of a field name: "\ufeffdata"


def test_many_lines_in_one_chunk_with_cr_is_linear() -> None:
    # A "\r" forces the line-by-line path; each terminator must be searched for once, not once
    # per line over the whole remaining buffer (that was quadratic: 0.06 s for 20,000 lines,
    # 0.19 s for 40,000, so ~19 s for this chunk; now ~0.3 s).
    payload = b"data: x\r" + b"data: yyyyyyyyyy\n" * 400_000 + b"\n"
    started = time.process_time()
    events = SseDecoder(max_event_bytes=16 << 20).feed(payload)
    assert time.process_time() - started < 3
    assert len(events) == 1 and events[0].data.count("\n") == 400_000
