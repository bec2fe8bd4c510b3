"""Notification signing (Slack's v0 scheme) and the message a channel receives."""

from __future__ import annotations

import pytest

from skillwarden_sidecar.notify import message, sign, verify_signature

SECRET = b"8f742231b10e8888abcd99yyyzzz85a5"
BODY = b'{"text":"hi"}'
# Computed independently: printf 'v0:1531420618:{"text":"hi"}' | openssl dgst -sha256 -hmac SECRET
EXPECTED = "v0=3c845145a8caa62f289d00958c6363dbf0c78e22dbbc2e7d560063c939d2e720"


def test_signature_matches_an_independent_hmac() -> None:
    assert sign(SECRET, "1531420618", BODY) == EXPECTED


@pytest.mark.parametrize(
    ("timestamp", "body", "signature", "now", "ok"),
    [
        ("1531420618", BODY, EXPECTED, 1531420618, True),
        ("1531420618", BODY, EXPECTED, 1531420618 + 300, True),
        ("1531420618", BODY, EXPECTED, 1531420618 + 301, False),  # replay outside the 5-minute window
        ("1531420618", BODY, EXPECTED, 1531420618 - 301, False),
        ("1531420618", b'{"text":"hi!"}', EXPECTED, 1531420618, False),  # body tampered
        ("1531420619", BODY, EXPECTED, 1531420618, False),  # timestamp tampered
        ("1531420618", BODY, EXPECTED[:-1] + "1", 1531420618, False),
        ("1531420618", BODY, "", 1531420618, False),
        ("-1", BODY, EXPECTED, 1531420618, False),
    ],
)
def test_verification(timestamp: str, body: bytes, signature: str, now: float, ok: bool) -> None:
    assert verify_signature(SECRET, timestamp, body, signature, now) is ok


def test_no_secret_never_verifies() -> None:
    assert not verify_signature(b"", "1531420618", BODY, sign(b"", "1531420618", BODY), 1531420618)


def test_messages_name_the_approval_and_how_to_review_but_carry_no_prompt() -> None:
    view = {
        "name": "bot-x1",
        "namespace": "finance",
        "state": "Pending",
        "required": 2,
        "rule": "customer-export",
        "policy": "finance/p",
        "expiresAt": "2026-11-24T12:30:00Z",
        "requestDigest": "sha256:ab",
        "reviews": [],
    }
    spec = {
        "requester": {"identity": {"sub": "alice"}},
        "request": {"skillSummary": "anthropic:xlsx", "promptSummary": "export [EMAIL_ADDRESS]"},
    }
    created = message("created", view, spec)
    assert "finance/bot-x1 needs 2 approval(s)" in created["text"]
    assert "skillwarden approvals approve bot-x1 -n finance" in created["text"]
    assert "alice" in created["text"] and "anthropic:xlsx" in created["text"]
    assert "export" not in created["text"].split("\n", 1)[0] and "EMAIL" not in str(created)
    assert created["blocks"][0]["text"]["text"] == created["text"]
    decided = message(
        "decided",
        {**view, "state": "Denied", "reviews": [{"reviewer": "bob", "decision": "Deny", "reason": "no"}]},
        spec,
    )
    assert "is Denied" in decided["text"] and "bob Deny: no" in decided["text"]
    assert decided["skillwarden"]["event"] == "decided"
