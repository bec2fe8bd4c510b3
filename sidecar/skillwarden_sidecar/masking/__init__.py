"""Masking of regulated data and secrets: requests, responses, SSE streams and records.

See docs/masking.md. The API below is the contract with the sidecar (CONTRACTS.md).
"""

from __future__ import annotations

from skillwarden_sidecar.masking.custom import CustomPatternError, validate_custom_pattern
from skillwarden_sidecar.masking.engine import Finding, Masker, MaskingBudgetExceeded, MaskResult
from skillwarden_sidecar.masking.entities import BUILTIN_ENTITIES, DETECTOR_VERSION
from skillwarden_sidecar.masking.spec import CustomPattern, MaskingSpec, MaskingSpecError

__all__ = [
    "BUILTIN_ENTITIES",
    "DETECTOR_VERSION",
    "CustomPattern",
    "CustomPatternError",
    "Finding",
    "MaskResult",
    "Masker",
    "MaskingBudgetExceeded",
    "MaskingSpec",
    "MaskingSpecError",
    "validate_custom_pattern",
]
