"""Every detector finds its formats and refuses look-alikes (table-driven)."""

from __future__ import annotations

import pytest

from skillwarden_sidecar.masking import Masker, MaskingSpec
from skillwarden_sidecar.masking.validators import iban_mod97, luhn_ok

POSITIVES = [
    ("EMAIL_ADDRESS", "write to jane.doe+billing@mail.example.co.uk today",
     "jane.doe+billing@mail.example.co.uk"),
    ("PHONE_NUMBER", "call +1 415 555 2671 now", "+1 415 555 2671"),
    ("PHONE_NUMBER", "call +442079460958.", "+442079460958"),
    ("PHONE_NUMBER", "office (415) 555-2671 ext", "(415) 555-2671"),
    ("PHONE_NUMBER", "office 415.555.2671 ext", "415.555.2671"),
    ("PHONE_NUMBER", "Tel +49 30 901820 Berlin", "+49 30 901820"),
    ("CREDIT_CARD", "card 4111 1111 1111 1111 exp", "4111 1111 1111 1111"),
    ("CREDIT_CARD", "card 5500-0000-0000-0004 exp", "5500-0000-0000-0004"),
    ("CREDIT_CARD", "amex 3782 822463 10005 ok", "3782 822463 10005"),
    ("CREDIT_CARD", "raw 4012888888881881.", "4012888888881881"),
    ("IBAN_CODE", "pay DE89 3704 0044 0532 0130 00 now", "DE89 3704 0044 0532 0130 00"),
    ("IBAN_CODE", "pay GB82WEST12345698765432 now", "GB82WEST12345698765432"),
    ("US_SSN", "ssn 536-22-8472 on file", "536-22-8472"),
    ("US_SSN", "ssn 536 22 8472 on file", "536 22 8472"),
    ("IP_ADDRESS", "from 203.0.113.77 at", "203.0.113.77"),
    ("IP_ADDRESS", "v6 2001:db8:85a3::8a2e:370:7334 here", "2001:db8:85a3::8a2e:370:7334"),
    ("IP_ADDRESS", "mapped ::ffff:192.0.2.128 here", "::ffff:192.0.2.128"),
    ("AWS_ACCESS_KEY", "key AKIAIOSFODNN7EXAMPLE used", "AKIAIOSFODNN7EXAMPLE"),
    ("API_KEY", "gh ghp_" + "A1b2" * 9 + " x", "ghp_" + "A1b2" * 9),
    ("API_KEY", "slack xoxb-123456789012-abcdefABCDEF x", "xoxb-123456789012-abcdefABCDEF"),
    ("API_KEY", "key sk-ant-api03-" + "aB3_" * 23 + "AA end", "sk-ant-api03-" + "aB3_" * 23 + "AA"),
    ("API_KEY", "key sk-proj-" + "Xy9k" * 12 + " end", "sk-proj-" + "Xy9k" * 12),
    ("JWT", "bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl ok",
     "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"),
]

NEGATIVES = [
    "order 4111 1111 1111 1112 shipped",  # fails Luhn
    "ssn 123-45-6789 is the sample",  # advertised sample
    "ssn 078-05-1120 woolworth",
    "ssn 000-12-3456 bad area",
    "ssn 666-12-3456 bad area",
    "ssn 912-12-3456 bad area",
    "ssn 536-00-8472 bad group",
    "ssn 536-22-0000 bad serial",
    "ssn 536-22 8472 mixed delimiters",
    "version 10.0.19045.2965 and 1.2.3",
    "uuid 123e4567-e89b-12d3-a456-426614174000",
    "sha 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "isbn 978-3-16-148410-0",
    "date 2024-01-15 and 15/01/2024 at 12:30:45",
    "price $1,234.56 or 1 234 567,89 EUR",
    "iban DE89 3704 0044 0532 0130 01 wrong check",
    "slug sk-some-long-readable-slug-name here",
    "time 10:30 and ratio 3:2:1",
    "ip 256.1.1.1 and 01.02.03.04",
]


@pytest.mark.parametrize(("entity", "text", "value"), POSITIVES)
def test_detector_finds_value(masker: Masker, entity: str, text: str, value: str) -> None:
    result = masker.mask_text(text)
    assert [(f.entity, text[f.start : f.end]) for f in result.findings] == [(entity, value)]
    assert value not in result.text
    assert f"[{entity}]" in result.text


@pytest.mark.parametrize("text", NEGATIVES)
def test_look_alikes_are_left_alone(masker: Masker, text: str) -> None:
    result = masker.mask_text(text)
    assert result.findings == []
    assert result.text == text


def test_private_key_block_is_masked_whole(masker: Masker) -> None:
    body = ("MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n"
            "VJTUt9Us8cKjMzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dV\n")
    pem = f"-----BEGIN RSA PRIVATE KEY-----\n{body}-----END RSA PRIVATE KEY-----"
    result = masker.mask_text(f"here:\n{pem}\nthanks")
    assert result.text == "here:\n[PRIVATE_KEY]\nthanks"


def test_truncated_private_key_is_masked_to_the_end_of_its_body(masker: Masker) -> None:
    result = masker.mask_text("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC, cut off")
    assert result.text == "[PRIVATE_KEY], cut off"


def test_offsets_are_code_points_with_multibyte_text(masker: Masker) -> None:
    text = "Grüße 😀 an jane@example.com — 536-22-8472"
    result = masker.mask_text(text)
    assert [text[f.start : f.end] for f in result.findings] == ["jane@example.com", "536-22-8472"]
    assert result.text == "Grüße 😀 an [EMAIL_ADDRESS] — [US_SSN]"


def test_only_selected_entities_are_masked() -> None:
    masker = Masker(MaskingSpec(frozenset({"US_SSN"})))
    result = masker.mask_text("jane@example.com 536-22-8472")
    assert result.text == "jane@example.com [US_SSN]"


def test_checksums() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_mod97("GB82WEST12345698765432") and not iban_mod97("GB82WEST12345698765433")
