"""Operators: redact label, partial keeps the last four, keyed hmac tokens join across formats."""

from __future__ import annotations

import pytest

from skillwarden_sidecar.masking import (
    BUILTIN_ENTITIES,
    CustomPattern,
    CustomPatternError,
    Masker,
    MaskingBudgetExceeded,
    MaskingSpec,
    MaskingSpecError,
    validate_custom_pattern,
)


def _masker(operators: dict[str, str], key: bytes = b"k") -> Masker:
    return Masker(MaskingSpec(BUILTIN_ENTITIES, operators, [], key, "key-1"))


def test_partial_keeps_last_four() -> None:
    assert _masker({"CREDIT_CARD": "partial"}).mask_text("4111-1111-1111-1111").text == "****1111"


def test_hmac_is_keyed_deterministic_and_format_independent() -> None:
    masker = _masker({"CREDIT_CARD": "hmac", "EMAIL_ADDRESS": "hmac"})
    a = masker.mask_text("4111 1111 1111 1111").text
    b = masker.mask_text("4111-1111-1111-1111").text
    assert a == b and a.startswith("<CREDIT_CARD:hm_") and len(a) == len("<CREDIT_CARD:hm_>") + 16
    assert masker.mask_text("Jane@Example.com").text == masker.mask_text("jane@example.com").text
    other_key = _masker({"CREDIT_CARD": "hmac"}, key=b"other").mask_text("4111 1111 1111 1111").text
    assert other_key != a
    assert masker.hmac_key_id == "key-1"


def test_hmac_without_key_is_refused() -> None:
    with pytest.raises(MaskingSpecError, match="hmac needs a key"):
        MaskingSpec(BUILTIN_ENTITIES, {"US_SSN": "hmac"})


def test_unknown_operator_and_entity_name_the_field() -> None:
    with pytest.raises(MaskingSpecError, match=r"operators\.US_SSN"):
        MaskingSpec(BUILTIN_ENTITIES, {"US_SSN": "shred"})
    with pytest.raises(MaskingSpecError, match="NOPE"):
        MaskingSpec(frozenset({"NOPE"}))


def test_custom_pattern_is_masked() -> None:
    spec = MaskingSpec(frozenset({"EMPLOYEE_ID"}), custom=[CustomPattern("EMPLOYEE_ID", r"EMP-[0-9]{6}")])
    assert Masker(spec).mask_text("by EMP-004211 today").text == "by [EMPLOYEE_ID] today"


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [("EMP-(", "not a valid RE2"), ("x*", "empty string"), (r"(a)\1", "not a valid RE2"),
     ("x" * 5000, "1..4096")],
)
def test_bad_custom_patterns_are_refused(pattern: str, reason: str) -> None:
    with pytest.raises(CustomPatternError, match=reason):
        validate_custom_pattern("EMPLOYEE_ID", pattern)


def test_from_decision_directions() -> None:
    decision = {"upstream": ["US_SSN"], "client": ["EMAIL_ADDRESS"], "operators": {"US_SSN": "partial"},
                "custom": [{"name": "EMPLOYEE_ID", "pattern": "EMP-[0-9]{6}"}]}
    upstream = MaskingSpec.from_decision(decision, "upstream", b"k", "k1")
    record = MaskingSpec.from_decision(decision, "record", b"k", "k1")
    assert upstream.entities == {"US_SSN"}
    assert record.entities == BUILTIN_ENTITIES | {"EMPLOYEE_ID"}
    text = "536-22-8472 jane@example.com EMP-000001"
    assert Masker(upstream).mask_text(text).text == "****8472 jane@example.com EMP-000001"
    assert Masker(record).mask_text(text).text == "****8472 [EMAIL_ADDRESS] [EMPLOYEE_ID]"


def test_size_budget_fails_closed_or_raises() -> None:
    text = "jane@example.com " * 100
    closed = Masker(MaskingSpec(BUILTIN_ENTITIES, max_text_bytes=1000))
    result = closed.mask_text(text)
    assert result.text == "[MASKING_BUDGET_EXCEEDED]"
    assert result.findings[0].entity == "MASKING_BUDGET_EXCEEDED"
    raising = Masker(MaskingSpec(BUILTIN_ENTITIES, max_text_bytes=1000, on_budget="raise"))
    with pytest.raises(MaskingBudgetExceeded):
        raising.mask_text(text)


def test_time_budget_fails_closed() -> None:
    dense = "536-22-8472 " * 50_000
    result = Masker(MaskingSpec(BUILTIN_ENTITIES, max_scan_seconds=0.0)).mask_text(dense)
    assert result.text == "[MASKING_BUDGET_EXCEEDED]"


def test_unbounded_custom_pattern_is_accepted_and_masks() -> None:
    spec = MaskingSpec(frozenset({"TICKET"}), custom=[CustomPattern("TICKET", r"TCK-[0-9]+")])
    assert Masker(spec).mask_text("see TCK-1234567890 now").text == "see [TICKET] now"
