"""The local spool: durable, append-only files the shipper drains to S3.

Layout under the spool directory::

    streams/<namespace>/<pod>/<start>-<random>/open-<first>.jsonl   segment being written
    streams/.../records/<first>-<last>.jsonl                        sealed, not yet shipped
    streams/.../digests/<n>.json                                     signed, not yet shipped
    last-stream.json                                                 link for the next stream
    quarantine/                                                      corrupt files, never shipped

A shipped file is deleted, so everything under `streams/` is owed to the bucket. All methods
that touch the disk are blocking and are called from one thread at a time (the recorder's write
lock, or the shipper).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from skillwarden_sidecar.recording import layout
from skillwarden_sidecar.recording.digest import SealedObject
from skillwarden_sidecar.recording.entry import MalformedEntry, decode_line, parse_timestamp
from skillwarden_sidecar.recording.metrics import RECORDS_FAILED

log = logging.getLogger("skillwarden.recording")


def fsync_dir(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_durably(path: Path, data: bytes) -> None:
    """Whole-file write that is either absent or complete after a crash."""
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fdatasync(handle.fileno())
    os.replace(temporary, path)
    fsync_dir(path.parent)


class Spool:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.streams = root / "streams"
        self.quarantine_dir = root / "quarantine"
        self.link_file = root / "last-stream.json"
        try:
            self.streams.mkdir(parents=True, exist_ok=True)
            self.quarantine_dir.mkdir(exist_ok=True)
        except OSError as error:
            from skillwarden_sidecar.recording.config import RecorderConfigError
            raise RecorderConfigError(f"spool directory {root} is not usable: {error}") from None

    def stream_dir(self, stream: str) -> Path:
        return self.streams / stream

    def stream_dirs(self) -> list[tuple[str, Path]]:
        found = []
        for path in sorted(self.streams.glob("*/*/*")):
            if path.is_dir():
                found.append(("/".join(path.relative_to(self.streams).parts), path))
        return found

    def quarantine(self, stream: str, path: Path, reason: str) -> None:
        """Move a file that must not be shipped out of the way, with the reason beside it: the
        recorder keeps running (no crash loop) and an operator can inspect it."""
        target_dir = self.quarantine_dir / stream.replace("/", "_")
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / path.name
        os.replace(path, target)
        (target_dir / (path.name + ".reason")).write_text(reason + "\n")
        fsync_dir(target_dir)
        RECORDS_FAILED.labels(cause="corrupt_spool").inc()
        log.error("recording: quarantined spool file %s (stream %s): %s", target, stream, reason)

    def read_link(self) -> dict[str, Any] | None:
        try:
            value = json.loads(self.link_file.read_bytes())
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def write_link(self, link: dict[str, Any]) -> None:
        write_durably(self.link_file, json.dumps(link, sort_keys=True).encode())

    def unshipped_bytes(self) -> int:
        total = 0
        for _, directory in self.stream_dirs():
            for file in directory.rglob("*"):
                if file.is_file() and not file.name.endswith(".tmp"):
                    total += file.stat().st_size
        return total


class SegmentWriter:
    """Appends batches of lines to the live stream's open segment and seals it into a
    `records/<first>-<last>.jsonl` file the shipper may take."""

    def __init__(self, spool: Spool, stream: str) -> None:
        self.spool = spool
        self.stream = stream
        self.directory = spool.stream_dir(stream)
        (self.directory / "records").mkdir(parents=True, exist_ok=True)
        (self.directory / "digests").mkdir(exist_ok=True)
        fsync_dir(self.directory.parent)
        self._fd: int | None = None
        self._path: Path | None = None
        self._first = 0
        self._last = 0
        self._hasher = hashlib.sha256()
        self.open_bytes = 0
        self.opened_at: datetime | None = None

    def write_batch(self, lines: list[bytes], first_seq: int, last_seq: int, first_time: datetime) -> None:
        if self._fd is None:
            self._path = self.directory / f"open-{first_seq:012d}.jsonl"
            self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            fsync_dir(self.directory)
            self._first, self.opened_at = first_seq, first_time
            self._hasher = hashlib.sha256()
            self.open_bytes = 0
        data = b"".join(lines)
        # One write() per batch (no userspace buffer); loop only on a short write.
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        # fdatasync: the data and the file size (needed to read it back) are synced; the mtime,
        # which nothing reads, is not.
        os.fdatasync(self._fd)
        self._hasher.update(data)
        self._last = last_seq
        self.open_bytes += len(data)

    def seal(self, note: Callable[[Path, int, datetime | None], None] | None = None) -> SealedObject | None:
        """Close and rename the open segment. `note(path, size, opened_at)` runs once the sealed
        file exists and before the open-segment counters reset, so someone accounting for
        unshipped bytes never sees them in neither place."""
        if self._fd is None or self._path is None:
            return None
        os.close(self._fd)
        self._fd = None
        name = layout.records_name(self._first, self._last)
        os.replace(self._path, self.directory / name)
        fsync_dir(self.directory / "records")
        fsync_dir(self.directory)
        sealed = SealedObject(name, self._first, self._last, self._hasher.hexdigest())
        if note is not None:
            note(self.directory / name, self.open_bytes, self.opened_at)
        self._path, self.opened_at = None, None
        self.open_bytes = 0
        return sealed

    def write_digest(self, number: int, data: bytes) -> None:
        write_durably(self.directory / layout.digest_name(number), data)

    def abandon(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass(frozen=True)
class Recovered:
    stream: str
    sealed: list[SealedObject]
    last_seq: int  # 0 when nothing of the stream was left in the spool
    last_hash: str


def _valid_prefix(stream: str, first: int, data: bytes) -> tuple[list[bytes], bytes, str | None]:
    """(valid lines, remainder, problem). A remainder that is a single unterminated line is a
    torn write that was never acknowledged (acks follow fsync); anything else is corruption."""
    lines: list[bytes] = []
    expected, prev = first, None
    offset = 0
    while offset < len(data):
        end = data.find(b"\n", offset)
        if end < 0:
            return lines, data[offset:], None  # torn tail
        raw = data[offset:end + 1]
        try:
            decoded = decode_line(raw)
        except MalformedEntry as error:
            return lines, data[offset:], f"line {len(lines) + 1}: {error}"
        entry = decoded.entry
        if not decoded.intact or decoded.seq != expected or entry["stream"] != stream or (
                prev is not None and entry["prev"] != prev):
            return lines, data[offset:], f"line {len(lines) + 1}: hash, sequence or chain does not match"
        lines.append(raw)
        prev, expected = decoded.stored_hash, expected + 1
        offset = end + 1
    return lines, b"", None


def check_sealed_file(stream: str, path: Path) -> str | None:
    """Why a sealed records file must not be shipped, or None when it is well-formed."""
    parsed = layout.parse_local_name(f"records/{path.name}")
    if parsed.kind != "records":
        return "unexpected file name"
    try:
        data = path.read_bytes()
    except OSError as error:
        return f"unreadable: {error}"
    lines, rest, problem = _valid_prefix(stream, parsed.first, data)
    if problem or rest:
        return problem or "unterminated last line"
    if not lines or decode_line(lines[-1]).seq != parsed.last:
        return "sequence range does not match the file name"
    return None


def recover_stream(spool: Spool, stream: str, directory: Path) -> Recovered:
    """Seal what a previous (crashed) process left in its open segment, so it gets shipped."""
    sealed: list[SealedObject] = []
    last_seq, last_hash = 0, ""
    for path in sorted(directory.glob("open-*.jsonl")):
        try:
            first = int(path.name[len("open-"):-len(".jsonl")])
            data = path.read_bytes()
        except (ValueError, OSError) as error:
            spool.quarantine(stream, path, f"unreadable open segment: {error}")
            continue
        lines, rest, problem = _valid_prefix(stream, first, data)
        if problem is not None:
            spool.quarantine(stream, path, f"corrupt open segment ({problem}); valid entries before it: "
                                           f"{len(lines)}. Not shipped; verify will report the gap.")
            continue
        if rest:
            log.warning("recording: dropped a torn, never-acknowledged tail of %d bytes from %s",
                        len(rest), path)
        if not lines:
            path.unlink()
            continue
        last = decode_line(lines[-1])
        name = layout.records_name(first, last.seq)
        body = b"".join(lines)
        write_durably(directory / name, body)
        path.unlink()
        fsync_dir(directory)
        sealed.append(SealedObject(name, first, last.seq, hashlib.sha256(body).hexdigest()))
        last_seq, last_hash = last.seq, last.stored_hash
    if not last_seq:
        for path in sorted((directory / "records").glob("*.jsonl")):
            parsed = layout.parse_local_name(f"records/{path.name}")
            if parsed.kind == "records" and parsed.last > last_seq:
                try:
                    lines = path.read_bytes().splitlines(keepends=True)
                    last_seq, last_hash = parsed.last, decode_line(lines[-1]).stored_hash
                except (OSError, IndexError, MalformedEntry):
                    continue
    return Recovered(stream, sealed, last_seq, last_hash)


def first_entry_time(path: Path) -> datetime | None:
    try:
        with path.open("rb") as handle:
            line = handle.readline()
        return parse_timestamp(str(decode_line(line).entry["time"]))
    except (OSError, MalformedEntry, ValueError):
        return None
