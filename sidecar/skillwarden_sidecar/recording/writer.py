"""The spool writer thread: the one place that touches the live stream's files.

    thread = SpoolThread(segment, loop, on_durable=..., on_failed=..., on_sealed=..., segment_max_bytes=...)
    future = thread.submit(encoded, moment)   # event loop; resolves with the seq once fsync'd
    await thread.call(fn)                      # runs fn in the thread after everything queued before

Group commit without extra hops: the event loop puts each encoded entry on a queue (no executor,
no task per batch); the thread takes *everything* queued, writes it with one write() and one
fdatasync(), and wakes the event loop with a single `call_soon_threadsafe` per batch, which sets
the futures of the whole batch. Adaptive by construction: when idle, the thread is blocked in
`get()` and an entry is written as soon as it arrives; while an fdatasync is in flight, new entries
queue up and share the next one.

Inline writes for fast devices: a thread hop costs ~40 µs of CPU on each side and ~80 µs of
latency. `probe()` measures the device at start (median of 16 appends + fdatasync); when that is
below INLINE_MAX_S (tmpfs: ~1 µs; this box's virtual disk: 1-2 ms) and nothing is queued,
`write_inline` writes the entry on the event loop instead: no queue, no future, no wake-up.
INLINE_GIVE_UP consecutive inline writes slower than INLINE_SLOW_S (a stalling device, not GIL
noise, which is sporadic) turn inline writing off for the rest of the stream.

Seals and digests go through the same queue (`call`), so they happen between two batches, in order;
`seal_for_digest` returns the objects sealed since the previous digest and the last durable
(seq, hash) from inside the thread, so a digest never names an entry or object it does not cover.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from skillwarden_sidecar.recording.digest import SealedObject
from skillwarden_sidecar.recording.entry import GENESIS_HASH, EncodedEntry
from skillwarden_sidecar.recording.spool import SegmentWriter

log = logging.getLogger("skillwarden.recording")

T = TypeVar("T")


@dataclass(slots=True)
class Pending:
    entry: EncodedEntry
    moment: datetime
    future: asyncio.Future[int]


@dataclass(slots=True)
class _Call:
    fn: Callable[[], Any]
    future: asyncio.Future[Any]


_STOP = object()
INLINE_MAX_S = 100e-6  # a thread hop's cost
INLINE_SLOW_S = 1e-3
INLINE_GIVE_UP = 3
PROBE_WRITES = 16

Durable = Callable[[list[Pending]], None]
Failed = Callable[[list[Pending], str], None]
Sealed = Callable[[Path, int, datetime | None], None]


class SpoolThread:
    def __init__(self, segment: SegmentWriter, loop: asyncio.AbstractEventLoop, *, segment_max_bytes: int,
                 on_durable: Durable, on_failed: Failed, on_sealed: Sealed, inline: bool = True) -> None:
        self.segment = segment
        self._loop = loop
        self._segment_max_bytes = segment_max_bytes
        self._on_durable = on_durable
        self._on_failed = on_failed
        self._on_sealed = on_sealed  # called in the thread (must be thread-safe)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # Items put on the queue whose completion the loop has not seen yet (event loop only).
        self._queued = 0
        self._inline = False  # until probe() found the device fast
        self._inline_allowed = inline
        self._slow_in_a_row = 0
        self.probe_seconds: float | None = None
        self.inline_writes = 0
        # Writer state: used by the writer thread, or by the event loop while nothing is queued
        # (the queue hand-off orders the two).
        self._broken: str | None = None
        self._last_seq = 0
        self._last_hash = GENESIS_HASH
        self._sealed_since_digest: list[SealedObject] = []
        self.batches = 0  # write+fdatasync calls (benchmark, tests)
        self._thread = threading.Thread(target=self._main, name="skillwarden-spool", daemon=True)
        self._thread.start()

    # -- event loop side ----------------------------------------------------------------------------
    def submit(self, entry: EncodedEntry, moment: datetime) -> asyncio.Future[int]:
        future: asyncio.Future[int] = self._loop.create_future()
        self._queued += 1
        self._queue.put(Pending(entry, moment, future))
        return future

    def write_inline(self, entry: EncodedEntry, moment: datetime) -> bool:
        """Event loop: write and fdatasync `entry` right here if the device is fast and nothing
        is queued ahead of it. True: it is durable. False: use `submit`. Raises OSError when the
        write failed (the writer is then broken, as after a failed batch)."""
        if self._queued or not self._inline or self._broken:
            return False
        started = time.perf_counter()
        self._write([entry.line], entry, entry, moment)
        self.inline_writes += 1
        if time.perf_counter() - started < INLINE_SLOW_S:
            self._slow_in_a_row = 0
        else:
            self._slow_in_a_row += 1
            if self._slow_in_a_row >= INLINE_GIVE_UP:
                self._inline = False
                log.warning("recording: the spool device got slow (%d writes over %.0f ms in a row); "
                            "writing on the spool thread from now on", self._slow_in_a_row,
                            INLINE_SLOW_S * 1e3)
        if self.segment.open_bytes >= self._segment_max_bytes:
            try:
                self._seal()
            except OSError as error:  # the entry is durable; later ones are refused
                self._broken = f"spool seal failed: {error}"
                log.error("recording: %s", self._broken)
        return True

    @property
    def broken(self) -> str | None:
        return self._broken

    @property
    def inline(self) -> bool:
        return self._inline

    async def probe(self, directory: Path) -> float:
        """Median seconds of a 1 KiB append + fdatasync in `directory` (the spool's device);
        decides whether appends may be written inline. Run before the first append."""
        seconds = await self.call(lambda: _probe(directory))
        self.probe_seconds = seconds
        self._inline = self._inline_allowed and seconds < INLINE_MAX_S
        return seconds

    async def call(self, fn: Callable[[], T]) -> T:
        future: asyncio.Future[T] = self._loop.create_future()
        self._queued += 1
        self._queue.put(_Call(fn, future))
        return await future

    async def seal(self) -> None:
        await self.call(self._seal)

    async def seal_for_digest(self) -> tuple[list[SealedObject], int, str]:
        """Seal the open segment; return (objects sealed since the last digest, last durable seq,
        its hash), all taken in the thread between two batches."""
        return await self.call(self._take_for_digest)

    async def stop(self, timeout_s: float = 10.0) -> None:
        self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join, timeout_s)

    # -- writer thread --------------------------------------------------------------------------------
    def _main(self) -> None:
        get, get_nowait = self._queue.get, self._queue.get_nowait
        while True:
            items = [get()]
            while True:
                try:
                    items.append(get_nowait())
                except queue.Empty:
                    break
            batch: list[Pending] = []
            for item in items:
                if type(item) is Pending:
                    batch.append(item)
                    continue
                if batch:
                    self._commit(batch)
                    batch = []
                if item is _STOP:
                    return
                self._run(item)
            if batch:
                self._commit(batch)

    def _post(self, count: int, callback: Callable[..., None], *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self._completed, count, callback, args)
        except RuntimeError:  # the loop is closed: nobody waits for this any more
            pass

    def _completed(self, count: int, callback: Callable[..., None], args: tuple[Any, ...]) -> None:
        self._queued -= count
        callback(*args)

    def _write(self, lines: list[bytes], first: EncodedEntry, last: EncodedEntry, moment: datetime) -> None:
        try:
            self.segment.write_batch(lines, first.seq, last.seq, moment)
        except OSError as error:
            self._broken = f"spool write failed: {error}"
            raise
        self.batches += 1
        self._last_seq, self._last_hash = last.seq, last.hash

    def _commit(self, batch: list[Pending]) -> None:
        if self._broken is not None:
            self._post(len(batch), self._on_failed, batch, self._broken)
            return
        try:
            self._write([p.entry.line for p in batch], batch[0].entry, batch[-1].entry, batch[0].moment)
        except OSError:
            self._post(len(batch), self._on_failed, batch, self._broken)
            return
        # Durable now: acknowledge before a size-triggered seal, whose failure must not un-ack them.
        self._post(len(batch), self._on_durable, batch)
        if self.segment.open_bytes >= self._segment_max_bytes:
            try:
                self._seal()
            except OSError as error:
                self._broken = f"spool seal failed: {error}"
                log.error("recording: %s", self._broken)

    def _run(self, call: _Call) -> None:
        try:
            result = call.fn()
        except BaseException as error:  # handed to the awaiting coroutine
            if isinstance(error, OSError) and self._broken is None:
                self._broken = f"spool write failed: {error}"
            self._post(1, _reject, call.future, error)
            return
        self._post(1, _resolve, call.future, result)

    def _seal(self) -> None:
        if self._broken is not None:
            # A failed write may have left a torn line: restart recovery seals the segment and
            # drops it; sealing it here would ship it.
            raise OSError(f"not sealing after a failure ({self._broken})")
        sealed = self.segment.seal(note=self._on_sealed)
        if sealed is not None:
            self._sealed_since_digest.append(sealed)

    def _take_for_digest(self) -> tuple[list[SealedObject], int, str]:
        self._seal()
        objects, self._sealed_since_digest = self._sealed_since_digest, []
        return objects, self._last_seq, self._last_hash


def _probe(directory: Path) -> float:
    path = directory / "fsync-probe.tmp"
    timings = []
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(PROBE_WRITES):
            started = time.perf_counter()
            os.write(descriptor, b"x" * 1024)
            os.fdatasync(descriptor)
            timings.append(time.perf_counter() - started)
    finally:
        os.close(descriptor)
        path.unlink()
    return statistics.median(timings)


def _resolve(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _reject(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
