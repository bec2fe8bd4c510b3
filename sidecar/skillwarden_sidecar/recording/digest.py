"""Signed digests: CloudTrail-style checkpoints of one stream.

A digest names the last sequence number and entry hash it covers (which commits to every earlier
entry through the hash chain), lists the record objects sealed since the previous digest with
their SHA-256, links to the previous digest by hash, and is signed with Ed25519 over its canonical
form without the `signature` field. Digests are written at a fixed interval even when no request
arrived (an idle digest proves the stream was alive and nothing was dropped) and once more, with
`final: true`, on a clean shutdown.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from skillwarden_sidecar.recording.entry import canonical, sha256_hex, timestamp
from skillwarden_sidecar.recording.keys import key_id

DIGEST_TYPE = "skillwarden.digest.v1"


@dataclass(frozen=True)
class SealedObject:
    name: str  # relative to the stream, e.g. records/000000000001-000000000042.jsonl
    first_seq: int
    last_seq: int
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "first_seq": self.first_seq, "last_seq": self.last_seq,
                "sha256": self.sha256}


def build_digest(key: Ed25519PrivateKey, *, stream: str, number: int, moment: datetime, last_seq: int,
                 last_hash: str, prev_digest_hash: str | None, objects: list[SealedObject],
                 final: bool, retention: dict[str, Any] | None = None) -> tuple[bytes, str]:
    """Returns (canonical signed document, its SHA-256 — the next digest's `prev_digest`)."""
    document: dict[str, Any] = {
        "type": DIGEST_TYPE, "stream": stream, "n": number, "time": timestamp(moment),
        "last_seq": last_seq, "last_hash": last_hash, "prev_digest": prev_digest_hash,
        "objects": [o.as_dict() for o in objects], "final": final, "key_id": key_id(key.public_key()),
    }
    if retention is not None:
        # The stream's running maximum: how long the shipper locks this digest (verify re-derives
        # the requirement from the entries and does not trust this field).
        document["retention"] = retention
    document["signature"] = base64.b64encode(key.sign(canonical(document))).decode()
    data = canonical(document)
    return data, sha256_hex(data)


def signature_valid(document: dict[str, Any], public: Ed25519PublicKey) -> bool:
    unsigned = {k: v for k, v in document.items() if k != "signature"}
    try:
        public.verify(base64.b64decode(str(document.get("signature", ""))), canonical(unsigned))
    except (InvalidSignature, ValueError):
        return False
    return True
