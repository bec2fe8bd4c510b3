"""The spool writer thread (group commit, ordering, failures) and inline writes on a fast device."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from skillwarden_sidecar.recording import writer as writer_module
from skillwarden_sidecar.recording.entry import (
    GENESIS_HASH,
    EncodedEntry,
    decode_line,
    encode_entry,
    timestamp,
)
from skillwarden_sidecar.recording.samples import request_record
from skillwarden_sidecar.recording.spool import SegmentWriter, Spool
from skillwarden_sidecar.recording.writer import Pending, SpoolThread

STREAM = "finance/report-7f9c/20261124T000000.000000Z-deadbeef"
NOW = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
SHM = Path("/dev/shm")


class Harness:
    def __init__(self, spool_dir: Path, *, inline: bool, segment_max_bytes: int = 1 << 22) -> None:
        self.spool = Spool(spool_dir)
        self.segment = SegmentWriter(self.spool, STREAM)
        self.durable: list[int] = []
        self.failed: list[tuple[int, str]] = []
        self.sealed: list[tuple[Path, int]] = []
        self.thread = SpoolThread(self.segment, asyncio.get_running_loop(),
                                  segment_max_bytes=segment_max_bytes, on_durable=self._durable,
                                  on_failed=self._failed, on_sealed=self._sealed, inline=inline)
        self.seq, self.head = 0, GENESIS_HASH

    def _durable(self, batch: list[Pending]) -> None:
        for pending in batch:
            self.durable.append(pending.entry.seq)
            pending.future.set_result(pending.entry.seq)

    def _failed(self, batch: list[Pending], reason: str) -> None:
        for pending in batch:
            self.failed.append((pending.entry.seq, reason))
            pending.future.set_exception(RuntimeError(reason))

    def _sealed(self, path: Path, size: int, _opened: datetime | None) -> None:
        self.sealed.append((path, size))

    def entry(self) -> EncodedEntry:
        self.seq += 1
        encoded = encode_entry(STREAM, self.seq, self.head, "request", NOW, request_record(f"x-{self.seq}"))
        self.head = encoded.hash
        return encoded

    def lines_on_disk(self) -> list[int]:
        seqs = []
        for path in sorted(self.segment.directory.rglob("*.jsonl")):
            seqs += [decode_line(line).seq for line in path.read_bytes().splitlines(keepends=True)]
        return seqs


@pytest.fixture
async def disk(tmp_path: Path) -> AsyncIterator[Harness]:
    harness = Harness(tmp_path / "spool", inline=True)
    await harness.thread.probe(tmp_path)
    yield harness
    await harness.thread.stop()


async def test_concurrent_submits_share_one_write_and_are_acked_in_order(disk: Harness) -> None:
    disk.thread._inline = False  # what a disk gets (its fdatasync is ~1 ms): the thread path
    futures = [disk.thread.submit(disk.entry(), NOW) for _ in range(200)]
    assert await asyncio.gather(*futures) == list(range(1, 201))
    assert disk.durable == list(range(1, 201))
    assert disk.thread.batches <= 10, disk.thread.batches  # group commit, not one fsync each
    assert disk.lines_on_disk() == list(range(1, 201))


async def test_calls_run_in_order_and_a_digest_sees_exactly_what_was_written(disk: Harness) -> None:
    disk.thread._inline = False
    first = [disk.thread.submit(disk.entry(), NOW) for _ in range(5)]
    digest = asyncio.ensure_future(disk.thread.seal_for_digest())
    await asyncio.sleep(0)  # the call is queued behind the first five, ahead of the next three
    later = [disk.thread.submit(disk.entry(), NOW) for _ in range(3)]
    objects, last_seq, last_hash = await digest
    await asyncio.gather(*first, *later)
    assert [(o.first_seq, o.last_seq) for o in objects] == [(1, 5)]
    assert last_seq == 5 and disk.sealed[0][0].name == objects[0].name.split("/")[-1]
    assert last_hash == decode_line((disk.segment.directory / objects[0].name).read_bytes().splitlines()[-1]
                                    ).stored_hash
    objects, last_seq, _ = await disk.thread.seal_for_digest()
    assert [(o.first_seq, o.last_seq) for o in objects] == [(6, 8)] and last_seq == 8


async def test_a_failed_write_fails_the_batch_and_everything_after_it(disk: Harness) -> None:
    disk.thread._inline = False
    assert await disk.thread.submit(disk.entry(), NOW) == 1
    await disk.thread.call(lambda: os.close(disk.segment._fd or -1))  # the device goes away
    with pytest.raises(RuntimeError, match="spool write failed"):
        await disk.thread.submit(disk.entry(), NOW)
    with pytest.raises(RuntimeError, match="spool write failed"):
        await disk.thread.submit(disk.entry(), NOW)
    assert [seq for seq, _ in disk.failed] == [2, 3]
    with pytest.raises(OSError, match="not sealing after a failure"):  # restart recovery does it
        await disk.thread.seal()
    disk.segment._fd = None


async def test_size_triggered_seal_reports_the_file_before_the_counters_reset(tmp_path: Path) -> None:
    harness = Harness(tmp_path / "spool", inline=False, segment_max_bytes=3000)
    await harness.thread.probe(tmp_path)
    await asyncio.gather(*(harness.thread.submit(harness.entry(), NOW) for _ in range(3)))
    await harness.thread.call(lambda: None)
    assert harness.sealed and harness.sealed[0][1] > 3000 and harness.segment.open_bytes == 0
    assert harness.sealed[0][0].exists()
    await harness.thread.stop()


async def test_on_tmpfs_appends_are_written_inline_without_the_thread() -> None:
    directory = SHM / f"skw-writer-{time.monotonic_ns()}"
    harness = Harness(directory / "spool", inline=True)
    try:
        probe = await harness.thread.probe(directory)
        assert probe < writer_module.INLINE_MAX_S and harness.thread.inline
        for _ in range(20):
            assert harness.thread.write_inline(harness.entry(), NOW)
        assert harness.thread.inline_writes == 20 and harness.lines_on_disk() == list(range(1, 21))
        # Something queued ahead: the next append must wait its turn on the thread.
        queued = harness.thread.submit(harness.entry(), NOW)
        assert not harness.thread.write_inline(harness.entry(), NOW)
        assert await queued == 21
        harness.seq -= 1  # the refused entry was never written
        assert harness.thread.write_inline(harness.entry(), NOW)
        assert harness.lines_on_disk() == list(range(1, 23))
        objects, last_seq, _ = await harness.thread.seal_for_digest()
        assert [(o.first_seq, o.last_seq) for o in objects] == [(1, 22)] and last_seq == 22
    finally:
        await harness.thread.stop()
        shutil.rmtree(directory, ignore_errors=True)


async def test_inline_writing_stops_when_the_device_stalls(tmp_path: Path) -> None:
    harness = Harness(tmp_path / "spool", inline=True)
    await harness.thread.probe(tmp_path)
    harness.thread._inline = True  # as if the probe had found a fast device
    original = harness.segment.write_batch

    def stalling(*args: Any) -> None:  # a device that takes 2 ms per write from now on
        time.sleep(2 * writer_module.INLINE_SLOW_S)
        original(*args)

    harness.segment.write_batch = stalling  # type: ignore[method-assign,assignment]
    for _ in range(writer_module.INLINE_GIVE_UP):
        assert harness.thread.write_inline(harness.entry(), NOW)
    assert not harness.thread.inline
    assert not harness.thread.write_inline(harness.entry(), NOW)
    await harness.thread.stop()


async def test_a_disk_probe_keeps_appends_on_the_thread(tmp_path: Path) -> None:
    harness = Harness(tmp_path / "spool", inline=True)
    probe = await harness.thread.probe(tmp_path)
    # The probe decides; whatever this machine's disk does, the decision follows the threshold.
    assert harness.thread.inline == (probe < writer_module.INLINE_MAX_S)
    assert not [name for name in os.listdir(tmp_path) if name.startswith("fsync-probe")]
    await harness.thread.stop()


def test_timestamp_matches_strftime() -> None:
    moments = [datetime(2026, 11, 24, 6, 0, tzinfo=UTC), datetime(2026, 1, 2, 3, 4, 5, 7, tzinfo=UTC),
               datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-5)))]
    for moment in moments:
        assert timestamp(moment) == moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
