"""SseDecoder: any chunking yields the same events; long lines cost linear time."""

from __future__ import annotations

import itertools
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skillwarden_sidecar.sse import SseDecoder, SseError, SseEvent

WIRE = ("event: message_start\r\ndata: {\"a\": \"ü€𝄞\"}\r\n\r\n"
        ": keep-alive comment\n\n"
        "event: content_block_delta\ndata: line one\ndata: line two\nid: 7\nretry: 100\n\n"
        "event: ping\rdata: {}\r\r"
        "data: last event without a blank line").encode()


def decode(chunks: list[bytes]) -> list[SseEvent]:
    decoder = SseDecoder()
    events = [e for chunk in chunks for e in decoder.feed(chunk)]
    return events + decoder.close()


EXPECTED = decode([WIRE])


def test_whole_stream() -> None:
    assert [(e.event, e.data) for e in EXPECTED] == [
        ("message_start", '{"a": "ü€𝄞"}'), (None, ""), ("content_block_delta", "line one\nline two"),
        ("ping", "{}"), (None, "last event without a blank line")]
    assert EXPECTED[1].comments == [" keep-alive comment"]
    assert EXPECTED[2].id == "7" and EXPECTED[2].retry == 100


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(WIRE)), max_size=20))
def test_any_chunking_gives_the_same_events(cuts: list[int]) -> None:
    points = sorted({0, len(WIRE), *cuts})
    chunks = [WIRE[a:b] for a, b in itertools.pairwise(points)]
    assert decode(chunks) == EXPECTED


def test_long_line_in_small_chunks_is_linear() -> None:
    payload = b"data: " + b"x" * 3_000_000 + b"\n\n"
    started = time.perf_counter()
    events = decode([payload[i:i + 512] for i in range(0, len(payload), 512)])
    assert time.perf_counter() - started < 3
    assert len(events) == 1 and len(events[0].data) == 3_000_000


def test_oversized_event_and_bad_utf8_are_errors() -> None:
    decoder = SseDecoder(max_event_bytes=1000)
    with pytest.raises(SseError):
        for _ in range(20):
            decoder.feed(b"data: " + b"y" * 100)
    with pytest.raises(SseError):
        SseDecoder().feed(b"data: \xff\n\n")
