"""The SHA-256 digest an approval is bound to: the exact request, from the exact caller.

Canonical JSON (RFC 8785) over the parsed body, so key order and whitespace do not matter but every
value does: an edited prompt, another model, a higher max_tokens or another caller all give a
different digest and need a new approval. The digest is taken over the body as the client sent
it (before masking), because that is what the approver was asked about.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import rfc8785

DIGEST_VERSION = 1


def request_digest(
    method: str, path: str, body: Any, identity: Mapping[str, Any], workload: Mapping[str, Any]
) -> str:
    document = {
        "v": DIGEST_VERSION,
        "route": {"method": method.upper(), "path": path},
        "identity": {key: identity.get(key) or "" for key in ("kind", "iss", "sub")},
        "workload": {key: workload.get(key) or "" for key in ("namespace", "service_account")},
        "body": body,
    }
    return "sha256:" + hashlib.sha256(rfc8785.dumps(document)).hexdigest()
