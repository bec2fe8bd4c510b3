"""The scanning engine: RE2 (linear time) over the UTF-8 bytes, validators, overlap resolution.

One RE2 Set pass tells which detectors can match at all (clean text costs one DFA pass); only
those detectors then search for candidates, and only validated candidates become findings.
Overlapping findings merge into one span named after the candidate that starts first (then the
longer, then the higher-priority entity). Offsets in findings are code points into the input string.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import re2

from skillwarden_sidecar.masking.custom import custom_detector
from skillwarden_sidecar.masking.detectors import BUILTIN_DETECTORS, Detector, re2_options
from skillwarden_sidecar.masking.entities import PRIORITY
from skillwarden_sidecar.masking.operators import replacement
from skillwarden_sidecar.masking.spec import BUDGET_ENTITY, BUDGET_MARKER, MaskingSpec
from skillwarden_sidecar.masking.validators import Validator

_UNANCHORED = re2._Anchor.UNANCHORED
_Candidate = tuple[int, int, int, int, "Detector"]  # start, -length, rank, end, detector
_Span = tuple[int, int, "Detector"]  # start, end, detector
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
        # Built on first scan: a masker used only through SharedScan (the upstream one, whose
        # strings the record's scan covers) never needs its own set (~0.5-2 MiB of RE2 program).
        self._screen_built = False
        self._screen_set: re2.Set | None = None

    def _screen(self) -> re2.Set | None:
        if not self._screen_built:
            self._screen_set = _screen(tuple(d.pattern for d in self.detectors)) if self.detectors else None
            self._screen_built = True
        return self._screen_set

    @property
    def hmac_key_id(self) -> str:
        return self.spec.hmac_key_id

    # -- scanning ------------------------------------------------------------------------------

    def find_bytes(
        self, buf: bytes, pos: int = 0, deadline: float | None = None
    ) -> list[tuple[int, int, Detector]]:
        """Validated, non-overlapping byte spans starting at or after `pos` (bytes before `pos` are
        context for boundary checks only)."""
        return _merge(self._candidates(buf, pos, deadline))

    def _candidates(self, buf: bytes, pos: int, deadline: float | None) -> list[_Candidate]:
        """Every validated match of every detector, before overlaps are resolved. Each detector
        scans on its own, so a masker with a subset of these detectors would find exactly the
        candidates of its detectors (what `SharedScan` relies on)."""
        screen = self._screen()
        if screen is None or pos >= len(buf):
            return []
        hits = screen.Match(buf[pos:]) if pos else screen.Match(buf)
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
        return candidates

    def find(self, text: str) -> list[tuple[int, int, Detector]]:
        """Validated spans in code points. Raises MaskingBudgetExceeded past a budget."""
        buf, candidates = self._text_candidates(text)
        return self._spans(text, (buf, _merge(candidates)))

    def _text_candidates(self, text: str) -> tuple[bytes, list[_Candidate]]:
        buf = text.encode("utf-8", "surrogatepass")
        if len(buf) > self.spec.max_text_bytes:
            raise MaskingBudgetExceeded(f"text of {len(buf)} bytes exceeds the masking budget")
        return buf, self._candidates(buf, 0, None)

    @staticmethod
    def _spans(text: str, found: tuple[bytes, list[_Span]]) -> list[_Span]:
        buf, spans = found
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
        except MaskingBudgetExceeded as error:
            return self._over_budget(text, error)
        return self.result(text, spans)

    def _over_budget(self, text: str, error: MaskingBudgetExceeded) -> MaskResult:
        if self.spec.on_budget == "raise":
            raise error
        return MaskResult(BUDGET_MARKER, [Finding(BUDGET_ENTITY, 0, len(text))])

    def result(self, text: str, spans: list[_Span]) -> MaskResult:
        if not spans:
            return MaskResult(text, [])
        return MaskResult(
            self.render(text, spans), [Finding(d.entity, start, end) for start, end, d in spans]
        )


def _merge(candidates: list[_Candidate]) -> list[_Span]:
    candidates.sort(key=lambda c: (c[0], c[1], c[2]))
    chosen: list[_Span] = []
    for start, _, _, end, detector in candidates:
        if chosen and start < chosen[-1][1]:
            # Overlapping findings merge (the earlier one names it): masking a little more
            # is safe, dropping the later one would leave its tail in clear text.
            first_start, first_end, first = chosen[-1]
            chosen[-1] = (first_start, max(first_end, end), first)
        else:
            chosen.append((start, end, detector))
    return chosen


class TextMasker(Protocol):
    def mask_text(self, text: str) -> MaskResult: ...


class SharedScan:
    """Two maskers over the same texts, scanned once: `wide` (e.g. the record's: every detector)
    and `narrow` (e.g. upstream's: a subset of the same detectors). Each detector scans on its
    own, so the narrow masker's candidates are the wide scan's candidates of its entities;
    only overlap resolution and rendering are done per masker. `wide_view` and `narrow_view`
    stand in for the two maskers in a JSON walk; the narrow walk must follow the wide one over
    the same string objects (the scan is remembered per string object for the scan's lifetime:
    one exchange)."""

    def __init__(self, wide: Masker, narrow: Masker) -> None:
        if not {d.entity for d in narrow.detectors} <= {d.entity for d in wide.detectors}:
            raise ValueError("the narrow masker's entities must be a subset of the wide one's")
        self._wide, self._narrow = wide, narrow
        self._entities = frozenset(d.entity for d in narrow.detectors)
        self._memo: dict[int, tuple[str, MaskResult]] = {}
        self.wide_view = _View(self._wide_text)
        self.narrow_view = _View(self._narrow_text)

    def _wide_text(self, text: str) -> MaskResult:
        try:
            buf, candidates = self._wide._text_candidates(text)
        except MaskingBudgetExceeded as error:
            narrow = self._narrow._over_budget(text, error)  # the narrow one fails closed the same way
            self._memo[id(text)] = (text, narrow)
            return self._wide._over_budget(text, error)
        mine = [c for c in candidates if c[4].entity in self._entities]
        self._memo[id(text)] = (text, self._narrow.result(text, self._wide._spans(text, (buf, _merge(mine)))))
        return self._wide.result(text, self._wide._spans(text, (buf, _merge(candidates))))

    def _narrow_text(self, text: str) -> MaskResult:
        remembered = self._memo.get(id(text))
        if remembered is not None and remembered[0] is text:
            return remembered[1]
        return self._narrow.mask_text(text)  # a string the wide walk did not see


class _View:
    def __init__(self, mask: Callable[[str], MaskResult]) -> None:
        self._mask = mask

    def mask_text(self, text: str) -> MaskResult:
        return self._mask(text)


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
