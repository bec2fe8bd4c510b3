"""Drains the spool into the Object Lock bucket: one object per sealed segment or digest, under a
key derived from the stream id and sequence range, written once (`If-None-Match: *`) with its
retention and SHA-256 checksum. A file leaves the spool only after S3 acknowledged it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from skillwarden_sidecar.memory import release_free_heap
from skillwarden_sidecar.recording import layout, retention
from skillwarden_sidecar.recording.config import RecorderConfig
from skillwarden_sidecar.recording.metrics import RECORDS_FAILED, RECORDS_SHIPPED
from skillwarden_sidecar.recording.s3store import ObjectConflict, error_code, extend_retention, put_immutable
from skillwarden_sidecar.recording.spool import Spool, check_sealed_file, first_entry_time, fsync_dir

log = logging.getLogger("skillwarden.recording")

KEY_LOCK_MARGIN = timedelta(days=1)


def _is_key_id(value: Any) -> bool:
    # Our own format (keys.key_id): "ed25519-" + 16 hex digits; anything else names no object.
    return isinstance(value, str) and value.startswith("ed25519-") and len(value) == 24 and all(
        c in "0123456789abcdef" for c in value[8:])


class Shipper:
    def __init__(self, spool: Spool, client: Any, config: RecorderConfig, clock_offset: timedelta) -> None:
        self.spool = spool
        self.client = client
        self.config = config
        self.clock_offset = clock_offset
        self.live_stream = ""
        # Public key object -> the retain-until it is known to have (read at the first digest
        # signed by it): each key stays locked at least as long as the digests it verifies.
        self._key_until: dict[str, datetime] = {}
        self.last_error: str | None = None
        self.shipped_objects = 0
        self._lock = threading.Lock()
        self._guard = threading.Lock()
        self._written_here: set[Path] = set()
        self._pending: dict[Path, tuple[int, datetime | None]] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        # note_pending is also called from the spool writer thread: wake through the loop then.
        self._loop: asyncio.AbstractEventLoop | None = None
        with contextlib.suppress(RuntimeError):
            self._loop = asyncio.get_running_loop()

    # -- state the recorder reads for admission --------------------------------------------------
    def note_pending(self, path: Path, size: int, first_time: datetime | None) -> None:
        """A file this process just sealed or signed: no need to re-validate it before upload.
        Thread-safe (the spool writer thread calls it when it seals a segment)."""
        if not path.exists():
            return  # the shipper's own scan already found and shipped it
        with self._lock:
            self._pending[path] = (size, first_time)
            self._written_here.add(path)
        self.wake()

    def pending_bytes(self) -> int:
        with self._lock:
            return sum(size for size, _ in self._pending.values())

    def oldest_pending(self) -> datetime | None:
        with self._lock:
            times = [t for _, t in self._pending.values() if t is not None]
        return min(times) if times else None

    def wake(self) -> None:
        try:
            asyncio.get_running_loop()
            on_loop = True
        except RuntimeError:
            on_loop = False
        if on_loop or self._loop is None:
            self._wake.set()
            return
        with contextlib.suppress(RuntimeError):  # a closed loop has no shipper left to wake
            self._loop.call_soon_threadsafe(self._wake.set)

    # -- the loop ---------------------------------------------------------------------------------
    async def run(self) -> None:
        delay = self.config.ship_retry_initial_s
        while not self._stopping:
            self._wake.clear()
            try:
                await asyncio.to_thread(self.ship_pass)
                self.last_error, delay = None, self.config.ship_retry_initial_s
                timeout = 1.0
            except Exception as error:  # any failure: back off and retry; never stop shipping
                self.last_error = f"{error_code(error)}: {error}"
                RECORDS_FAILED.labels(cause="s3_error").inc()
                log.warning("recording: shipping failed, retrying in %.1fs: %s", delay, self.last_error)
                timeout, delay = delay, min(delay * 2, self.config.ship_retry_max_s)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    def request_stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def final_pass(self, within_s: float) -> None:
        """One last pass (bounded); what is left stays in the spool for the next start."""
        try:
            async with asyncio.timeout(within_s):
                await asyncio.to_thread(self.ship_pass)
        except (ClientError, BotoCoreError, OSError, TimeoutError) as error:
            log.warning("recording: spool not fully shipped at shutdown (%s); it ships on next start", error)

    def _scan(self) -> list[tuple[str, Path, list[Path]]]:
        work = []
        fresh: dict[Path, tuple[int, datetime | None]] = {}
        for stream, directory in self.spool.stream_dirs():
            files = sorted((directory / "records").glob("*.jsonl"))
            files += sorted((directory / "digests").glob("*.json"))
            for file in files:
                try:
                    size = file.stat().st_size
                except OSError:
                    continue
                known = self._pending.get(file)
                first = known[1] if known else (first_entry_time(file) if file.suffix == ".jsonl" else None)
                fresh[file] = (size, first)
            work.append((stream, directory, files))
        with self._lock:
            self._pending = fresh
            self._written_here &= set(fresh)
        return work

    def ship_pass(self) -> None:
        with self._guard:  # stop() may run a pass while the loop's is still in its thread
            for stream, directory, files in self._scan():
                for file in files:
                    self._ship_file(stream, file)
                if stream != self.live_stream and not any(directory.glob("open-*")) and not any(
                        p.is_file() for p in directory.rglob("*")):
                    shutil.rmtree(directory, ignore_errors=True)
        # Requests handled, segments read and sent since the last pass leave MiB of heap that is
        # free but stays resident; a pass runs at most once a second.
        release_free_heap()

    def _ship_file(self, stream: str, file: Path) -> None:
        if not file.exists():
            return
        name = f"{file.parent.name}/{file.name}"
        parsed = layout.parse_local_name(name)
        if parsed.kind == "records":
            problem = None if file in self._written_here else check_sealed_file(stream, file)
            if problem:
                self.spool.quarantine(stream, file, f"sealed segment not shipped: {problem}")
                self._forget(file)
                return
        elif parsed.kind != "digest":
            self.spool.quarantine(stream, file, "unexpected file in the spool")
            self._forget(file)
            return
        body = file.read_bytes()
        key = layout.object_key(self.config.prefix, stream, name)
        lock, signer = self.lock_for(parsed.kind, body)
        now = self.config.clock() + self.clock_offset
        retain_until = now + timedelta(days=lock.days)
        content_type = "application/x-ndjson" if parsed.kind == "records" else "application/json"
        try:
            result = put_immutable(self.client, self.config.bucket, key, body, lock.mode,
                                   retain_until, content_type)
        except ObjectConflict as error:
            RECORDS_FAILED.labels(cause="conflict").inc()
            self.spool.quarantine(stream, file, str(error))
            self._forget(file)
            return
        if result.server_now is not None:
            self.clock_offset = result.server_now - self.config.clock()
        if signer is not None and (signer not in self._key_until or retain_until > self._key_until[signer]):
            self._extend_key_lock(signer, lock, retain_until)
        os.unlink(file)
        fsync_dir(file.parent)
        self._forget(file)
        self.shipped_objects += 1
        if parsed.kind == "records":
            RECORDS_SHIPPED.inc(parsed.last - parsed.first + 1)

    def lock_for(self, kind: str, body: bytes) -> tuple[retention.Retention, str | None]:
        """A segment: the longest/strictest its entries' decisions asked for; a digest: the stream's
        running maximum it names (it must outlive the records it covers). Never below the
        configured floor. Read from the bytes, so a segment recovered after a crash gets the same.
        Also returns the key object that verifies a digest (None for a segment)."""
        floor = retention.Retention(self.config.lock_mode, self.config.retention_days)
        if kind == "records":
            return retention.combine(floor, retention.of_segment(body)), None
        try:
            document: Any = json.loads(body)
        except ValueError:
            document = None
        signer = document.get("key_id") if isinstance(document, dict) else None
        key = self.config.prefix + layout.key_name(str(signer)) if _is_key_id(signer) else None
        return floor.at_least(retention.of_digest(document)), key

    def _extend_key_lock(self, key: str, lock: retention.Retention, retain_until: datetime) -> None:
        """A digest outliving the public key that verifies it would be unverifiable from the bucket
        alone. Object Lock only lets retention grow, so this can never shorten the key's lock."""
        # Overshoot, so the key is touched about once a day rather than after every digest.
        target = retain_until + KEY_LOCK_MARGIN
        try:
            self._key_until[key] = extend_retention(self.client, self.config.bucket, key, lock.mode,
                                                    retain_until, target)
        except (ClientError, BotoCoreError) as error:
            # Not a record: a failure here must not hold back shipping; verify reports the key.
            log.warning("recording: could not extend the lock of s3://%s/%s to %s: %s", self.config.bucket,
                        key, retain_until.isoformat(), error)
            return

    def _forget(self, file: Path) -> None:
        with self._lock:
            self._pending.pop(file, None)
            self._written_here.discard(file)
