"""The recorder: the sidecar's one object for evidence.

    recorder = Recorder(RecorderConfig(...))
    await recorder.start()              # checks the bucket, recovers the spool, opens a stream
    recorder.admit()                    # raises RecordingUnavailable: refuse the request
    seq = await recorder.append("request", record)   # durable (fsync) when it returns
    ... forward upstream ...
    await recorder.append("response", record)
    await recorder.close()              # final signed digest, last shipping pass

Appends are group-committed: every append that arrives while an fsync is in flight is written
and synced together by the next one, so the cost per request stays near one fsync however many
requests are concurrent. The event loop only encodes and queues; one writer thread
(`writer.SpoolThread`) writes, syncs and wakes the loop once per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import timedelta
from typing import Any

from skillwarden_sidecar.recording import layout, retention
from skillwarden_sidecar.recording.config import RecorderConfig, RecorderConfigError, RecordingUnavailable
from skillwarden_sidecar.recording.digest import build_digest
from skillwarden_sidecar.recording.entry import GENESIS_HASH, encode_entry, sha256_hex
from skillwarden_sidecar.recording.keys import SigningKeyError, key_id, load_or_create_signing_key, public_pem
from skillwarden_sidecar.recording.metrics import (
    DIGESTS_SIGNED,
    RECORDING_AVAILABLE,
    RECORDS_FAILED,
    RECORDS_SPOOLED,
    SPOOL_BYTES,
    SPOOL_OLDEST_AGE,
)
from skillwarden_sidecar.recording.s3store import check_bucket, make_client, put_immutable
from skillwarden_sidecar.recording.shipper import Shipper
from skillwarden_sidecar.recording.spool import Recovered, SegmentWriter, Spool, recover_stream
from skillwarden_sidecar.recording.writer import Pending, SpoolThread

log = logging.getLogger("skillwarden.recording")

RECORDER_VERSION = "skillwarden-recorder/1"
APPEND_KINDS = ("request", "response")


class Recorder:
    def __init__(self, config: RecorderConfig) -> None:
        self.config = config
        self.stream_id = ""
        self.key_id = ""
        self._started = False
        self._closing = False
        self._broken: str | None = None
        self._seq = 0
        self._head = GENESIS_HASH
        self._durable_seq = 0
        self._durable_hash = GENESIS_HASH
        # Seals and digests (rare) take this lock so that a digest's seal, signature and write are
        # not interleaved with another seal; record batches never take it.
        self._io_lock = asyncio.Lock()
        self._digest_number = 0
        self._digest_hash: str | None = None
        # The longest/strictest retention any entry of this stream asked for: every digest is
        # locked at least this long (it covers all earlier entries through the chain).
        self._stream_retention = retention.Retention(config.lock_mode, config.retention_days)
        self._last_digest_at = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._last_warning = 0.0

    # -- lifecycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        config = self.config
        self._spool = Spool(config.spool_dir)
        assert config.signing_key_file is not None
        try:
            self._key = load_or_create_signing_key(config.signing_key_file)
        except (SigningKeyError, OSError) as error:
            raise RecorderConfigError(f"signing key: {error}") from None
        self.key_id = key_id(self._key.public_key())
        self._client = make_client(config.endpoint_url, config.region, config.access_key, config.secret_key,
                                   config.s3_connect_timeout_s, config.s3_read_timeout_s)
        offset = timedelta(0)
        if config.check_bucket:
            offset = await asyncio.to_thread(
                check_bucket, self._client, config.bucket, config.lock_mode, config.retention_days,
                config.require_bucket_default_retention, config.clock(), config.max_clock_skew_s)
        await self._publish_key(offset)
        link = await asyncio.to_thread(self._recover)
        self._shipper = Shipper(self._spool, self._client, config, offset)
        started = config.clock()
        self.stream_id = layout.new_stream_id(config.namespace, config.pod, started)
        self._shipper.live_stream = self.stream_id
        self._writer = SegmentWriter(self._spool, self.stream_id)
        self._spool_thread = SpoolThread(self._writer, asyncio.get_running_loop(),
                                         segment_max_bytes=config.segment_max_bytes,
                                         on_durable=self._durable, on_failed=self._fail,
                                         on_sealed=self._shipper.note_pending,
                                         inline=config.inline_writes)
        try:
            probe = await self._spool_thread.probe(config.spool_dir)
        except OSError as error:
            raise RecorderConfigError(f"spool directory {config.spool_dir} is not writable: "
                                      f"{error}") from None
        log.info("recording: spool fdatasync %.3f ms (median of a probe); appends written %s", probe * 1e3,
                 "inline on the event loop" if self._spool_thread.inline else "on the spool thread")
        self._started = True
        self._last_digest_at = time.monotonic()
        await self._append("stream_start", {
            "namespace": config.namespace, "pod": config.pod, "key_id": self.key_id,
            "recorder": RECORDER_VERSION, "prev_stream": link,
            "retention": {"mode": config.lock_mode, "days": config.retention_days},
            "digest_interval_s": config.digest_interval_s,
        })
        await asyncio.to_thread(self._spool.write_link, {"stream": self.stream_id, "digest_n": 0,
                                                         "digest_hash": None, "prefix": config.prefix})
        self._tasks = [asyncio.create_task(self._shipper.run(), name="skillwarden-shipper"),
                       asyncio.create_task(self._tick(), name="skillwarden-recorder-tick")]
        log.info("recording: stream %s started (key %s, bucket %s, prefix %r)", self.stream_id,
                 self.key_id, config.bucket, config.prefix)

    async def _publish_key(self, offset: timedelta) -> None:
        config = self.config
        key = config.prefix + layout.key_name(self.key_id)
        retain = config.clock() + offset + timedelta(days=config.retention_days)
        try:
            await asyncio.to_thread(put_immutable, self._client, config.bucket, key,
                                    public_pem(self._key.public_key()), config.lock_mode, retain,
                                    "application/x-pem-file")
        except Exception as error:
            raise RecorderConfigError(f"cannot publish the public signing key to s3://{config.bucket}/{key}: "
                                      f"{error}") from None

    def _recover(self) -> dict[str, Any] | None:
        """Seal what earlier processes left behind; return the link to the pod's previous stream."""
        recovered: dict[str, Recovered] = {}
        for stream, directory in self._spool.stream_dirs():
            recovered[stream] = recover_stream(self._spool, stream, directory)
        previous = self._spool.read_link()
        if previous is None:
            return self._link_from_bucket()
        link: dict[str, Any] = {"stream": previous.get("stream"), "digest_n": previous.get("digest_n"),
                                "digest_hash": previous.get("digest_hash"),
                                "prefix": previous.get("prefix", self.config.prefix)}
        found = recovered.get(str(previous.get("stream")))
        if found is not None and found.last_seq:
            link["spool_last_seq"], link["spool_last_hash"] = found.last_seq, found.last_hash
        return link

    def _link_from_bucket(self) -> dict[str, Any] | None:
        """No spool history (a fresh volume): link to this pod's newest stream in the bucket, by
        the hash of its newest digest. Best effort: an unreadable bucket leaves the link empty."""
        config = self.config
        pod_prefix = f"{config.prefix}{config.namespace or '_'}/{config.pod}/"
        try:
            streams: set[str] = set()
            for page in self._client.get_paginator("list_objects_v2").paginate(
                    Bucket=config.bucket, Prefix=pod_prefix):
                for item in page.get("Contents", []):
                    parsed = layout.parse_key(config.prefix, item["Key"])
                    if parsed.kind == "digest":
                        streams.add(parsed.stream)
            if not streams:
                return None
            newest = max(streams)
            listing = self._client.list_objects_v2(
                Bucket=config.bucket, Prefix=layout.object_key(config.prefix, newest, "digests/"))
            keys = sorted(item["Key"] for item in listing.get("Contents", []))
            body = self._client.get_object(Bucket=config.bucket, Key=keys[-1])["Body"].read()
        except Exception as error:  # the link is evidence, not a start condition
            log.warning("recording: could not read this pod's previous stream from the bucket: %s", error)
            return None
        return {"stream": newest, "digest_n": layout.parse_key(config.prefix, keys[-1]).number,
                "digest_hash": sha256_hex(body), "prefix": config.prefix, "source": "bucket"}

    async def close(self) -> None:
        """Seal, write the final signed digest, ship what S3 takes within the close timeout."""
        if not self._started or self._closing:
            return
        self._closing = True
        for task in self._tasks[1:]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # Everything appended so far is written (or failed) once this no-op has run in order.
        with contextlib.suppress(OSError):
            await self._spool_thread.call(lambda: None)
        if self._broken is None:
            await self._write_digest(final=True)
        self._shipper.request_stop()
        await self._tasks[0]
        await self._shipper.final_pass(self.config.close_ship_timeout_s)
        with contextlib.suppress(OSError):
            await self._spool_thread.call(self._writer.abandon)
        await self._spool_thread.stop()
        RECORDING_AVAILABLE.set(0)

    async def __aenter__(self) -> Recorder:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    # -- admission ------------------------------------------------------------------------------------
    def unavailable_reason(self) -> str | None:
        if not self._started:
            return "recorder not started"
        if self._closing:
            return "recorder is shutting down"
        if self._broken:
            return self._broken
        pending = self._shipper.pending_bytes() + self._writer.open_bytes
        if pending > self.config.spool_max_bytes:
            return f"spool full: {pending} bytes not shipped (bound {self.config.spool_max_bytes})"
        age = self.oldest_unshipped_age()
        if age > self.config.max_unshipped_age_s:
            return (f"records not shipped for {age:.0f}s (bound {self.config.max_unshipped_age_s:.0f}s); "
                    f"last S3 error: {self._shipper.last_error or 'none'}")
        return None

    def admit(self) -> None:
        """Raise RecordingUnavailable when a request must be refused because its record could not
        be guaranteed to reach the bucket (fail closed); with fail_open, count and let it pass."""
        reason = self.unavailable_reason()
        RECORDING_AVAILABLE.set(0 if reason else 1)
        if reason is None:
            return
        if self.config.fail_open and self._started and not self._closing and not self._broken:
            RECORDS_FAILED.labels(cause="admitted_unavailable").inc()
            if time.monotonic() - self._last_warning > 10:
                self._last_warning = time.monotonic()
                log.error("recording: FAIL-OPEN admits requests while recording is unavailable: %s", reason)
            return
        raise RecordingUnavailable(reason)

    def oldest_unshipped_age(self) -> float:
        times = [t for t in (self._shipper.oldest_pending(), self._writer.opened_at) if t is not None]
        if not times:
            return 0.0
        return max(0.0, (self.config.clock() - min(times)).total_seconds())

    # -- appending -------------------------------------------------------------------------------------
    async def append(self, kind: str, record: dict[str, Any]) -> int:
        """Durably spool one record part; returns its sequence number once fsync'd."""
        if kind not in APPEND_KINDS:
            raise ValueError(f"kind must be one of {APPEND_KINDS}")
        return await self._append(kind, record)

    async def _append(self, kind: str, record: dict[str, Any]) -> int:
        if not self._started or self._closing:
            raise RecordingUnavailable("recorder is not running")
        if self._broken:
            raise RecordingUnavailable(self._broken)
        pending = self._shipper.pending_bytes() + self._writer.open_bytes
        # stream_start is exempt: a large backlog must never keep the recorder (and its shipper)
        # from starting.
        if kind != "stream_start" and self.config.spool_hard_max_bytes is not None and \
                pending > self.config.spool_hard_max_bytes:
            RECORDS_FAILED.labels(cause="spool_full").inc()
            raise RecordingUnavailable(f"spool hard limit: {pending} bytes not shipped "
                                       f"(bound {self.config.spool_hard_max_bytes}); record not written")
        moment = self.config.clock()
        # Counted before it is durable: a digest may then be locked longer than needed, never shorter.
        declared = retention.declared(kind, record)
        if declared is not None:
            self._stream_retention = self._stream_retention.at_least(declared)
        self._seq += 1
        encoded = encode_entry(self.stream_id, self._seq, self._head, kind, moment, record)
        self._head = encoded.hash
        try:
            if self._spool_thread.write_inline(encoded, moment):
                self._durable_seq, self._durable_hash = encoded.seq, encoded.hash
                RECORDS_SPOOLED.inc()
                return encoded.seq
        except OSError:
            reason = self._spool_thread.broken or "spool write failed"
            self._fail([], reason)
            RECORDS_FAILED.labels(cause="spool_write").inc()
            raise RecordingUnavailable(reason) from None
        # Encoding and queueing happen without yielding, so queue order is sequence order.
        return await self._spool_thread.submit(encoded, moment)

    def _durable(self, batch: list[Pending]) -> None:
        """Event loop, once per written+fsync'd batch (posted by the writer thread)."""
        last = batch[-1].entry
        self._durable_seq, self._durable_hash = last.seq, last.hash
        RECORDS_SPOOLED.inc(len(batch))
        for pending in batch:
            if not pending.future.done():
                pending.future.set_result(pending.entry.seq)

    def _fail(self, batch: list[Pending], reason: str) -> None:
        # The stream cannot continue without a gap; stop accepting (fail closed) and say why.
        if self._broken is None:
            self._broken = reason
            log.error("recording: %s; refusing requests", reason)
        RECORDS_FAILED.labels(cause="spool_write").inc(len(batch))
        error = RecordingUnavailable(reason)
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(error)

    async def _seal(self) -> None:
        """Caller holds the io lock. The writer thread tells the shipper about the sealed file."""
        await self._spool_thread.seal()

    # -- background: segment rotation, digests, gauges -------------------------------------------------
    async def _tick(self) -> None:
        interval = max(0.05, min(self.config.segment_max_age_s, self.config.digest_interval_s) / 2)
        while True:
            await asyncio.sleep(interval)
            try:
                opened = self._writer.opened_at
                if self._broken:
                    pass  # the open segment is left for restart recovery, which drops a torn tail
                elif opened is not None and (self.config.clock() - opened).total_seconds() >= \
                        self.config.segment_max_age_s:
                    async with self._io_lock:
                        await self._seal()
                due = time.monotonic() - self._last_digest_at >= self.config.digest_interval_s
                if due and not self._broken:
                    await self._write_digest(final=False)
                SPOOL_BYTES.set(self._shipper.pending_bytes() + self._writer.open_bytes)
                SPOOL_OLDEST_AGE.set(self.oldest_unshipped_age())
                RECORDING_AVAILABLE.set(0 if self.unavailable_reason() else 1)
            except OSError as error:
                self._broken = f"spool write failed: {error}"
                log.error("recording: %s; refusing requests", self._broken)
            except Exception:  # keep sealing and signing; admission bounds catch a stuck recorder
                log.exception("recording: periodic sealing/digest failed; retrying")

    async def write_digest(self) -> None:
        """Sign a digest now (tests; the recorder does it every digest_interval_s on its own)."""
        await self._write_digest(final=False)

    async def _write_digest(self, final: bool) -> None:
        async with self._io_lock:
            objects, last_seq, last_hash = await self._spool_thread.seal_for_digest()
            self._last_digest_at = time.monotonic()
            number = self._digest_number + 1
            data, digest_hash = build_digest(
                self._key, stream=self.stream_id, number=number, moment=self.config.clock(),
                last_seq=last_seq, last_hash=last_hash, prev_digest_hash=self._digest_hash,
                objects=objects, final=final, retention=self._stream_retention.as_dict())
            await self._spool_thread.call(lambda: self._writer.write_digest(number, data))
            self._digest_number, self._digest_hash = number, digest_hash
            await asyncio.to_thread(self._spool.write_link, {"stream": self.stream_id, "digest_n": number,
                                                             "digest_hash": digest_hash,
                                                             "prefix": self.config.prefix})
        DIGESTS_SIGNED.inc()
        path = self._writer.directory / layout.digest_name(number)
        self._shipper.note_pending(path, len(data), None)

    # -- introspection --------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {"stream": self.stream_id, "key_id": self.key_id, "seq": self._durable_seq,
                "digests": self._digest_number, "retention": self._stream_retention.as_dict(),
                "unavailable": self.unavailable_reason(),
                "last_s3_error": self._shipper.last_error if self._started else None}

    async def wait_shipped(self, within_s: float) -> bool:
        """True once the spool holds nothing but the open segment (tests, graceful drains)."""
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            async with self._io_lock:
                await self._seal()
            self._shipper.wake()
            await asyncio.sleep(0.05)
            if not await asyncio.to_thread(self._spool_has_unshipped):
                return True
            await asyncio.sleep(0.1)
        return False

    def _spool_has_unshipped(self) -> bool:
        for _, directory in self._spool.stream_dirs():
            if any(directory.glob("records/*.jsonl")) or any(directory.glob("digests/*.json")):
                return True
            if any(directory.glob("open-*")) and directory != self._writer.directory:
                return True
        return False
