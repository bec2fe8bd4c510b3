"""The scanning engine: RE2 (linear time) over the UTF-8 bytes, validators, overlap resolution.

One RE2 Set pass tells which detectors can match at all (clean text costs one DFA pass); only
those detectors then search for candidates, and only validated candidates become findings.
Overlapping findings merge into one span named after the candidate that starts first (then the
longer, then the higher-priority entity). Offsets in findings are code points into the input string.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import re2

from skillwarden_sidecar.masking.custom import custom_detector
from skillwarden_sidecar.masking.detectors import BUILTIN_DETECTORS, Detector, re2_options
from skillwarden_sidecar.masking.entities import PRIORITY
from skillwarden_sidecar.masking.operators import replacement
from skillwarden_sidecar.masking.spec import BUDGET_ENTITY, BUDGET_MARKER, MaskingSpec
from skillwarden_sidecar.masking.validators import Validator

_UNANCHORED = re2._Anchor.UNANCHORED
_NO_MATCH = (-1, -1)


@functools.lru_cache(maxsize=64)
def _screen(patterns: tuple[str, ...]) -> re2.Set:
    """One RE2 Set per combination of patterns: compiling one costs ~10 ms, so it is shared by every
    Masker (per request, per approval summary) that uses the same detectors. Sets are immutable
    after Compile and safe to share."""
    screen = re2.Set.SearchSet(re2_options())
    for pattern in patterns:
        screen.Add(pattern)
    screen.Compile()
    return screen


class MaskingBudgetExceeded(RuntimeError):
    """A text exceeded the size or time budget and the spec says to raise (not to mask it whole)."""


@dataclass(frozen=True)
class Finding:
    entity: str
    start: int
    end: int


@dataclass(frozen=True)
class MaskResult:
    text: str
    findings: list[Finding]


class Masker:
    def __init__(self, spec: MaskingSpec) -> None:
        self.spec = spec
        builtin = [d for d in BUILTIN_DETECTORS if d.entity in spec.entities]
        custom = [custom_detector(c.name, c.pattern) for c in spec.custom if c.name in spec.entities]
        self.detectors: tuple[Detector, ...] = tuple(builtin + custom)
        self._rank = {d.entity: (PRIORITY.index(d.entity) if d.entity in PRIORITY else len(PRIORITY))
                      for d in self.detectors}  # fmt: skip
        self._screen = _screen(tuple(d.pattern for d in self.detectors)) if self.detectors else None

    @property
    def hmac_key_id(self) -> str:
        return self.spec.hmac_key_id

    # -- scanning ------------------------------------------------------------------------------

    def find_bytes(
        self, buf: bytes, pos: int = 0, deadline: float | None = None
    ) -> list[tuple[int, int, Detector]]:
        """Validated, non-overlapping byte spans starting at or after `pos` (bytes before `pos` are
        context for boundary checks only)."""
        if self._screen is None or pos >= len(buf):
            return []
        hits = self._screen.Match(buf[pos:]) if pos else self._screen.Match(buf)
        if not hits:
            return []
        if deadline is None:
            # CPU time of this thread: the budget bounds work, not the machine's other load.
            deadline = time.thread_time() + self.spec.max_scan_seconds
        candidates: list[tuple[int, int, int, int, Detector]] = []
        end_of_text = len(buf)
        for index in sorted(hits):
            detector = self.detectors[index]
            regexp = detector.compiled._regexp
            validate = detector.validator
            rank = self._rank[detector.entity]
            skip = detector.no_start_after
            cursor = pos
            steps = 0
            while cursor < end_of_text:
                start, end = regexp.Match(_UNANCHORED, buf, cursor, end_of_text)[0]
                if (start, end) == _NO_MATCH:
                    break
                valid = end > start and validate(buf, start, end)
                if not valid and detector.shrink and end > start:
                    end = _shrink(buf, start, end, validate)
                    valid = end > start
                if valid:
                    candidates.append((start, start - end, rank, end, detector))
                    cursor = end
                else:
                    cursor = start + 1
                    while cursor < end_of_text and (buf[cursor] & 0xC0 == 0x80 or buf[cursor - 1] in skip):
                        cursor += 1  # never resume inside a UTF-8 sequence, nor where no start is valid
                steps += 1
                if steps & 63 == 0 and time.thread_time() > deadline:
                    raise MaskingBudgetExceeded("masking scan exceeded its time budget")
        if time.thread_time() > deadline:
            raise MaskingBudgetExceeded("masking scan exceeded its time budget")
        candidates.sort(key=lambda c: (c[0], c[1], c[2]))
        chosen: list[tuple[int, int, Detector]] = []
        for start, _, _, end, detector in candidates:
            if chosen and start < chosen[-1][1]:
                # Overlapping findings merge (the earlier one names it): masking a little more
                # is safe, dropping the later one would leave its tail in clear text.
                first_start, first_end, first = chosen[-1]
                chosen[-1] = (first_start, max(first_end, end), first)
            else:
                chosen.append((start, end, detector))
        return chosen

    def find(self, text: str) -> list[tuple[int, int, Detector]]:
        """Validated spans in code points. Raises MaskingBudgetExceeded past a budget."""
        buf = text.encode("utf-8", "surrogatepass")
        if len(buf) > self.spec.max_text_bytes:
            raise MaskingBudgetExceeded(f"text of {len(buf)} bytes exceeds the masking budget")
        spans = self.find_bytes(buf)
        if not spans or len(buf) == len(text):
            return spans
        return to_char_spans(buf, spans)

    # -- rendering -----------------------------------------------------------------------------

    def replace(self, detector: Detector, value: str) -> str:
        operator = self.spec.operators.get(detector.entity, "redact")
        return replacement(detector, operator, value, self.spec.hmac_key)

    def render(self, text: str, spans: list[tuple[int, int, Detector]]) -> str:
        pieces: list[str] = []
        last = 0
        for start, end, detector in spans:
            pieces.append(text[last:start])
            pieces.append(self.replace(detector, text[start:end]))
            last = end
        pieces.append(text[last:])
        return "".join(pieces)

    def mask_text(self, text: str) -> MaskResult:
        try:
            spans = self.find(text)
        except MaskingBudgetExceeded:
            if self.spec.on_budget == "raise":
                raise
            return MaskResult(BUDGET_MARKER, [Finding(BUDGET_ENTITY, 0, len(text))])
        if not spans:
            return MaskResult(text, [])
        return MaskResult(
            self.render(text, spans), [Finding(d.entity, start, end) for start, end, d in spans]
        )


_SEPARATORS = frozenset(b" .-()")
_SHRINK_TRIES = 4


def _shrink(buf: bytes, start: int, end: int, validate: Validator) -> int:
    """The longest shorter candidate that validates, ending just before one of the last few
    separators (a greedy match swallows at most a group or two of its neighbour); else `start`."""
    tries = 0
    for cut in range(end - 1, start, -1):
        if buf[cut] in _SEPARATORS and buf[cut - 1] not in _SEPARATORS:
            if validate(buf, start, cut):
                return cut
            tries += 1
            if tries == _SHRINK_TRIES:
                break
    return start


def to_char_spans(buf: bytes, spans: list[tuple[int, int, Detector]]) -> list[tuple[int, int, Detector]]:
    """Byte offsets -> code point offsets in one pass (spans are sorted and disjoint)."""
    converted: list[tuple[int, int, Detector]] = []
    byte_at, char_at = 0, 0
    for start, end, detector in spans:
        char_at += len(buf[byte_at:start].decode("utf-8", "surrogatepass"))
        char_start = char_at
        char_at += len(buf[start:end].decode("utf-8", "surrogatepass"))
        byte_at = end
        converted.append((char_start, char_at, detector))
    return converted
