"""Custom patterns from a SkillPolicy: validated, compiled with RE2, turned into detectors.

The pattern is parsed once (Python's regex *parser*, never its matcher) to learn which characters a
match can contain, how long it can be and which literal it starts with; the streaming masker needs
these to hold back only what could still become a match. A pattern without a length bound (`+`,
`*`) is accepted, but a stream holds back at most MAX_CUSTOM_LEN characters for it: a streamed
match longer than that (an absurd identifier) is only masked from where the hold-back began.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

import re2

from skillwarden_sidecar.masking.detectors import ANY_CHARSET, Detector, compile_re2
from skillwarden_sidecar.masking.entities import BUILTIN_ENTITIES

_parser: Any = importlib.import_module("re._parser")
_c: Any = importlib.import_module("re._constants")

MAX_CUSTOM_LEN = 1024
MAX_PATTERN_CHARS = 4096  # the CRD's maxLength
_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,63}")  # a constant pattern on policy text, not on user text


class CustomPatternError(ValueError):
    """A custom masking pattern is unusable; the message names the pattern and the reason."""


_Ranges = list[tuple[int, int]]
_CATEGORIES: dict[Any, _Ranges] = {
    _c.CATEGORY_DIGIT: [(48, 57)],
    _c.CATEGORY_WORD: [(48, 57), (65, 90), (95, 95), (97, 122)],
    _c.CATEGORY_SPACE: [(9, 13), (32, 32)],
}
_EVERYTHING: _Ranges = [(0, 0x10FFFF)]


def _class_ranges(items: list[tuple[Any, Any]]) -> _Ranges:
    ranges: _Ranges = []
    for op, value in items:
        if op is _c.NEGATE:
            return _EVERYTHING  # over-approximation is safe: it only lengthens the hold-back
        if op is _c.LITERAL:
            ranges.append((value, value))
        elif op is _c.RANGE:
            ranges.append(value)
        elif op is _c.CATEGORY and value in _CATEGORIES:
            ranges.extend(_CATEGORIES[value])
        else:
            return _EVERYTHING
    return ranges


def _walk(parsed: Any, out: _Ranges) -> None:
    for op, value in parsed:
        if op is _c.LITERAL:
            out.append((value, value))
        elif op is _c.IN:
            out.extend(_class_ranges(value))
        elif op in (_c.MAX_REPEAT, _c.MIN_REPEAT, _c.POSSESSIVE_REPEAT):
            _walk(value[2], out)
        elif op is _c.SUBPATTERN:
            _walk(value[3], out)
        elif op is _c.BRANCH:
            for branch in value[1]:
                _walk(branch, out)
        elif op is _c.AT:
            continue
        elif op in (_c.GROUPREF, _c.GROUPREF_EXISTS, _c.ASSERT, _c.ASSERT_NOT, _c.ATOMIC_GROUP):
            raise CustomPatternError(f"{op} is not supported by RE2")
        else:  # ANY, NOT_LITERAL, categories outside a class ...
            out.extend(_EVERYTHING)


def _charset(ranges: _Ranges, ignore_case: bool) -> str:
    if ignore_case:
        for low, high in list(ranges):
            for code in range(max(low, 65), min(high, 122) + 1):
                char = chr(code)
                if char.isalpha():
                    other = ord(char.swapcase())
                    ranges.append((other, other))
    if any(low == 0 and high >= 0x10FFFF for low, high in ranges):
        return ANY_CHARSET
    parts = "".join(f"\\x{{{low:x}}}-\\x{{{high:x}}}" for low, high in sorted(set(ranges)))
    return f"[{parts}]"


def custom_detector(name: str, pattern: str) -> Detector:
    """Validate one custom pattern and build its detector; raise `CustomPatternError` otherwise."""
    if not _NAME.fullmatch(name):
        raise CustomPatternError(f"custom pattern name {name!r} must match [A-Z][A-Z0-9_]*")
    if name in BUILTIN_ENTITIES:
        raise CustomPatternError(f"custom pattern name {name!r} is a built-in entity")
    if not pattern or len(pattern) > MAX_PATTERN_CHARS:
        raise CustomPatternError(f"custom pattern {name}: pattern must be 1..{MAX_PATTERN_CHARS} chars")
    try:
        compiled = compile_re2(pattern)
    except re2.error as error:
        raise CustomPatternError(f"custom pattern {name}: not a valid RE2 expression ({error})") from None
    if compiled.fullmatch("") is not None:
        raise CustomPatternError(f"custom pattern {name}: matches the empty string")
    try:
        parsed = _parser.parse(pattern)
    except (re.error, OverflowError, RecursionError) as error:
        raise CustomPatternError(f"custom pattern {name}: cannot be analysed ({error})") from None
    high = min(parsed.getwidth()[1], MAX_CUSTOM_LEN)
    ranges: _Ranges = []
    _walk(parsed, ranges)
    ignore_case = bool(parsed.state.flags & _c.SRE_FLAG_IGNORECASE)
    prefix = "" if ignore_case else _literal_prefix(parsed)
    return Detector(name, pattern, charset=_charset(ranges, ignore_case), max_len=max(high, 1),
                    prefixes=(prefix,) if prefix else ())


def _literal_prefix(parsed: Any) -> str:
    """The literal every match starts with ("EMP-" for `EMP-[0-9]{6}`), or ""."""
    out: list[str] = []
    for op, value in parsed:
        if op is _c.LITERAL:
            out.append(chr(value))
        elif op is _c.AT:
            continue
        else:
            break
    return "".join(out)


def validate_custom_pattern(name: str, pattern: str) -> None:
    """For admission: raise `CustomPatternError` with a message naming the problem."""
    custom_detector(name, pattern)
