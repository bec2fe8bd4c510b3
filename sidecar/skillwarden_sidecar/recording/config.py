"""Recorder configuration and the errors a caller must handle."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def _env_or_none(name: str) -> str | None:
    return os.environ.get(name) or None


class RecordingUnavailable(RuntimeError):
    """Recording cannot currently guarantee durability: refuse the request (fail closed)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RecorderConfigError(RuntimeError):
    """The recorder must not start: bucket without Object Lock, weaker retention, bad credentials,
    clock skew, unusable key or spool. The message says what is wrong and how to fix it."""


LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")


@dataclass
class RecorderConfig:
    """Everything the sidecar passes to `Recorder(...)`. Defaults come from the environment the
    chart sets (`POD_NAME`, `POD_NAMESPACE`, `AWS_*`, `SKILLWARDEN_*`)."""

    spool_dir: Path = field(default_factory=lambda: Path(_env("SKILLWARDEN_SPOOL_DIR",
                                                              "/var/lib/skillwarden/spool")))
    bucket: str = field(default_factory=lambda: _env("SKILLWARDEN_RECORDS_BUCKET", "skillwarden-audit"))
    prefix: str = field(default_factory=lambda: _env("SKILLWARDEN_RECORDS_PREFIX", ""))
    endpoint_url: str | None = field(default_factory=lambda: _env_or_none("AWS_ENDPOINT_URL_S3")
                                     or _env_or_none("AWS_ENDPOINT_URL"))
    region: str = field(default_factory=lambda: _env("AWS_REGION", _env("AWS_DEFAULT_REGION", "us-east-1")))
    # None: boto3's default chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, web identity, ...).
    access_key: str | None = None
    secret_key: str | None = None
    retention_days: int = 2555
    lock_mode: str = "COMPLIANCE"
    # PEM Ed25519 private key; created (0600) when absent and its public half published to
    # `<prefix>keys/<key_id>.pem`. Production: mount a Secret here so the key id stays stable.
    signing_key_file: Path | None = None
    namespace: str = field(default_factory=lambda: _env("POD_NAMESPACE", "default"))
    pod: str = field(default_factory=lambda: _env("POD_NAME", socket.gethostname()))
    digest_interval_s: float = 60.0
    segment_max_age_s: float = 1.0
    segment_max_bytes: int = 4 * 1024 * 1024
    # Admission bounds: beyond either, admit() raises RecordingUnavailable.
    spool_max_bytes: int = 512 * 1024 * 1024
    # Beyond this even append() refuses (protects the node's disk); None = 2 x spool_max_bytes.
    spool_hard_max_bytes: int | None = None
    max_unshipped_age_s: float = 120.0
    fail_open: bool = False
    # Write appends on the event loop (no thread hop) when the spool's device answers a probed
    # fdatasync in under 0.1 ms (tmpfs / an emptyDir with medium: Memory); disks use the thread.
    inline_writes: bool = True
    max_clock_skew_s: float = 120.0
    check_bucket: bool = True
    # Refuse a bucket whose default retention is shorter or weaker than `retention_days`/`lock_mode`.
    require_bucket_default_retention: bool = True
    ship_retry_initial_s: float = 0.2
    ship_retry_max_s: float = 5.0
    close_ship_timeout_s: float = 10.0
    s3_connect_timeout_s: float = 2.0
    s3_read_timeout_s: float = 10.0
    clock: Callable[[], datetime] = _utcnow

    def __post_init__(self) -> None:
        if self.lock_mode not in LOCK_MODES:
            raise RecorderConfigError(f"lock_mode must be one of {LOCK_MODES}, not {self.lock_mode!r}")
        if self.retention_days < 1:
            raise RecorderConfigError("retention_days must be at least 1")
        if self.prefix and not self.prefix.endswith("/"):
            self.prefix += "/"
        if self.spool_hard_max_bytes is None:
            self.spool_hard_max_bytes = 2 * self.spool_max_bytes
        if self.signing_key_file is None:
            self.signing_key_file = self.spool_dir / "keys" / "signing-key.pem"
