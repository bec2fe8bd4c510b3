"""`skillwarden mask` as a user runs it: a real subprocess, stdin to stdout."""

from __future__ import annotations

import json
import subprocess
import sys

CLI = [sys.executable, "-m", "skillwarden_cli.main", "mask"]


def mask(stdin: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*CLI, *args], input=stdin, capture_output=True, timeout=60, check=False)


def test_text_format_masks_everything_by_default() -> None:
    done = mask("Grüße, jane@example.com / 536-22-8472\n".encode())
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode() == "Grüße, [EMAIL_ADDRESS] / [US_SSN]\n"


def test_json_offsets_are_code_points_into_the_input() -> None:
    text = "😀 card 4111 1111 1111 1111 mail a@b.io"
    done = mask(text.encode(), "--format", "json", "--operator", "CREDIT_CARD=partial")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["text"] == "😀 card ****1111 mail [EMAIL_ADDRESS]"
    spans = [(f["entity"], text[f["start"]:f["end"]]) for f in document["findings"]]
    assert spans == [("CREDIT_CARD", "4111 1111 1111 1111"), ("EMAIL_ADDRESS", "a@b.io")]


def test_entities_and_custom_patterns() -> None:
    done = mask(b"EMP-123456 a@b.io 536-22-8472", "--entities", "US_SSN,EMPLOYEE_ID",
                "--custom", "EMPLOYEE_ID=EMP-[0-9]{6}")
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"[EMPLOYEE_ID] a@b.io [US_SSN]"


def test_hmac_needs_a_key_and_uses_it() -> None:
    refused = mask(b"a@b.io", "--operator", "EMAIL_ADDRESS=hmac")
    assert refused.returncode == 2 and b"hmac needs a key" in refused.stderr
    done = subprocess.run([*CLI, "--operator", "EMAIL_ADDRESS=hmac"], input=b"a@b.io", capture_output=True,
                          env={"SKILLWARDEN_MASK_HMAC_KEY": "secret", "PATH": ""}, timeout=60, check=False)
    assert done.returncode == 0 and done.stdout.startswith(b"<EMAIL_ADDRESS:hm_")


def test_invalid_utf8_is_a_clear_error() -> None:
    done = mask(b"ok \xff\xfe jane@example.com")
    assert done.returncode == 2
    assert b"not valid UTF-8 (byte 3" in done.stderr
    assert done.stdout == b""


def test_unknown_entity_and_bad_pattern_exit_2() -> None:
    assert b"NOPE" in mask(b"x", "--entities", "NOPE").stderr
    bad = mask(b"x", "--custom", "X=(")
    assert bad.returncode == 2 and b"not a valid RE2" in bad.stderr


def test_over_budget_input_writes_nothing() -> None:
    done = mask(b"a" * 5000, "--max-bytes", "1000")
    assert done.returncode == 3 and done.stdout == b"" and b"budget" in done.stderr
