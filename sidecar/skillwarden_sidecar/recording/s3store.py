"""The bucket side: client construction, the start-up checks, and the one write the shipper does.

Every call here is blocking (botocore); the recorder runs them with `asyncio.to_thread`.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import botocore.loaders
import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from skillwarden_sidecar.recording.config import RecorderConfigError
from skillwarden_sidecar.recording.s3_endpoints import load_s3_endpoints

_CREDENTIAL_ERRORS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken",
                      "ExpiredToken", "AuthorizationHeaderMalformed"}


class _S3OnlyLoader(botocore.loaders.Loader):
    """botocore's own data, except that `endpoints` is built with S3's entries only
    (`s3_endpoints`: ~7 MiB less resident memory); any surprise falls back to botocore."""

    def load_data_with_path(self, name: str) -> tuple[Any, str]:
        if name == "endpoints":
            try:
                return load_s3_endpoints(list(self.search_paths))
            except (OSError, ValueError):
                pass
        found: tuple[Any, str] = super().load_data_with_path(name)
        return found


def make_client(endpoint_url: str | None, region: str, access_key: str | None, secret_key: str | None,
                connect_timeout: float = 2.0, read_timeout: float = 10.0, max_attempts: int = 1) -> Any:
    # botocore alone: boto3 adds s3transfer and resource models the shipper never uses.
    session = botocore.session.Session()
    session.register_component("data_loader", _S3OnlyLoader())
    # Checksums only when we send them ourselves: SHA-256 precomputed per object, no aws-chunked
    # trailers (Object Lock PUTs need a plain checksum header).
    return session.create_client(
        "s3", endpoint_url=endpoint_url, region_name=region,
        aws_access_key_id=access_key, aws_secret_access_key=secret_key,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": max_attempts},
                      connect_timeout=connect_timeout, read_timeout=read_timeout,
                      request_checksum_calculation="when_required",
                      response_checksum_validation="when_required"),
    )


def error_code(error: BaseException) -> str:
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", "")) or str(
            error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
    return type(error).__name__


def server_time(response: dict[str, Any]) -> datetime | None:
    header = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    if not header:
        return None
    try:
        return parsedate_to_datetime(header).astimezone(UTC)
    except (TypeError, ValueError):
        return None


_MODE_STRENGTH = {"GOVERNANCE": 1, "COMPLIANCE": 2}


def check_bucket(client: Any, bucket: str, mode: str, retention_days: int, require_default: bool,
                 now: datetime, max_skew_s: float) -> timedelta:
    """Refuse a bucket that cannot hold evidence; returns the server clock offset (server - local).

    Raises RecorderConfigError with the reason and the fix."""
    try:
        head = client.head_bucket(Bucket=bucket)
    except ClientError as error:
        code = error_code(error)
        if code in _CREDENTIAL_ERRORS or code in {"403"}:
            raise RecorderConfigError(
                f"S3 rejected the credentials for bucket {bucket!r} ({code}); check AWS_ACCESS_KEY_ID / "
                "AWS_SECRET_ACCESS_KEY (or the recorder's access_key/secret_key)") from None
        if code in {"404", "NoSuchBucket"}:
            raise RecorderConfigError(f"bucket {bucket!r} does not exist; create it with Object Lock "
                                      "enabled (`--object-lock-enabled-for-bucket`)") from None
        raise RecorderConfigError(f"bucket {bucket!r}: {code}: {error}") from None
    except BotoCoreError as error:
        raise RecorderConfigError(
            f"S3 endpoint unreachable while checking bucket {bucket!r}: {error}") from None
    offset = timedelta(0)
    server_now = server_time(head)
    if server_now is not None:
        offset = server_now - now
        if abs(offset.total_seconds()) > max_skew_s:
            raise RecorderConfigError(
                f"clock skew: local clock {now.isoformat()} differs from the S3 server's "
                f"{server_now.isoformat()} by {offset.total_seconds():.0f}s (allowed {max_skew_s:.0f}s); "
                "record times and retention dates would be wrong — fix NTP on the node")
    try:
        lock = client.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
    except ClientError as error:
        code = error_code(error)
        if code in _CREDENTIAL_ERRORS:
            raise RecorderConfigError(f"S3 refused reading the Object Lock configuration of {bucket!r} "
                                      f"({code}); grant s3:GetBucketObjectLockConfiguration") from None
        raise RecorderConfigError(
            f"bucket {bucket!r} has no Object Lock ({code}); records need a bucket created with Object "
            "Lock enabled — it cannot be turned on for an existing bucket") from None
    if lock.get("ObjectLockEnabled") != "Enabled":
        raise RecorderConfigError(f"bucket {bucket!r} has no Object Lock enabled")
    default = lock.get("Rule", {}).get("DefaultRetention")
    if require_default:
        if not default:
            raise RecorderConfigError(
                f"bucket {bucket!r} has no default retention; configure "
                f"{{Mode: {mode}, Days: >= {retention_days}}} or set require_bucket_default_retention=False")
        days = int(default.get("Days") or 0) or int(default.get("Years") or 0) * 365
        bucket_mode = str(default.get("Mode", ""))
        if _MODE_STRENGTH.get(bucket_mode, 0) < _MODE_STRENGTH[mode] or days < retention_days:
            raise RecorderConfigError(
                f"bucket {bucket!r} default retention {bucket_mode} {days} days is weaker than the "
                f"configured {mode} {retention_days} days; raise the bucket's default "
                "retention or lower retentionDays")
    return offset


@dataclass(frozen=True)
class PutResult:
    created: bool  # False: the identical object was already there (an earlier attempt succeeded)
    server_now: datetime | None


class ObjectConflict(RuntimeError):
    """The deterministic key already holds different bytes: never overwrite, never rename."""


def put_immutable(client: Any, bucket: str, key: str, body: bytes, mode: str, retain_until: datetime,
                  content_type: str) -> PutResult:
    checksum = base64.b64encode(hashlib.sha256(body).digest()).decode()
    try:
        response = client.put_object(
            Bucket=bucket, Key=key, Body=body, ContentType=content_type,
            ObjectLockMode=mode, ObjectLockRetainUntilDate=retain_until,
            ChecksumAlgorithm="SHA256", ChecksumSHA256=checksum, IfNoneMatch="*")
        return PutResult(True, server_time(response))
    except ClientError as error:
        if error_code(error) not in {"PreconditionFailed", "412"}:
            raise
    existing = client.get_object(Bucket=bucket, Key=key)
    data = existing["Body"].read()
    if hashlib.sha256(data).digest() != hashlib.sha256(body).digest():
        raise ObjectConflict(f"s3://{bucket}/{key} already exists with different content")
    return PutResult(False, server_time(existing))


def extend_retention(client: Any, bucket: str, key: str, mode: str, needed: datetime,
                     target: datetime) -> datetime:
    """Make an object's lock last at least until `needed` in at least `mode` (extending it to
    `target` when it does not); returns the retain-until it now has. S3 refuses to shorten a lock
    or weaken its mode, so the current one is read first and only ever raised."""
    current = client.get_object_retention(Bucket=bucket, Key=key).get("Retention", {})
    until: datetime | None = current.get("RetainUntilDate")
    current_mode = str(current.get("Mode", ""))
    strong_enough = _MODE_STRENGTH.get(current_mode, 0) >= _MODE_STRENGTH.get(mode, 0)
    if until is not None and until >= needed and strong_enough:
        return until
    new_until = max(target, until) if until is not None else target
    try:
        client.put_object_retention(Bucket=bucket, Key=key, Retention={
            "Mode": current_mode if strong_enough else mode, "RetainUntilDate": new_until})
    except ClientError:
        if strong_enough or not current_mode:
            raise
        # Raising GOVERNANCE to COMPLIANCE needs the governance bypass permission (SeaweedFS
        # refuses it outright): keep the mode, still lengthen the date.
        client.put_object_retention(Bucket=bucket, Key=key, Retention={
            "Mode": current_mode, "RetainUntilDate": new_until})
    return new_until
