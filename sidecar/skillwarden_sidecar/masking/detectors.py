"""Entity detectors: an RE2 pattern, a validator, and what the streaming masker needs to know.

`charset` is an RE2 character class holding every character a match can contain and `max_len`
bounds a match's length in characters; `prefixes` (when set) are literals that every match starts
with. Together they tell the streaming masker the shortest tail it must hold back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import re2

from skillwarden_sidecar.masking import entities as E
from skillwarden_sidecar.masking import validators as V

ANY_CHARSET = r"[\x{0}-\x{10FFFF}]"


@dataclass(frozen=True)
class Detector:
    entity: str
    pattern: str
    validator: V.Validator = V.always
    charset: str = ANY_CHARSET
    max_len: int = 256
    prefixes: tuple[str, ...] = ()
    normalize: str = "none"  # how the hmac operator canonicalises a value: none | digits | lower | compact
    # Greedy patterns over separated groups swallow a neighbour ("card card"); when a candidate
    # fails validation, shorter candidates ending before a separator are tried too.
    shrink: bool = False
    # Bytes after which the validator never accepts a start: after a rejected candidate the search
    # skips such positions instead of retrying each (same findings, far fewer calls).
    no_start_after: frozenset[int] = frozenset()
    compiled: re2._Regexp = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "compiled", compile_re2(self.pattern))


def re2_options() -> re2.Options:
    options = re2.Options()
    options.max_mem = 64 << 20  # room for the DFA on multi-megabyte inputs
    options.log_errors = False
    return options


def compile_re2(pattern: str) -> re2._Regexp:
    return re2.compile(pattern, re2_options())


_GH = r"gh[pousr]_[A-Za-z0-9]+|github_pat_[A-Za-z0-9_]+"
_SLACK = r"xox[abposre]-[A-Za-z0-9-]+|xapp-[0-9]-[A-Za-z0-9-]+"
_PEM_LABEL = r"(?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?"

BUILTIN_DETECTORS: tuple[Detector, ...] = (
    Detector(
        E.PRIVATE_KEY,
        rf"-----BEGIN {_PEM_LABEL}-----(?:\r?\n[A-Za-z-]+: [^\r\n]*)*[A-Za-z0-9+/=\s]*"
        rf"(?:-----END {_PEM_LABEL}-----)?",
        max_len=64 * 1024,
        prefixes=("-----BEGIN ",),
        normalize="compact",
    ),
    Detector(
        E.JWT,
        r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*",
        V.jwt,
        charset=r"[A-Za-z0-9_.=-]",
        max_len=16 * 1024,
        prefixes=("eyJ",),
        no_start_after=V.WORD_DASH,
    ),
    Detector(
        E.API_KEY,
        # Unbounded repetitions keep the DFA small; the validator enforces the lengths.
        rf"sk-ant-[a-z]{{3,5}}[0-9]{{2}}-[A-Za-z0-9_-]+|sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]+|{_GH}|{_SLACK}",
        V.token,
        charset=r"[A-Za-z0-9_-]",
        max_len=272,
        prefixes=("sk-", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "xox", "xapp-"),
        no_start_after=V.WORD_DASH,
    ),
    Detector(
        E.AWS_ACCESS_KEY,
        r"(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA)[A-Z2-7]{16}",
        V.token,
        charset=r"[A-Z0-9]",
        max_len=20,
        prefixes=("AKIA", "ASIA", "ABIA", "ACCA", "AGPA", "AIDA", "AROA", "AIPA", "ANPA", "ANVA", "APKA"),
        no_start_after=V.WORD_DASH,
    ),
    Detector(
        E.EMAIL_ADDRESS,
        r"[A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*@[\pL\pN-]+(?:\.[\pL\pN-]+)*\.(?:[A-Za-z]{2,24}|\pL{2,24})\b",
        V.email,
        charset=r"[A-Za-z0-9._%+@\pL\pN-]",
        max_len=64 + 1 + 253,
        normalize="lower",
        no_start_after=V.EMAIL_NO_START_AFTER,
    ),
    Detector(
        E.IBAN_CODE,
        r"[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}",
        V.iban,
        charset=r"[A-Z0-9 ]",
        max_len=42,
        normalize="compact",
        shrink=True,
        no_start_after=V.ALNUM,
    ),
    Detector(
        E.CREDIT_CARD,
        r"[0-9](?:[ .-]?[0-9]){12,18}",
        V.credit_card,
        charset=r"[0-9 .-]",
        max_len=23,
        normalize="digits",
        shrink=True,
        no_start_after=V.DIGITS,
    ),
    Detector(
        E.US_SSN,
        r"[0-9]{3}-[0-9]{2}-[0-9]{4}|[0-9]{3} [0-9]{2} [0-9]{4}",
        V.us_ssn,
        charset=r"[0-9 -]",
        max_len=11,
        normalize="digits",
        no_start_after=V.WORD_DASH,
    ),
    Detector(
        E.PHONE_NUMBER,
        r"(?:\+|00)[1-9][0-9]{0,2}(?:[ -]?(?:\([0-9]{1,4}\)|[0-9]{1,5})){2,6}"
        r"|(?:\([2-9][0-9]{2}\) ?|[2-9][0-9]{2}[-. ])[2-9][0-9]{2}[-. ][0-9]{4}",
        V.phone,
        charset=r"[0-9 ().+-]",
        max_len=26,
        normalize="digits",
        shrink=True,
        no_start_after=V.PHONE_NO_START_AFTER,
    ),
    Detector(
        E.IP_ADDRESS,
        r"(?:[0-9]{1,3}\.){3}[0-9]{1,3}|[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:\.[0-9]{1,3}){0,3}",
        V.ip_address,
        charset=r"[0-9A-Fa-f:.]",
        max_len=45,
        normalize="lower",
        no_start_after=V.HEX_WORD,
    ),
)
