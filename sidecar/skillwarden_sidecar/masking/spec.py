"""What to mask, how, and within which budgets: built from the policy decision's `masking` object."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from skillwarden_sidecar.masking.entities import BUILTIN_ENTITIES, OPERATORS

Direction = Literal["upstream", "client", "record"]
BUDGET_MARKER = "[MASKING_BUDGET_EXCEEDED]"
BUDGET_ENTITY = "MASKING_BUDGET_EXCEEDED"


class MaskingSpecError(ValueError):
    """The masking part of a decision is malformed; the message names the field."""


@dataclass(frozen=True)
class CustomPattern:
    name: str
    pattern: str


@dataclass(frozen=True)
class MaskingSpec:
    entities: frozenset[str]
    operators: dict[str, str] = field(default_factory=dict)  # entity -> redact | partial | hmac
    custom: list[CustomPattern] = field(default_factory=list)
    hmac_key: bytes = b""
    hmac_key_id: str = ""
    # Budgets: a text larger than max_text_bytes, or a scan using more than max_scan_seconds of CPU
    # time (the thread's, so load elsewhere on the machine does not count), is not
    # half-masked: with on_budget="mask" the whole text becomes BUDGET_MARKER (fail closed), with
    # on_budget="raise" the caller gets MaskingBudgetExceeded.
    max_text_bytes: int = 8 * 1024 * 1024
    max_scan_seconds: float = 2.0
    on_budget: Literal["mask", "raise"] = "mask"

    def __post_init__(self) -> None:
        known = BUILTIN_ENTITIES | {c.name for c in self.custom}
        unknown = sorted(self.entities - known)
        if unknown:
            raise MaskingSpecError(f"entities: unknown entity type(s) {', '.join(unknown)}")
        for entity, operator in self.operators.items():
            if operator not in OPERATORS:
                raise MaskingSpecError(
                    f"operators.{entity}: {operator!r} is not one of {', '.join(sorted(OPERATORS))}"
                )
        if any(op == "hmac" for e, op in self.operators.items() if e in self.entities) and not self.hmac_key:
            raise MaskingSpecError("operators: hmac needs a key (hmac_key is empty)")
        if self.on_budget not in ("mask", "raise"):
            raise MaskingSpecError(f"on_budget: {self.on_budget!r} is not mask or raise")

    @classmethod
    def from_decision(
        cls, masking: Mapping[str, Any] | None, direction: Direction, key: bytes, key_id: str
    ) -> MaskingSpec:
        """`direction`: upstream (what the provider sees), client (what the app gets back), or
        record (every built-in detector and every custom pattern: records are always masked)."""
        masking = masking or {}
        custom = [CustomPattern(str(c["name"]), str(c["pattern"])) for c in masking.get("custom", [])]
        if direction == "record":
            entities = BUILTIN_ENTITIES | {c.name for c in custom}
        elif direction in ("upstream", "client"):
            entities = frozenset(str(e) for e in masking.get(direction, []))
        else:
            raise MaskingSpecError(f"direction: {direction!r} is not upstream, client or record")
        operators = {str(k): str(v) for k, v in dict(masking.get("operators", {})).items()}
        return cls(entities, operators, custom, key, key_id)
