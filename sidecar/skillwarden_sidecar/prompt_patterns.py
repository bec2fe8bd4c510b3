"""The namespace's prompt pattern table, matched in the sidecar in one RE2 set pass.

The operator's compiler gives every distinct `promptMatches` pattern an id and publishes the table
(with a fingerprint of its exact content) in the bundle. Matching the whole table here, over the
prompt the sidecar already holds, costs one linear DFA pass whatever the number of patterns; OPA
then only looks rules up by the ids that matched instead of running each rule's regex over a copy
of the prompt. Correctness never depends on this table being current: the Rego matches the prompt
itself whenever the fingerprint sent differs from its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import re2

from skillwarden_sidecar.masking.detectors import re2_options


@dataclass(frozen=True)
class PromptPatterns:
    fingerprint: str
    count: int
    _set: Any  # re2.Set, or None for an empty table (RE2 refuses to compile an empty set)

    def match(self, text: str) -> list[str]:
        """Ids (decimal strings, as the bundle's index keys) of the patterns found in `text`."""
        if self._set is None:
            return []
        found = self._set.Match(text)
        return [str(index) for index in sorted(found)] if found else []


# Before the first fetch: a fingerprint no bundle has, so OPA matches the prompt itself.
UNKNOWN = PromptPatterns(fingerprint="", count=0, _set=None)


def compile_table(document: Any) -> PromptPatterns:
    """The `prompt_patterns` document from OPA -> a matcher. Anything malformed raises
    ValueError; the caller keeps its previous table (OPA then matches, which is never wrong)."""
    if not isinstance(document, dict):
        raise ValueError("prompt pattern table is not an object")
    fingerprint, patterns = document.get("fingerprint"), document.get("patterns")
    if not isinstance(fingerprint, str) or not fingerprint or not isinstance(patterns, list) \
            or not all(isinstance(p, str) for p in patterns):
        raise ValueError("prompt pattern table lacks a fingerprint or a list of pattern strings")
    if not patterns:
        return PromptPatterns(fingerprint=fingerprint, count=0, _set=None)
    matcher = re2.Set.SearchSet(re2_options())
    for position, pattern in enumerate(patterns):
        try:
            index = matcher.Add(pattern)
        except re2.error as error:
            raise ValueError(f"prompt pattern {position} is not valid RE2: {error}") from None
        if index != position:  # ids are positions in the table; anything else would misname rules
            raise ValueError(f"prompt pattern {position} was given set index {index}")
    try:
        matcher.Compile()
    except re2.error as error:
        raise ValueError(f"prompt pattern table does not compile: {error}") from None
    return PromptPatterns(fingerprint=fingerprint, count=len(patterns), _set=matcher)
