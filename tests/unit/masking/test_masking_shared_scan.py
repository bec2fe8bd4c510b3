"""One scan for two maskers (record + upstream/client) must give exactly what each masker alone gives."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from skillwarden_sidecar.masking import BUILTIN_ENTITIES, Masker, MaskingSpec
from skillwarden_sidecar.masking.engine import SharedScan
from skillwarden_sidecar.masking.spec import CustomPattern
from skillwarden_sidecar.masking.structured import mask_request_body

KEY = b"shared-scan-key"
CUSTOM = [CustomPattern("EMPLOYEE_ID", "EMP-[0-9]{6}")]
# Fragments that trigger detectors alone and overlapping each other (an e-mail holding digits
# that look like a phone number, a card next to an IBAN, a key inside a URL).
FRAGMENTS = ["alice.smith@example.com", "+1 415 555 0100", "4111 1111 1111 1111", "536-22-8726",
             "GB82 WEST 1234 5698 7654 32", "10.1.2.3", "AKIAIOSFODNN7EXAMPLE", "EMP-123456",
             "bob+555-0100@mail.example.org", "x", " ", "\n", "é", "日本", "-", "@", "1234"]
OPERATORS = {"EMAIL_ADDRESS": "hmac", "CREDIT_CARD": "partial", "PHONE_NUMBER": "hmac"}


def masker(entities: frozenset[str]) -> Masker:
    return Masker(MaskingSpec(entities, dict(OPERATORS), list(CUSTOM), KEY, "k1"))


WIDE = masker(BUILTIN_ENTITIES | {"EMPLOYEE_ID"})


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=12),
       st.sets(st.sampled_from(sorted(BUILTIN_ENTITIES | {"EMPLOYEE_ID"})), min_size=1))
def test_shared_scan_equals_two_scans(pieces: list[str], narrow_entities: set[str]) -> None:
    text = "".join(pieces)
    narrow = masker(frozenset(narrow_entities))
    shared = SharedScan(WIDE, narrow)
    assert shared.wide_view.mask_text(text) == WIDE.mask_text(text)
    assert shared.narrow_view.mask_text(text) == narrow.mask_text(text)


def test_request_walks_share_one_scan_and_match_separate_masking() -> None:
    body = {"system": "contact alice.smith@example.com",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "card 4111 1111 1111 1111"}]},
                         {"role": "user", "content": "EMP-123456 and 536-22-8726"}]}
    narrow = masker(frozenset({"EMAIL_ADDRESS", "CREDIT_CARD"}))
    shared = SharedScan(WIDE, narrow)
    calls = Counter[str]()
    original = WIDE._candidates

    def counting(*args: object) -> object:
        calls["scan"] += 1
        return original(*args)  # type: ignore[arg-type]

    WIDE._candidates = counting  # type: ignore[method-assign,assignment]
    try:
        wide_masked, wide_counts = mask_request_body(shared.wide_view, body)
        narrow_masked, narrow_counts = mask_request_body(shared.narrow_view, body)
    finally:
        del WIDE._candidates
    assert calls["scan"] == 3  # three strings, each scanned once for both walks
    assert (wide_masked, wide_counts) == mask_request_body(WIDE, body)
    assert (narrow_masked, narrow_counts) == mask_request_body(narrow, body)
    assert "536-22-8726" in str(narrow_masked) and "536-22-8726" not in str(wide_masked)


def test_narrow_must_be_a_subset() -> None:
    import pytest
    with pytest.raises(ValueError):
        SharedScan(masker(frozenset({"EMAIL_ADDRESS"})), masker(frozenset({"CREDIT_CARD"})))
