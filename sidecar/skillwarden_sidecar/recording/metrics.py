"""Recording metrics. The sidecar's `skillwarden_sidecar/metrics.py` re-exports these; they are
defined here once so the recorder can be used (and tested) without the rest of the sidecar."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

RECORDS_SPOOLED = Counter("skillwarden_records_spooled_total",
                          "Record entries made durable on the local spool (fsync)")
RECORDS_SHIPPED = Counter("skillwarden_records_shipped_total",
                          "Record entries uploaded to the Object Lock bucket")
RECORDS_FAILED = Counter("skillwarden_records_failed_total",
                         "Recording failures by cause (s3_error, spool_write, spool_full, corrupt_spool, "
                         "conflict, admitted_unavailable when fail-open lets a request through)", ["cause"])
SPOOL_BYTES = Gauge("skillwarden_spool_bytes", "Bytes on the local spool not yet shipped")
SPOOL_OLDEST_AGE = Gauge("skillwarden_spool_oldest_unshipped_age_seconds",
                         "Age of the oldest record entry not yet shipped (0 when all are shipped)")
DIGESTS_SIGNED = Counter("skillwarden_digests_signed_total", "Signed digests written")
RECORDING_AVAILABLE = Gauge("skillwarden_recording_available",
                            "1 when admit() accepts requests, 0 when recording is unavailable")

ALL = (RECORDS_SPOOLED, RECORDS_SHIPPED, RECORDS_FAILED, SPOOL_BYTES, SPOOL_OLDEST_AGE, DIGESTS_SIGNED,
       RECORDING_AVAILABLE)


def register_into(registry: CollectorRegistry) -> None:
    """Expose the recording metrics on another registry too (the sidecar's /metrics uses its own)."""
    for collector in ALL:
        try:
            registry.register(collector)
        except ValueError:  # already there
            continue
