"""Shared helpers for the masking unit tests."""

from __future__ import annotations

import pytest

from skillwarden_sidecar.masking import BUILTIN_ENTITIES, Masker, MaskingSpec


@pytest.fixture(scope="session")
def masker() -> Masker:
    return Masker(MaskingSpec(BUILTIN_ENTITIES, hmac_key=b"test-key", hmac_key_id="k1"))
