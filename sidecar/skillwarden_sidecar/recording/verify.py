"""Offline verification of a bucket prefix: what an auditor runs, needing only S3 read access and
the public keys they pinned.

Checks, each with its own finding code (`SEVERITY` below): every object version listed
(ListObjectVersions, plus a plain listing to catch objects whose version metadata was lost through
a storage back door); delete markers and overwritten keys; every entry's SHA-256; the hash chain;
sequence gaps; record order; digest signatures (trusted keys only), digest numbering and chaining;
that each digest names the entry hash and object checksums really stored; links between a pod's
successive streams; records after the last digest (an honest `unsealed_tail` when the stream
crashed); optionally Object Lock mode and retain-until dates per object version.

Exit status: 0 ok, 1 integrity finding, 2 gap finding (and no integrity finding), 3 configuration.
"""

from __future__ import annotations

import bisect
import hashlib
import json
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from skillwarden_sidecar.recording import layout, retention
from skillwarden_sidecar.recording.digest import DIGEST_TYPE, signature_valid
from skillwarden_sidecar.recording.entry import GENESIS_HASH, MalformedEntry, decode_line, sha256_hex
from skillwarden_sidecar.recording.s3store import error_code

INTEGRITY, GAP, INFO = "integrity", "gap", "info"
SEVERITY = {
    "hash_mismatch": INTEGRITY, "chain_broken": INTEGRITY, "reordered": INTEGRITY,
    "seq_mismatch": INTEGRITY, "malformed_record": INTEGRITY, "wrong_stream": INTEGRITY,
    "object_modified": INTEGRITY, "overwritten": INTEGRITY, "delete_marker": INTEGRITY,
    "version_metadata_lost": INTEGRITY, "bad_signature": INTEGRITY, "untrusted_key": INTEGRITY,
    "malformed_digest": INTEGRITY, "digest_chain_broken": INTEGRITY, "digest_mismatch": INTEGRITY,
    "records_after_final_digest": INTEGRITY, "digest_after_final": INTEGRITY,
    "stream_link_broken": INTEGRITY, "retention_missing": INTEGRITY, "retention_mode": INTEGRITY,
    "retention_short": INTEGRITY,
    "gap": GAP, "object_missing": GAP, "digest_missing": GAP, "stream_missing": GAP,
    "unsealed_tail": INFO, "unexpected_object": INFO,
}
EXIT_OK, EXIT_INTEGRITY, EXIT_GAP, EXIT_CONFIG = 0, 1, 2, 3
_NOTHING = retention.Retention("", 0)
RETENTION_TOLERANCE = timedelta(hours=1)


class VerifyConfigError(RuntimeError):
    """The bucket could not be read as configured (credentials, bucket, endpoint, keys)."""


@dataclass
class Finding:
    code: str
    message: str
    stream: str | None = None
    key: str | None = None
    version_id: str | None = None
    seq: int | None = None
    severity: str = field(init=False)

    def __post_init__(self) -> None:
        self.severity = SEVERITY[self.code]


@dataclass
class Version:
    key: str
    version_id: str | None  # None: found only by the plain listing
    last_modified: datetime
    body: bytes | None = None  # None: listed, but the content cannot be read


@dataclass
class StreamState:
    records: dict[str, list[Version]] = field(default_factory=dict)  # name -> versions
    digests: dict[int, list[Version]] = field(default_factory=dict)


def _list(client: Any, bucket: str, prefix: str) -> tuple[dict[str, list[Version]], list[dict[str, Any]]]:
    versions: dict[str, list[Version]] = defaultdict(list)
    markers: list[dict[str, Any]] = []
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Versions", []):
            versions[item["Key"]].append(Version(item["Key"], item.get("VersionId"), item["LastModified"]))
        markers.extend(page.get("DeleteMarkers", []))
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            if item["Key"] not in versions and not any(m["Key"] == item["Key"] for m in markers):
                versions[item["Key"]].append(Version(item["Key"], None, item["LastModified"]))
    for found in versions.values():
        found.sort(key=lambda v: v.last_modified)
    return versions, markers


def _fetch(client: Any, bucket: str, version: Version) -> None:
    arguments: dict[str, Any] = {"Bucket": bucket, "Key": version.key}
    if version.version_id:
        arguments["VersionId"] = version.version_id
    try:
        version.body = client.get_object(**arguments)["Body"].read()
    except ClientError as error:
        if error_code(error) not in {"NoSuchKey", "NoSuchVersion", "404"}:
            raise


def _retention(client: Any, bucket: str, version: Version) -> dict[str, Any]:
    arguments: dict[str, Any] = {"Bucket": bucket, "Key": version.key}
    if version.version_id:
        arguments["VersionId"] = version.version_id
    head = client.head_object(**arguments)
    return {"mode": head.get("ObjectLockMode"), "until": head.get("ObjectLockRetainUntilDate")}


class Verifier:
    def __init__(self, client: Any, bucket: str, prefix: str, trusted: dict[str, Ed25519PublicKey], *,
                 check_retention: bool = False, retention_days: int | None = None,
                 expected_mode: str = "COMPLIANCE", now: datetime | None = None) -> None:
        self.client, self.bucket, self.prefix, self.trusted = client, bucket, prefix, trusted
        self.check_retention, self.retention_days = check_retention, retention_days
        self.expected_mode = expected_mode
        self.now = now or datetime.now(UTC)
        self.findings: list[Finding] = []
        self.streams: dict[str, dict[str, Any]] = {}
        self._vanished: set[str] = set()
        # Object key -> the retention its entries' decisions asked for (for a digest: every entry
        # it covers). Re-derived from the entries; never read from the digest's own field.
        self._declared: dict[str, retention.Retention] = {}
        # Public key object -> the latest retain-until of a digest it verifies (it must last as long).
        self._key_needed: dict[str, tuple[datetime, str]] = {}

    def add(self, code: str, message: str, **where: Any) -> None:
        self.findings.append(Finding(code, message, **where))

    def run(self) -> dict[str, Any]:
        if not self.trusted:
            raise VerifyConfigError("no trusted public key given (--trusted-key)")
        try:
            versions, markers = _list(self.client, self.bucket, self.prefix)
            streams, all_versions = self._classify(versions, markers)
            if not streams:
                # Every started recorder writes at least its stream_start entry: nothing at all
                # means a wrong bucket or prefix, not a clean bill of health.
                raise VerifyConfigError(f"no record streams under s3://{self.bucket}/{self.prefix}")
            digest_hashes: dict[str, dict[int, str]] = {}
            with ThreadPoolExecutor(max_workers=8) as pool:
                # One stream at a time: memory holds the largest stream, not the whole bucket.
                for stream, state in sorted(streams.items()):
                    bodies = [v for table in (state.records, state.digests) for found in table.values()
                              for v in found]
                    list(pool.map(lambda v: _fetch(self.client, self.bucket, v), bodies))
                    self._drop_vanished(stream, state)
                    digest_hashes[stream] = self._verify_stream(stream, state)
                    for version in bodies:
                        version.body = b""
                retention = (dict(zip(map(id, all_versions), pool.map(
                    lambda v: _retention(self.client, self.bucket, v), all_versions), strict=True))
                    if self.check_retention else {})
        except ClientError as error:
            raise VerifyConfigError(f"cannot read s3://{self.bucket}/{self.prefix}: {error_code(error)}: "
                                    f"{error}") from None
        except BotoCoreError as error:
            raise VerifyConfigError(f"cannot reach the S3 endpoint: {error}") from None
        self._verify_links(streams, digest_hashes)
        if self.check_retention:
            for version in all_versions:
                self._verify_retention(version, retention[id(version)])
        return self.report(len(all_versions))

    # -- listing -----------------------------------------------------------------------------------
    def _classify(self, versions: dict[str, list[Version]], markers: list[dict[str, Any]]
                  ) -> tuple[dict[str, StreamState], list[Version]]:
        for marker in markers:
            self.add("delete_marker", "a delete marker hides this object (the locked version is still read)",
                     key=marker["Key"], version_id=marker.get("VersionId"))
        streams: dict[str, StreamState] = defaultdict(StreamState)
        all_versions: list[Version] = []
        for key, found in sorted(versions.items()):
            parsed = layout.parse_key(self.prefix, key)
            if parsed.kind == "unknown":
                self.add("unexpected_object", "object name is not part of the record layout", key=key)
                continue
            all_versions.extend(found)
            if len(found) > 1:
                self.add("overwritten", f"key has {len(found)} versions: it was written again",
                         key=key, stream=parsed.stream or None)
            for version in found:
                if version.version_id is None:
                    self.add("version_metadata_lost", "object is readable but has no S3 version: it was "
                             "written around the S3 API (storage back door)", key=key,
                             stream=parsed.stream or None)
            if parsed.kind == "records":
                streams[parsed.stream].records[parsed.name] = found
            elif parsed.kind == "digest":
                streams[parsed.stream].digests[parsed.number] = found
        return streams, all_versions

    def _drop_vanished(self, stream: str, state: StreamState) -> None:
        """A listed version whose bytes are gone was deleted around the S3 API (back door)."""
        for table in (state.records, state.digests):
            for name, found in list(table.items()):
                readable = [v for v in found if v.body is not None]
                for version in found:
                    if version.body is None:
                        self._vanished.add(version.key)
                        self.add("object_missing", "listed, but its content is gone (deleted around the "
                                 "S3 API)", stream=stream, key=version.key, version_id=version.version_id)
                if readable:
                    table[name] = readable  # type: ignore[index]
                else:
                    del table[name]  # type: ignore[arg-type]

    # -- one stream ----------------------------------------------------------------------------------
    def _verify_stream(self, stream: str, state: StreamState) -> dict[int, str]:
        digests, digest_hashes, listed = self._verify_digests(stream, state)
        entries: dict[int, tuple[str, str, dict[str, Any]]] = {}  # seq -> (stored hash, prev, entry)
        for name in sorted(state.records):
            key = layout.object_key(self.prefix, stream, name)
            parsed = layout.parse_local_name(name)
            chosen = self._choose(state.records[name], listed.get(name))
            if name in listed and hashlib.sha256(chosen.body or b"").hexdigest() != listed[name]:
                self.add("object_modified", "object bytes differ from the SHA-256 its signed digest lists",
                         stream=stream, key=key)
            seqs: list[int] = []
            for number, line in enumerate((chosen.body or b"").splitlines(keepends=True), 1):
                try:
                    decoded = decode_line(line)
                except MalformedEntry as error:
                    self.add("malformed_record", f"line {number}: {error}", stream=stream, key=key)
                    continue
                seq = decoded.seq
                seqs.append(seq)
                if not decoded.intact:
                    self.add("hash_mismatch", f"entry {seq}: content does not match its SHA-256",
                             stream=stream, key=key, seq=seq)
                if decoded.entry["stream"] != stream:
                    self.add("wrong_stream", f"entry {seq} names stream {decoded.entry['stream']}",
                             stream=stream, key=key, seq=seq)
                entries.setdefault(seq, (decoded.stored_hash, str(decoded.entry["prev"]), decoded.entry))
                self._declare(key, retention.declared(str(decoded.entry["kind"]),
                                                      decoded.entry.get("record")))
            expected = list(range(parsed.first, parsed.last + 1))
            if seqs != expected:
                if sorted(seqs) == expected:
                    self.add("reordered", f"entries {parsed.first}..{parsed.last} are stored out of order",
                             stream=stream, key=key)
                else:
                    self.add("seq_mismatch", f"object named for {parsed.first}..{parsed.last} holds "
                             f"sequence numbers {seqs[:3]}...", stream=stream, key=key)
        for name in sorted(set(listed) - set(state.records)):
            if layout.object_key(self.prefix, stream, name) in self._vanished:
                continue
            self.add("object_missing", "a signed digest lists this object but the bucket does not have it",
                     stream=stream, key=layout.object_key(self.prefix, stream, name))
        self._verify_chain(stream, entries, digests)
        for document in digests:
            number, signer = int(document["n"]), document.get("key_id")
            wanted = self._declared.get(layout.object_key(self.prefix, stream, layout.digest_name(number)))
            if not wanted or not wanted.days or not isinstance(signer, str) or number not in state.digests:
                continue
            written = min(v.last_modified for v in state.digests[number])
            needed = written + timedelta(days=wanted.days)
            key = self.prefix + layout.key_name(signer)
            if key not in self._key_needed or needed > self._key_needed[key][0]:
                self._key_needed[key] = (needed, f"digest {number} of {stream}")
        return digest_hashes

    @staticmethod
    def _choose(found: list[Version], listed_sha: str | None) -> Version:
        for version in found:
            if listed_sha and hashlib.sha256(version.body or b"").hexdigest() == listed_sha:
                return version
        return found[0]

    def _verify_digests(self, stream: str, state: StreamState
                        ) -> tuple[list[dict[str, Any]], dict[int, str], dict[str, str]]:
        digests: list[dict[str, Any]] = []
        hashes: dict[int, str] = {}
        listed: dict[str, str] = {}
        expected_n, prev_hash, final_at = 1, None, None
        for number in sorted(state.digests):
            key = layout.object_key(self.prefix, stream, layout.digest_name(number))
            body = self._choose(state.digests[number], None).body or b""
            try:
                document = json.loads(body)
                if document.get("type") != DIGEST_TYPE or document.get("n") != number or \
                        document.get("stream") != stream:
                    raise ValueError("type, number or stream does not match the object name")
            except ValueError as error:
                self.add("malformed_digest", str(error), stream=stream, key=key)
                expected_n, prev_hash = number + 1, None
                continue
            hashes[number] = sha256_hex(body)
            public = self.trusted.get(str(document.get("key_id")))
            if public is None:
                self.add("untrusted_key", f"digest signed by {document.get('key_id')}, not a trusted key",
                         stream=stream, key=key)
            elif not signature_valid(document, public):
                self.add("bad_signature", "digest signature does not verify", stream=stream, key=key)
            if number != expected_n:
                self.add("digest_missing", f"digests {expected_n}..{number - 1} are missing",
                         stream=stream, key=key)
            elif number > 1 and document.get("prev_digest") != prev_hash:
                self.add("digest_chain_broken", "prev_digest does not match the previous digest's hash",
                         stream=stream, key=key)
            if final_at is not None:
                self.add("digest_after_final", f"digest {number} follows final digest {final_at}",
                         stream=stream, key=key)
            if document.get("final"):
                final_at = number
            for item in document.get("objects", []):
                listed[str(item["name"])] = str(item["sha256"])
            digests.append(document)
            expected_n, prev_hash = number + 1, hashes[number]
        return digests, hashes, listed

    def _verify_chain(self, stream: str, entries: dict[int, tuple[str, str, dict[str, Any]]],
                      digests: list[dict[str, Any]]) -> None:
        sealed = max((int(d["last_seq"]) for d in digests), default=0)
        final = any(d.get("final") for d in digests)
        highest = max([*entries, sealed], default=0)
        missing_from: int | None = None
        for seq in range(1, highest + 2):
            if seq <= highest and seq not in entries:
                missing_from = seq if missing_from is None else missing_from
                continue
            if missing_from is not None:
                self.add("gap", f"entries {missing_from}..{seq - 1} are missing", stream=stream,
                         seq=missing_from)
                missing_from = None
            if seq > highest:
                break
            prev = entries[seq][1]
            before = entries.get(seq - 1)
            expected_prev = GENESIS_HASH if seq == 1 else (before[0] if before else None)
            if expected_prev is not None and prev != expected_prev:
                self.add("chain_broken", f"entry {seq} does not link to entry {seq - 1}", stream=stream,
                         seq=seq)
        seqs = sorted(entries)
        running, through = _NOTHING, []  # through[i]: what entries seqs[0..i] asked for
        for seq in seqs:
            entry = entries[seq][2]
            running = running.at_least(retention.declared(str(entry["kind"]), entry.get("record")))
            through.append(running)
        for document in digests:
            last = int(document["last_seq"])
            covered = bisect.bisect_right(seqs, last)
            if covered:
                self._declare(layout.object_key(self.prefix, stream, layout.digest_name(int(document["n"]))),
                              through[covered - 1])
            if last in entries and entries[last][0] != document.get("last_hash"):
                self.add("digest_mismatch", f"digest {document['n']} signs a different hash for entry {last}",
                         stream=stream, seq=last)
        top = max(entries, default=0)
        info: dict[str, Any] = {"entries": len(entries), "last_seq": top, "digests": len(digests),
                                "sealed_through": sealed, "closed": final, "unsealed_tail": None}
        if top > sealed:
            tail = {"from_seq": sealed + 1, "to_seq": top, "count": top - sealed}
            if final:
                self.add("records_after_final_digest", f"entries {sealed + 1}..{top} follow the final digest",
                         stream=stream, seq=sealed + 1)
            else:
                info["unsealed_tail"] = tail
                self.add("unsealed_tail", f"entries {sealed + 1}..{top} are after the last signed digest; "
                         "the stream did not shut down cleanly (crash) or is still running",
                         stream=stream, seq=sealed + 1)
        start = entries.get(1)
        info["prev_stream"] = start[2].get("record", {}).get("prev_stream") if start else None
        self.streams[stream] = info

    def _declare(self, key: str, wanted: retention.Retention | None) -> None:
        self._declared[key] = self._declared.get(key, _NOTHING).at_least(wanted)

    def _verify_links(self, streams: dict[str, StreamState], hashes: dict[str, dict[int, str]]) -> None:
        for stream, info in self.streams.items():
            link = info.get("prev_stream")
            if not isinstance(link, dict) or not link.get("stream"):
                continue
            previous = str(link["stream"])
            number = int(link.get("digest_n") or 0)
            if link.get("prefix", self.prefix) != self.prefix:
                info["prev_stream_elsewhere"] = True  # shipped under another prefix: verify that one too
                continue
            if previous not in streams:
                self.add("stream_missing", f"previous stream {previous} of this pod is not in the bucket",
                         stream=stream)
            elif number:
                if number not in hashes[previous]:
                    self.add("digest_missing", f"digest {number} of {previous}, named by its successor, "
                             "is missing", stream=previous)
                elif hashes[previous][number] != link.get("digest_hash"):
                    self.add("stream_link_broken", f"link to {previous} digest {number} does not match",
                             stream=stream)

    def _verify_retention(self, version: Version, lock: dict[str, Any]) -> None:
        where = {"key": version.key, "version_id": version.version_id}
        if not lock.get("mode") or not lock.get("until"):
            self.add("retention_missing", "object version has no Object Lock retention", **where)
            return
        declared = self._declared.get(version.key, _NOTHING)
        strength = retention.MODE_STRENGTH.get(str(lock["mode"]), 0)
        # Stricter than asked is fine: a segment holding a COMPLIANCE record is COMPLIANCE-locked
        # even where --mode GOVERNANCE is the bucket-wide minimum.
        if strength < retention.MODE_STRENGTH[self.expected_mode]:
            self.add("retention_mode", f"locked in {lock['mode']}, expected at least {self.expected_mode}",
                     **where)
        elif strength < retention.MODE_STRENGTH.get(declared.mode, 0):
            self.add("retention_mode", f"locked in {lock['mode']}, but its records' policy decisions "
                     f"declared {declared.mode}", **where)
        until: datetime = lock["until"]
        days, source = self.retention_days or 0, "--retention-days"
        if declared.days > days:
            days, source = declared.days, "its records' policy decisions"
        if days:
            wanted = version.last_modified + timedelta(days=days) - RETENTION_TOLERANCE
            if until < wanted:
                self.add("retention_short", f"retained until {until.isoformat()}, but {source} require at "
                         f"least {days} days after {version.last_modified.isoformat()}", **where)
        elif until <= version.last_modified:
            self.add("retention_short", "retain-until is not after the write time", **where)
        if version.key in self._key_needed:
            needed, by = self._key_needed[version.key]
            if until < needed - RETENTION_TOLERANCE:
                self.add("retention_short", f"public key retained until {until.isoformat()}, but {by} "
                         f"it verifies must be kept (per its records' policy decisions) until "
                         f"{needed.isoformat()}", **where)

    def report(self, objects: int) -> dict[str, Any]:
        severities = {f.severity for f in self.findings}
        code = EXIT_INTEGRITY if INTEGRITY in severities else EXIT_GAP if GAP in severities else EXIT_OK
        summary: dict[str, int] = defaultdict(int)
        for finding in self.findings:
            summary[finding.code] += 1
        return {"ok": code == EXIT_OK, "exit_code": code, "bucket": self.bucket, "prefix": self.prefix,
                "checked_at": self.now.isoformat(), "objects": objects,
                "trusted_keys": sorted(self.trusted), "retention_checked": self.check_retention,
                "streams": self.streams, "summary": dict(summary),
                "findings": [asdict(f) for f in self.findings]}


def verify(client: Any, bucket: str, prefix: str, trusted: dict[str, Ed25519PublicKey],
           **options: Any) -> dict[str, Any]:
    return Verifier(client, bucket, prefix, trusted, **options).run()
