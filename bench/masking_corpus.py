"""A labelled corpus for the masking detectors, built deterministically (same seed, same corpus).

Positives: every entity in every format the detectors claim, embedded in sentences.
Hard negatives: strings that look like entities but are not (Luhn-failing 16-digit numbers,
invalid SSNs, version strings, UUIDs, hashes, ISBNs, dates, prices, wrong IBAN checksums ...).

    python bench/masking_corpus.py            # writes bench/corpus/masking.jsonl
"""

from __future__ import annotations

import base64
import json
import random
import string
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SEED = 20261124


@dataclass
class Sample:
    text: str
    spans: list[tuple[str, int, int]] = field(default_factory=list)  # gold (entity, start, end)
    kind: str = ""  # the generator's name, for error analysis


TEMPLATES = [
    "Please update the record: {} before Friday.",
    "{}",
    "Customer wrote (see ticket): '{}' — escalate?",
    "Line 1\nvalue={}\nLine 3",
    "Das Konto {} gehört Frau Müller.",
    "[{}]",
    "Contact: {}, thanks!",
    "« {} »",
]


def _luhn_digit(partial: str) -> str:
    total = 0
    for index, char in enumerate(reversed(partial)):
        value = int(char)
        if index % 2 == 0:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return str((10 - total % 10) % 10)


def _group(digits: str, sizes: list[int], sep: str) -> str:
    parts, at = [], 0
    for size in sizes:
        parts.append(digits[at : at + size])
        at += size
    return sep.join(parts)


def _card(rng: random.Random, valid: bool = True) -> str:
    prefix, length, sizes = rng.choice(
        [
            ("4", 16, [4, 4, 4, 4]),
            ("51", 16, [4, 4, 4, 4]),
            ("55", 16, [4, 4, 4, 4]),
            ("2221", 16, [4, 4, 4, 4]),
            ("34", 15, [4, 6, 5]),
            ("37", 15, [4, 6, 5]),
            ("6011", 16, [4, 4, 4, 4]),
            ("35", 16, [4, 4, 4, 4]),
            ("4", 19, [4, 4, 4, 4, 3]),
        ]
    )
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    check = _luhn_digit(body)
    if not valid:
        check = str((int(check) + rng.randint(1, 9)) % 10)
    digits = body + check
    return _group(digits, sizes, rng.choice(["", " ", "-"])) if rng.random() < 0.7 else digits


def _iban(rng: random.Random, valid: bool = True) -> str:
    country, bban_len, alpha = rng.choice(
        [
            ("DE", 18, 0),
            ("GB", 18, 4),
            ("FR", 23, 0),
            ("NL", 14, 4),
            ("ES", 20, 0),
            ("IT", 23, 1),
            ("CH", 17, 0),
            ("BE", 12, 0),
            ("AT", 16, 0),
            ("PL", 24, 0),
            ("NO", 11, 0),
            ("IE", 18, 4),
        ]
    )
    bban = "".join(rng.choice(string.ascii_uppercase) for _ in range(alpha))
    bban += "".join(rng.choice(string.digits) for _ in range(bban_len - alpha))
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    check = 98 - int(numeric) % 97
    if not valid:
        check = (check + rng.randint(1, 50)) % 97 + 2 if check > 2 else check + 1
    compact = f"{country}{check:02d}{bban}"
    if rng.random() < 0.5:
        return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))
    return compact


def _ssn(rng: random.Random) -> str:
    area = rng.choice([a for a in range(1, 900) if a != 666])
    digits = f"{area:03d}{rng.randint(1, 99):02d}{rng.randint(1, 9999):04d}"
    sep = rng.choice(["-", " "])
    return f"{digits[:3]}{sep}{digits[3:5]}{sep}{digits[5:]}"


def _email(rng: random.Random) -> str:
    first = rng.choice(["jane", "li.wei", "o_connor", "maria-jose", "k", "test.user", "ANNA", "x9"])
    local = first + rng.choice(["", ".smith", "+billing", "42", "_ops"])
    domain = rng.choice(
        [
            "example.com",
            "mail.example.co.uk",
            "corp-intern.de",
            "uni.edu",
            "x.io",
            "sub.domain.example.org",
            "EXAMPLE.NET",
        ]
    )
    return f"{local}@{domain}"


def _phone(rng: random.Random) -> str:
    d = lambda n: "".join(rng.choice(string.digits) for _ in range(n))  # noqa: E731
    nanp = f"{rng.randint(2, 9)}{d(2)}", f"{rng.randint(2, 9)}{d(2)}", d(4)
    return rng.choice(
        [
            f"+1{''.join(nanp)}",
            f"+1 {nanp[0]} {nanp[1]} {nanp[2]}",
            f"+1-{nanp[0]}-{nanp[1]}-{nanp[2]}",
            f"({nanp[0]}) {nanp[1]}-{nanp[2]}",
            f"{nanp[0]}-{nanp[1]}-{nanp[2]}",
            f"{nanp[0]}.{nanp[1]}.{nanp[2]}",
            f"+44 20 {d(4)} {d(4)}",
            f"+44{rng.randint(1, 9)}{d(9)}",
            f"+49 30 {d(6)}",
            f"+49 171 {d(7)}",
            f"+33 {rng.randint(1, 9)} {d(2)} {d(2)} {d(2)} {d(2)}",
            f"+81 3-{d(4)}-{d(4)}",
            f"+91 {d(5)} {d(5)}",
            f"+61 2 {d(4)} {d(4)}",
            f"+55 11 {d(5)}-{d(4)}",
        ]
    )


def _ip(rng: random.Random) -> str:
    r = lambda: rng.randint(0, 255)  # noqa: E731
    h = lambda: f"{rng.randint(0, 0xFFFF):x}"  # noqa: E731
    return rng.choice(
        [
            f"{rng.randint(1, 223)}.{r()}.{r()}.{rng.randint(1, 254)}",
            f"10.{r()}.{r()}.{r()}",
            ":".join(h() for _ in range(8)),
            f"2001:db8:{h()}::{h()}:{h()}",
            f"fe80::{h()}:{h()}:{h()}:{h()}",
            f"::ffff:192.0.2.{rng.randint(1, 254)}",
            f"2001:db8::{rng.randint(1, 9)}:{h()}",
        ]
    )


def _rand(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


_ALNUM = string.ascii_letters + string.digits


def _mixed(rng: random.Random, alphabet: str, n: int) -> str:
    # Real keys are random: guarantee a digit and both cases, as a generated key has in practice.
    return rng.choice(string.digits) + rng.choice(string.ascii_uppercase) + _rand(rng, alphabet, n - 2)


def _api_key(rng: random.Random) -> str:
    return rng.choice(
        [
            lambda: "sk-ant-api03-" + _rand(rng, _ALNUM + "-_", 93) + "AA",
            lambda: "sk-ant-admin01-" + _rand(rng, _ALNUM + "-_", 93) + "AA",
            lambda: "sk-proj-" + _mixed(rng, _ALNUM + "-_", 120),
            lambda: "sk-" + _mixed(rng, _ALNUM, 48),
            lambda: rng.choice(["ghp_", "gho_", "ghs_", "ghu_"]) + _rand(rng, _ALNUM, 36),
            lambda: "github_pat_" + _rand(rng, _ALNUM, 22) + "_" + _rand(rng, _ALNUM, 59),
            lambda: (
                f"xoxb-{_rand(rng, string.digits, 12)}-{_rand(rng, string.digits, 13)}-"
                + _rand(rng, _ALNUM, 24)
            ),
            lambda: (
                f"xoxp-{_rand(rng, string.digits, 12)}-{_rand(rng, string.digits, 12)}-"
                + _rand(rng, _ALNUM, 32)
            ),
        ]
    )()


def _aws(rng: random.Random) -> str:
    return rng.choice(["AKIA", "ASIA"]) + _rand(rng, string.ascii_uppercase + "234567", 16)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(rng: random.Random) -> str:
    alg = rng.choice(["HS256", "RS256", "ES256", "EdDSA"])
    header = _b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    claims = {
        "sub": str(rng.randint(1, 10**6)),
        "iat": 1_700_000_000 + rng.randint(0, 10**6),
        "name": rng.choice(["Ann", "Bo", "Cy"]),
    }
    payload = _b64url(json.dumps(claims).encode())
    signature = _b64url(rng.randbytes(rng.choice([32, 64, 256])))
    return f"{header}.{payload}.{signature}"


def _pem(rng: random.Random) -> str:
    label = rng.choice(
        ["RSA PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY", "ENCRYPTED PRIVATE KEY"]
    )
    body = base64.b64encode(rng.randbytes(rng.choice([120, 600, 1190]))).decode()
    lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    header = ""
    if label == "RSA PRIVATE KEY" and rng.random() < 0.3:
        header = "Proc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,3F17F5316E2BAC89\n\n"
    return f"-----BEGIN {label}-----\n{header}{lines}\n-----END {label}-----"


POSITIVE_GENERATORS: dict[str, Callable[[random.Random], str]] = {
    "EMAIL_ADDRESS": _email,
    "PHONE_NUMBER": _phone,
    "CREDIT_CARD": _card,
    "IBAN_CODE": _iban,
    "US_SSN": _ssn,
    "IP_ADDRESS": _ip,
    "AWS_ACCESS_KEY": _aws,
    "PRIVATE_KEY": _pem,
    "JWT": _jwt,
    "API_KEY": _api_key,
}


def _negatives(rng: random.Random) -> dict[str, Callable[[], str]]:
    d = lambda n: _rand(rng, string.digits, n)  # noqa: E731
    hexs = lambda n: _rand(rng, "0123456789abcdef", n)  # noqa: E731
    bad_ssn = lambda: rng.choice(  # noqa: E731
        [
            f"000-{d(2)}-{d(4)}",
            f"666-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}",
            f"9{d(2)}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}",
            f"{rng.randint(100, 665)}-00-{d(4)}",
            f"{rng.randint(100, 665)}-{rng.randint(10, 99)}-0000",
            "123-45-6789",
            "078-05-1120",
            f"{rng.randint(100, 665)}-{rng.randint(10, 99)} {rng.randint(1000, 9999)}",
        ]
    )
    return {
        "luhn_fail_card": lambda: _card(rng, valid=False),
        "invalid_ssn": bad_ssn,
        "version": lambda: rng.choice(
            [
                f"v{rng.randint(0, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 99)}",
                f"{rng.randint(1, 20)}.{rng.randint(0, 9)}.{rng.randint(0, 99)}",
                f"10.0.{rng.randint(10000, 22631)}.{rng.randint(1000, 9999)}",
                f"Python {rng.randint(2, 3)}.{rng.randint(0, 13)}.{rng.randint(0, 9)}",
            ]
        ),
        "uuid": lambda: f"{hexs(8)}-{hexs(4)}-4{hexs(3)}-a{hexs(3)}-{hexs(12)}",
        "hash": lambda: rng.choice([hexs(32), hexs(40), hexs(64), "sha256:" + hexs(64)]),
        "isbn": lambda: rng.choice(
            [f"978-{rng.randint(0, 9)}-{d(2)}-{d(6)}-{d(1)}", f"ISBN 0-{d(3)}-{d(5)}-X", f"978{d(10)}"]
        ),
        "date": lambda: rng.choice(
            [
                f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                f"{rng.randint(1, 12):02d}/{rng.randint(1, 28):02d}/2025",
                f"{rng.randint(1, 28)}.{rng.randint(1, 12)}.2023",
                f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}",
                f"2024-03-01T{rng.randint(0, 23):02d}:15:00Z",
            ]
        ),
        "price": lambda: rng.choice(
            [
                f"${rng.randint(1, 999)},{d(3)}.{d(2)}",
                f"€{rng.randint(1, 999)}.{d(2)}",
                f"{rng.randint(1, 9)} {d(3)} {d(3)},{d(2)} EUR",
                f"USD {d(7)}.00",
            ]
        ),
        "bad_iban": lambda: _iban(rng, valid=False),
        "order_number": lambda: rng.choice([f"#{d(8)}", f"order {d(6)}-{d(4)}", f"ref {d(12)}"]),
        "slug": lambda: rng.choice(
            [
                "sk-learn-model-selection-guide",
                "sk-some-long-readable-slug-name",
                "ghp_short",
                "AKIA_NOT_A_KEY",
                "eyJust.kidding.here",
            ]
        ),
        "code": lambda: rng.choice(
            [
                "std::vector<int> v;",
                "a::b::c",
                "ratio 3:2:1",
                "at 10:30",
                "mailto: team at example dot com",
                "user@localhost",
                "x@y",
            ]
        ),
        "number_run": lambda: d(rng.choice([5, 7, 11, 20, 24])),
    }


def _real_world(rng: random.Random) -> list[tuple[str, str, str | None]]:
    """(kind, value, entity or None): variants seen in the wild, including ones the detectors
    deliberately do not claim (bare 10-digit phones, bare SSNs, IDN e-mail, dotted cards): these
    count as misses, so the figures are not a tautology of the generators above."""
    d = lambda n: _rand(rng, string.digits, n)  # noqa: E731
    nanp = f"{rng.randint(2, 9)}{d(2)}{rng.randint(2, 9)}{d(6)}"
    card = _card(rng).replace(" ", "").replace("-", "")
    ssn = _ssn(rng).replace("-", "").replace(" ", "")
    return [
        ("phone_bare_10_digits", nanp, "PHONE_NUMBER"),
        ("phone_00_prefix", f"0044 20 {d(4)} {d(4)}", "PHONE_NUMBER"),
        ("phone_spaces", f"{nanp[:3]} {nanp[3:6]} {nanp[6:]}", "PHONE_NUMBER"),
        ("email_idn", f"{rng.choice(['jane', 'li'])}@例え.jp", "EMAIL_ADDRESS"),
        ("email_angle", f"<{_email(rng)}>", None),
        (
            "card_dotted",
            ".".join(card[i : i + 4] for i in range(0, 16, 4)) if len(card) == 16 else card,
            "CREDIT_CARD",
        ),
        ("ssn_bare", ssn, "US_SSN"),
        ("iban_lowercase", _iban(rng).replace(" ", "").lower(), "IBAN_CODE"),  # not claimed
        ("ip_with_port", f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}:8080", None),
        ("env_anthropic_key", "ANTHROPIC_API_KEY=" + "sk-ant-api03-" + _rand(rng, _ALNUM, 93) + "AA", None),
        ("random_16_digits", rng.choice("456") + d(15), None),
        ("epoch_ms", f"17{d(11)}", None),
        ("vanity_phone", "1-800-FLOWERS", None),
        ("three_octets", f"192.168.{rng.randint(0, 255)}", None),
        ("five_octets", ".".join(str(rng.randint(0, 255)) for _ in range(5)), None),
    ]


def _labelled(kind: str, value: str, entity: str | None, template: str) -> Sample:
    at = template.index("{}")
    text = template.replace("{}", value, 1)
    spans: list[tuple[str, int, int]] = []
    if entity is not None:
        spans.append((entity, at, at + len(value)))
    elif kind == "email_angle":
        spans.append(("EMAIL_ADDRESS", at + 1, at + len(value) - 1))
    elif kind == "ip_with_port":
        spans.append(("IP_ADDRESS", at, at + len(value) - len(":8080")))
    elif kind == "env_anthropic_key":
        spans.append(("API_KEY", at + len("ANTHROPIC_API_KEY="), at + len(value)))
    elif kind == "random_16_digits" and _luhn_digit(value[:-1]) == value[-1]:
        spans.append(("CREDIT_CARD", at, at + len(value)))  # Luhn-valid with a card prefix: a card
    return Sample(text, spans, kind)


def build(seed: int = SEED, per_entity: int = 120, negatives_per_kind: int = 40) -> list[Sample]:
    rng = random.Random(seed)
    samples: list[Sample] = []
    for entity, generate in POSITIVE_GENERATORS.items():
        for _ in range(per_entity):
            value = generate(rng)
            template = rng.choice(TEMPLATES)
            at = template.index("{}")
            text = template.replace("{}", value, 1)
            samples.append(Sample(text, [(entity, at, at + len(value))], entity))
    for kind, generate in _negatives(rng).items():
        for _ in range(negatives_per_kind):
            value = generate()
            samples.append(Sample(rng.choice(TEMPLATES).replace("{}", value, 1), [], kind))
    for _ in range(negatives_per_kind // 4):
        for kind, value, entity in _real_world(rng):
            samples.append(_labelled(kind, value, entity, rng.choice(TEMPLATES)))
    # Mixed texts: two or three entities in one prompt.
    for _ in range(per_entity):
        text, spans = "Notes:", []
        for entity in rng.sample(sorted(POSITIVE_GENERATORS), rng.randint(2, 3)):
            value = POSITIVE_GENERATORS[entity](rng)
            text += " and " if spans else " "
            spans.append((entity, len(text), len(text) + len(value)))
            text += value
        samples.append(Sample(text + ".", spans, "mixed"))
    return samples


def write(path: Path, samples: list[Sample]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for sample in samples:
            handle.write(
                json.dumps(
                    {"text": sample.text, "spans": sample.spans, "kind": sample.kind}, ensure_ascii=False
                )
                + "\n"
            )


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "corpus" / "masking.jsonl"
    corpus = build()
    write(target, corpus)
    print(f"{len(corpus)} samples -> {target}")
