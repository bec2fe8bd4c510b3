"""Checks that turn a regex candidate into a finding (checksums, registries of invalid values).

Each validator sees the whole UTF-8 buffer and the candidate's byte span, so it can also look at the
neighbouring bytes (RE2 has no look-around). Left neighbours: at most 10 bytes back (the streaming
masker keeps 12 characters of context). Right neighbours: free — a candidate that ends where the
text received so far ends is made only of its entity's characters, so the streaming masker holds it
back until the neighbour is known.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
from collections.abc import Callable

Validator = Callable[[bytes, int, int], bool]

_DIGITS = frozenset(b"0123456789")
_ALNUM = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_WORD = _ALNUM | {ord("_")}
_HEX = frozenset(b"0123456789ABCDEFabcdef")
_SEPARATORS = frozenset(b" .-")

# Left neighbours each validator rejects (used by the engine to skip hopeless restarts).
DIGITS = _DIGITS
ALNUM = _ALNUM
WORD_DASH = _WORD | {ord("-")}
EMAIL_NO_START_AFTER = _WORD | frozenset(b".+-%")
PHONE_NO_START_AFTER = _WORD | frozenset(b"+-.")
HEX_WORD = _HEX | {ord("_")}


def _before(buf: bytes, start: int) -> int:
    return buf[start - 1] if start > 0 else -1


def _after(buf: bytes, end: int) -> int:
    return buf[end] if end < len(buf) else -1


def luhn_ok(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


_CARD_PREFIXES = ("4", "5", "2", "34", "37", "36", "38", "30", "35", "6")


def _iban_shaped_prefix(buf: bytes, start: int) -> bool:
    """`XX99 ` (country letters and check digits) right before `start`, optionally plus one bank
    code group (`XX99 ABCD `)."""
    for back in (5, 10):
        head = buf[max(0, start - back):start]
        if len(head) == back and head[-1:] == b" " and head[:2].isupper() and head[2:4].isdigit():
            if back == 5 or (head[4:5] == b" " and head[5:9].isalnum()):
                return True
    return False


# Grouped card length -> where its separators are (4-4-4-4, 4-4-4-4-3, 4-6-5, 4-6-4).
_CARD_GAPS: dict[int, tuple[int, ...]] = {19: (4, 9, 14), 23: (4, 9, 14, 19), 17: (4, 11), 16: (4, 11)}


def credit_card(buf: bytes, start: int, end: int) -> bool:
    # Cheapest checks first: pathological digit runs produce a candidate per position.
    if _before(buf, start) in _DIGITS or _after(buf, end) in _DIGITS:
        return False
    value = buf[start:end]
    digits = value.translate(None, b" .-")
    if not 13 <= len(digits) <= 19:
        return False
    if len(digits) != len(value):
        if len(set(value.translate(None, b"0123456789"))) > 1:
            return False  # mixed separators
        # Grouped cards come as 4-4-4-4(-3), 4-6-5 (Amex) or 4-6-4 (Diners).
        gaps = _CARD_GAPS.get(len(value))
        if gaps is None or any(value[i] in _DIGITS for i in gaps) or len(digits) + len(gaps) != len(value):
            return False
    text = digits.decode("ascii")
    if len(set(text)) == 1 or not text.startswith(_CARD_PREFIXES):
        return False
    if _iban_shaped_prefix(buf, start):
        return False  # the account part of an IBAN-shaped string (with a wrong checksum)
    return luhn_ok(text)


# ISO 13616 lengths per country (the common registry entries).
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18,
    "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
    "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip


def iban_mod97(compact: str) -> bool:
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(c, 36)) for c in rearranged)
    return int(number) % 97 == 1


def iban(buf: bytes, start: int, end: int) -> bool:
    if _before(buf, start) in _ALNUM or _after(buf, end) in _ALNUM:
        return False
    value = buf[start:end].decode("ascii")
    compact = value.replace(" ", "")
    if IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    if " " in value:
        groups = value.split(" ")
        if any(len(g) != 4 for g in groups[:-1]) or not 1 <= len(groups[-1]) <= 4:
            return False
    return iban_mod97(compact)


# Numbers published in advertising or documentation; never issued to a person.
SSN_KNOWN_SAMPLES = frozenset({"123456789", "078051120", "219099999", "457555462"})


def us_ssn(buf: bytes, start: int, end: int) -> bool:
    if _before(buf, start) in _WORD | {ord("-")} or _after(buf, end) in _WORD | {ord("-")}:
        return False
    value = buf[start:end].decode("ascii")
    digits = "".join(c for c in value if c.isdigit())
    if len(digits) != 9 or len({c for c in value if not c.isdigit()}) > 1:
        return False
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    if area in {"000", "666"} or area[0] == "9" or group == "00" or serial == "0000":
        return False
    return digits not in SSN_KNOWN_SAMPLES


def phone(buf: bytes, start: int, end: int) -> bool:
    if _before(buf, start) in _WORD | {ord("+"), ord("-"), ord(".")}:
        return False
    if _after(buf, end) in _DIGITS:
        return False
    value = buf[start:end].decode("ascii")
    if value.startswith("00") and start > 1 and buf[start - 1] in _SEPARATORS and buf[start - 2] in _DIGITS:
        return False  # "00 ..." inside a longer digit run (an IBAN, an account number) is no prefix
    digits = "".join(c for c in value if c.isdigit())
    rest = value.split(") ", 1)[-1] if value.startswith("(") else value
    separators = {c for c in rest if c in " .-"}
    if len(separators) > 1 and not (value.startswith(("+", "00")) and separators <= {" ", "-"}):
        return False
    if value.startswith("+"):
        return 8 <= len(digits) <= 15
    if value.startswith("00"):
        return 10 <= len(digits) <= 17  # "00" replaces "+" in many countries
    # North American numbers: area and exchange codes never start with 0 or 1.
    return len(digits) == 10 and digits[0] not in "01" and digits[3] not in "01"


def ipv4(buf: bytes, start: int, end: int) -> bool:
    before, after = _before(buf, start), _after(buf, end)
    if before in _WORD | {ord(".")} or after in _WORD:
        return False
    if after == ord(".") and _after(buf, end + 1) in _DIGITS:
        return False  # a fifth component: a version string, not an address
    parts = buf[start:end].decode("ascii").split(".")
    if any(len(p) > 1 and p[0] == "0" for p in parts):
        return False
    return all(int(p) <= 255 for p in parts)


def ipv6(buf: bytes, start: int, end: int) -> bool:
    if _before(buf, start) in _HEX | {ord(":"), ord("_")} or _after(buf, end) in _WORD | {ord(":")}:
        return False
    value = buf[start:end].decode("ascii")
    groups = [g for g in value.split(":") if g]
    if "::" not in value and value.count(":") != 7:
        return False
    if len(groups) < 2 and "." not in value:
        return False  # "::1"-like fragments and "a::b" in code are too ambiguous
    if not any(c.isdigit() for c in value):
        return False
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return False
    return True


def email(buf: bytes, start: int, end: int) -> bool:
    if _before(buf, start) in _WORD | {ord("."), ord("+"), ord("-"), ord("%")}:
        return False
    value = buf[start:end].decode("utf-8")
    local, _, domain = value.rpartition("@")
    if not 1 <= len(local) <= 64 or len(domain) > 253:
        return False
    if local.startswith(".") or local.endswith(".") or ".." in local:
        return False
    labels = domain.split(".")
    return all(0 < len(lb) <= 63 and lb[0] != "-" and lb[-1] != "-" for lb in labels)


def _b64url_json(segment: bytes) -> object:
    padded = segment + b"=" * (-len(segment) % 4)
    return json.loads(base64.urlsafe_b64decode(padded))


def jwt(buf: bytes, start: int, end: int) -> bool:
    if _before(buf, start) in _WORD | {ord("-")} or _after(buf, end) in _WORD | {ord("-")}:
        return False
    parts = buf[start:end].split(b".")
    if len(parts) != 3:
        return False
    try:
        header = _b64url_json(parts[0])
        _b64url_json(parts[1])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return False
    return isinstance(header, dict) and "alg" in header


def token(buf: bytes, start: int, end: int) -> bool:
    """Prefix-typed API tokens (Anthropic, OpenAI, GitHub, Slack, AWS key ids)."""
    if _before(buf, start) in _WORD | {ord("-")} or _after(buf, end) in _WORD | {ord("-")}:
        return False
    value = buf[start:end]
    if len(value) > 272:
        return False
    if value.startswith(b"sk-ant-"):
        return len(value.rsplit(b"-", 1)[-1]) >= 32 or len(value) >= 60
    if value.startswith((b"ghp_", b"gho_", b"ghu_", b"ghs_", b"ghr_")):
        return len(value) >= 40
    if value.startswith(b"github_pat_"):
        return len(value) >= 33
    if value.startswith((b"xox", b"xapp-")):
        return len(value) >= 15
    if value.startswith(b"sk-"):
        body = value[3:]
        for kind in (b"proj-", b"svcacct-", b"admin-"):
            body = body.removeprefix(kind)
        # OpenAI keys are random: demand digits and both cases so "sk-some-long-slug" is not a key.
        has = (any(c in _DIGITS for c in body), any(65 <= c <= 90 for c in body),
               any(97 <= c <= 122 for c in body))  # fmt: skip
        return all(has) and len(body) >= 20
    return True


def always(buf: bytes, start: int, end: int) -> bool:
    return True


def ip_address(buf: bytes, start: int, end: int) -> bool:
    return ipv6(buf, start, end) if b":" in buf[start:end] else ipv4(buf, start, end)
