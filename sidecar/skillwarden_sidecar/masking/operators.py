"""What a finding becomes in the output: `[ENTITY]`, `****1111` or a keyed `<ENTITY:hm_…>` token.

Every replacement is plain ASCII without quotes or backslashes, so it can be spliced into a JSON
string literal (the streaming masker does so for `input_json_delta`) without escaping.
"""

from __future__ import annotations

import hmac

from skillwarden_sidecar.masking.detectors import Detector


def normalise(detector: Detector, value: str) -> str:
    """The canonical form that the hmac token is computed over, so formats of one value join."""
    if detector.normalize == "digits":
        return "".join(c for c in value if c.isdigit())
    if detector.normalize == "lower":
        return value.lower()
    if detector.normalize == "compact":
        return "".join(value.split())
    return value


def redact(entity: str) -> str:
    return f"[{entity}]"


def partial(value: str) -> str:
    significant = [c for c in value if c.isalnum()]
    if len(significant) < 8:
        return "****"  # too short to keep anything without revealing most of it
    return "****" + "".join(significant[-4:])


def hmac_token(entity: str, canonical: str, key: bytes) -> str:
    # hmac.digest: the one-shot C path (same HMAC-SHA256 as hmac.new(...).hexdigest(), without
    # building an HMAC object per finding).
    digest = hmac.digest(key, f"{entity}\x00{canonical}".encode(), "sha256").hex()
    return f"<{entity}:hm_{digest[:16]}>"


def replacement(detector: Detector, operator: str, value: str, key: bytes) -> str:
    if operator == "partial":
        return partial(value)
    if operator == "hmac":
        return hmac_token(detector.entity, normalise(detector, value), key)
    return redact(detector.entity)
